"""
`train.py all`: every arm of the comparison on one split, then the report.

    teacher -> odd student -> even student -> LoRA -> report
    --extended: ... + auto, bottom and top students, LoRA on the best student (by validation
                macro-F1, chosen without looking at the test set), int8 exports of the teacher,
                that student and its LoRA

The runs go to --runs (default runs/<preset or data>), each in a folder named for its arm, with one
split manifest beside them that every run reuses. --resume keeps the finished runs and resumes the
interrupted one. Each run is trained by the `train` function it is given (train.train): this file
drives the comparison; it does not know how a model is trained.
"""

import dataclasses
from pathlib import Path

import card
import export
import files
import report
import runs
import settings
from settings import TrainError


def run_all(args, train):
    """Every arm of the comparison that args ask for, trained by train(settings, run_dir), then the report."""
    if args.layers is not None:
        raise TrainError(f"--layers {args.layers}: `all` trains the odd and even students (and with --extended auto, "
                         "bottom and top); expected no --layers, or `train.py distill --layers` for one student")
    runs_dir = Path(args.runs or Path("runs") / (Path(args.preset).stem if args.preset else Path(str(args.data or "davidson")).stem))
    try:
        files.check_writable(runs_dir, "--runs")
    except ValueError as e:
        raise TrainError(str(e)) from None
    plan = [("teacher", "teacher", {}), ("odd", "distill", {"layers": "odd"}), ("even", "distill", {"layers": "even"}),
            ("lora", "lora", {})]
    if args.extended:
        plan[3:3] = [(name, "distill", {"layers": name}) for name in ("auto", "bottom", "top")]
    summaries = {}
    for name, method, extra in plan:
        summaries[name] = run_one(args, runs_dir, name, method, extra, train)
    exports = []
    if args.extended:
        # LoRA on the student that did best on validation: chosen without looking at the test set.
        students = [n for n, m, _ in plan if m == "distill"]
        best = max(students, key=lambda n: summaries[n]["best_val_macro_f1"])
        print(f"best student on validation: {best}")
        name = f"lora-{best}"
        extra = {"base": str(runs_dir / best), "model": str(runs_dir / best)}
        if args.lora_trainable is None:  # the student's pooler and head are trained already: adapters only
            extra["lora_trainable"] = ""
        summaries[name] = run_one(args, runs_dir, name, "lora", extra, train)
        plan.append((name, "lora", {}))
        for source in ("teacher", best, name):
            print(f"== {source}-int8 ==")
            exports.append(export.export_int8(runs_dir / source, runs_dir / f"{source}-int8"))
            card.write_model_card(exports[-1])
    report.report([runs_dir / name for name, _, _ in plan] + exports, runs_dir / "report")
    for name, s in summaries.items():
        print(f"{name:14s} {s['wall_seconds']:7.0f}s  best validation macro-F1 {s['best_val_macro_f1']:.4f}")


def run_one(args, runs_dir, name, method, extra, train):
    """One run of `all` into runs_dir/name, or its summary if --resume finds it finished."""
    s = dataclasses.replace(settings.resolve(args, method), **extra)
    s.teacher = str(runs_dir / "teacher")
    if getattr(args, f"{method}_lr") is not None:
        s.lr = getattr(args, f"{method}_lr")
    s.split = s.split or str(runs_dir / "split.json")
    if s.resume:  # carry on where `all` stopped: finished runs stay, an interrupted one resumes
        if runs.is_finished(runs_dir / name):
            print(f"== {name}: done before, kept ==")
            return runs.read_summary(runs_dir / name)
        s.resume = (runs_dir / name / runs.CHECKPOINT_FILE).exists()
        s.overwrite = not s.resume and (runs_dir / name).exists()  # stopped before its first checkpoint: start it again
    print(f"== {name} ==")
    return train(s, runs_dir / name)
