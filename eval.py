"""
The command line for trained runs: the comparison report, labelling texts or files, int8 export.

    python eval.py runs/quick/teacher runs/quick/odd runs/quick/even runs/quick/lora   # -> runs/quick/report/
    python eval.py report RUN_DIR [RUN_DIR ...] --out DIR                               # the same, spelled out
    python eval.py predict --run runs/quick/lora "you are awesome"                      # or texts on stdin
    python eval.py predict --run runs/quick/lora --input comments.csv --text-column body --output labelled.csv
    python eval.py export runs/quick/odd                                                # -> runs/quick/odd-int8/
    python eval.py behaviour runs/quick/teacher runs/quick/odd                          # the functional test suite
    python eval.py explain --run runs/quick/teacher "you are an idiot"                  # which words made the label
    python eval.py serve --run runs/quick/teacher --port 8000                           # a local HTTP service

The work is done elsewhere: report.py (the comparison report), measure.py (a run on its test split,
the int8 export measured), beyond.py (the behaviour suite and each dataset's test split), card.py
(the model card), classifier.py (predicting), labelling.py (labelling a file), explain.py (word
attributions), serve.py (the HTTP service), runs.py (the run folder), export.py (the int8 export),
behaviour.py (the functional test suite). This file only reads flags.
A run that has not finished is refused unless --allow-unfinished (runs.check_finished).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

import behaviour
import beyond
import card
import classifier
import explain
import export
import files
import labelling
import measure
import precision
import report
import runs
import serve
import tables

# -----------------------------------------------------------------------------
# predict: texts from the command line, stdin, or a CSV / JSONL file (labelling.py)


def given_texts(args, verb):
    """The texts of the arguments, else one per stdin line, blank ones left out (and counted in a note)."""
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    kept = [t for t in texts if not classifier.is_blank(t)]
    if not kept:
        raise runs.RunError(f"empty text to {verb}; expected at least one non-blank text (argument or stdin line)")
    if len(kept) < len(texts):
        print(f"note: skipped {len(texts) - len(kept)} blank text(s)", file=sys.stderr)
    return kept


def cmd_predict(args):
    if args.input and args.texts:
        raise ValueError("texts given both as arguments and with --input; expected one of them")
    if args.input and not args.output:
        raise ValueError("--input needs --output FILE (.csv or .jsonl) for the labelled rows")
    clf = classifier.Classifier.from_run(args.run, device=args.device, precision=args.precision, fast=args.fast,
                                         allow_unfinished=args.allow_unfinished)
    if clf.unfinished:
        print(f"note: {args.run}: {clf.unfinished}; its labels are those of the best epoch saved so far", file=sys.stderr)
    if args.input:
        return labelling.label_file(clf, args.input, args.output, text_column=args.text_column, progress=not args.no_progress)
    texts = given_texts(args, "predict")
    for note in clf.notes(texts):
        print(f"note: {note}", file=sys.stderr)
    for result in clf.predict(texts):
        if args.json:
            print(json.dumps({"text": result["text"], "label": result["label"], "probability": round(result["score"], 6),
                              "probabilities": {k: round(v, 6) for k, v in result["probabilities"].items()},
                              **({"decisions": result["decisions"]} if "decisions" in result else {}),
                              **({"note": result["note"]} if "note" in result else {})}, ensure_ascii=False))
        elif "decisions" in result:  # two questions: each label's probability, and its decision
            scores = " ".join(f"{k}={v:.3f}{'*' if result['decisions'][k] else ''}" for k, v in result["probabilities"].items())
            print(f"{result['label']}\t{scores}\t{result['text']}")
        else:
            print(f"{result['label']}\t{result['score']:.3f}\t{result['text']}")


# -----------------------------------------------------------------------------
# report and export


def check_positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} {value}: expected a number above 0")


def cmd_report(args):
    check_positive(args, "batch_size", "resamples", "latency_sentences")
    if args.out:
        files.check_writable(args.out, "--out")
    set_threads(args.threads)
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "report"
    report.report(args.runs, out, device=args.device, precision=args.precision, fast=args.fast, batch_size=args.batch_size,
                  latency_n=args.latency_sentences, resamples=args.resamples, seed=args.seed, draw=not args.no_plots,
                  beyond=not args.test_split_only, allow_unfinished=args.allow_unfinished)


def write_card(folder, info, summary):
    """The export's model card, written into its staged folder under the name of the folder it goes to."""
    card.write_model_card(folder, summary, name=info.dir.name, info=info)


def cmd_export(args):
    """The int8 export (export.export_int8): built beside --out, swapped in when complete, then measured."""
    check_positive(args, "latency_sentences")
    if args.out:
        files.check_writable(args.out, "--out")
    set_threads(args.threads)
    runs.read_info(args.run)  # a folder that is not a run is named first
    out = export.export_target(args.run, args.out)
    before = "was left as it was" if out.exists() else "was not written"
    try:
        export.export_int8(args.run, out, write_card=write_card)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"nothing was exported; {out} {before}") from None
    except OSError as e:  # a full disk (safetensors' own error included: files.write_error)
        raise runs.RunError(f"{files.os_error_message(e)}; nothing was exported; {out} {before}") from None
    print(f"wrote {out}: int8 linear layers, {tables.fmt_bytes(runs.weights_file(out).stat().st_size)} "
          f"(fp32 {tables.fmt_bytes(runs.weights_file(args.run).stat().st_size)} for what the run trained)")
    if not args.no_measure:
        try:
            measure.measure_export(args.run, out, latency_n=args.latency_sentences)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"the int8 export is complete in {out}, without its measurement (export.md)") from None


# -----------------------------------------------------------------------------
# behaviour: the functional test suite (behaviour.py, suites/behaviour.toml)


def cmd_beyond(args):
    if args.out:
        files.check_writable(args.out, "--out")
    out = args.out or Path(args.runs[0]).parent / "beyond"
    beyond.beyond(args.runs, out, device=args.device, precision=args.precision, fast=args.fast,
                  allow_unfinished=args.allow_unfinished)


def set_threads(n):
    if n is not None:
        if n < 1:
            raise ValueError(f"--threads {n}: expected a number above 0")
        torch.set_num_threads(n)


def cmd_behaviour(args):
    if args.out:
        files.check_writable(args.out, "--out")
    cases = behaviour.load_suite(args.suite)
    lines = [f"# Behaviour suite: {args.suite}", "", f"{len(cases)} cases in {len(behaviour.functionalities(cases))} "
             "functionalities.", ""]
    results = {}
    for run_dir in args.runs:
        clf = classifier.Classifier.from_run(run_dir, device=args.device, precision=args.precision, fast=args.fast,
                                             allow_unfinished=args.allow_unfinished)
        result = behaviour.run_suite(cases, beyond.suite_predict(clf), beyond.suite_thresholds(clf))
        results[str(run_dir)] = {**result, **({"note": clf.unfinished} if clf.unfinished else {})}
        summary = "; ".join(f"{label}: mean pass rate {s['mean_pass_rate']:.3f}, lowest {s['min_pass_rate']:.3f} "
                            f"({s['min_functionality']})" for label, s in result["summary"].items())
        name = f"{run_dir} ({clf.unfinished})" if clf.unfinished else str(run_dir)
        print(f"{name}: {summary}")
        lines += [f"## {name}", "", behaviour.format_markdown(result), ""]
    if args.out:
        files.write_text(Path(args.out) / "behaviour.md", "\n".join(lines) + "\n")
        files.write_json(Path(args.out) / "behaviour.json", tables.json_safe(results))
        print(f"wrote {Path(args.out) / 'behaviour.md'} and behaviour.json")


# -----------------------------------------------------------------------------
# explain: which words made the label (explain.py); serve: a local HTTP service (serve.py)


def bar(score, largest, width=20):
    return "█" * round(width * abs(score) / largest) if largest > 0 else ""


def cmd_explain(args):
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: expected a number of at least 1")
    clf = classifier.Classifier.from_run(args.run, device=args.device, precision=args.precision, fast=args.fast)
    texts = given_texts(args, "explain")
    results = clf.explain(texts, steps=args.steps, baseline=args.baseline)
    if results[0]["note"]:
        print(f"note: {results[0]['note']}", file=sys.stderr)
    for result in results:
        if args.json:
            print(json.dumps(tables.json_safe(result), ensure_ascii=False))
            continue
        scores = " ".join(f"{k}={v:.3f}{'*' if result.get('decisions', {}).get(k) else ''}" for k, v in result["probabilities"].items())
        print(f"{result['label']} {result['score']:.3f}\t{scores}\t{result['text']}")
        # One class per text: why that class. Two questions: each label's answer.
        shown = clf.labels if clf.multilabel else [result["label"]]
        for label in shown:
            r = result["attributions"][label]
            print(f"  {label}: logit {r['logit']:+.3f}, {r['change']:+.3f} from the baseline's {r['baseline_logit']:+.3f}; "
                  f"the words add up to {r['attributed']:+.3f}")
            largest = max((abs(w["score"]) for w in r["words"]), default=0.0)
            width = max((len(w["text"]) for w in r["words"]), default=0)
            for w in r["words"]:
                print(f"    {w['text']:<{width}}  {w['score']:+.3f}  {bar(w['score'], largest)}")
        if result["cut"]:
            print(f"  (cut to {clf.max_length} tokens: the words after were not read)")
        if result["steps"] != args.steps:
            print(f"  ({result['steps']} steps: {args.steps} did not add up to the change within 1%)")
    print(f"integrated gradients from a {args.baseline} baseline, {args.steps} steps or more until the words add up "
          f"(docs/explain.md)", file=sys.stderr)


def cmd_serve(args):
    serve.main(args)


# -----------------------------------------------------------------------------
# The command line

COMMANDS = ("report", "predict", "export", "behaviour", "beyond", "explain", "serve")
# What Ctrl-C leaves, said in one line (a command that knows more says it: predict --input, export).
INTERRUPTED = {"report": "the report was not finished", "predict": "only the texts printed above (if any) were labelled",
               "export": "nothing was exported", "behaviour": "the behaviour suite was not finished",
               "beyond": "the scores beyond the test split were not finished",
               "explain": "nothing more was explained", "serve": "the service stopped"}


def on_off(value):
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected on or off")
    return value == "on"


def device_flags(p):
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default auto)")
    p.add_argument("--precision", default="auto", choices=precision.PRECISIONS,
                   help="what the model computes in (default auto: bf16 where a short probe measures it faster here, else fp32)")
    p.add_argument("--fast", default=True, type=on_off, metavar="{on,off}", help="on: the fast path (fast.py); off: "
                   "model.py as written, in fp32 (default on)")
    p.add_argument("--allow-unfinished", action="store_true",
                   help="use a run that has not finished (no summary.json: interrupted, or still training) with the best "
                        "epoch it saved; everything printed or written then says 'unfinished, epoch k of n'")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="evaluate runs on their shared test split; tables, plots, statistics (the default)")
    p.add_argument("runs", nargs="+", help="run folders written by train.py, all on one split")
    p.add_argument("--out", help="report folder (default: <parent of the first run>/report)")
    device_flags(p)
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice); the speed columns depend on it")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the throughput pass (default 64)")
    p.add_argument("--latency-sentences", type=int, default=50, help="test sentences timed one by one (default 50)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--test-split-only", action="store_true",
                   help="leave out the behaviour suite and the hate scores on each dataset's test split")
    p = sub.add_parser("predict", help="label texts with a trained run (arguments, stdin one per line, or --input FILE)")
    p.add_argument("--run", required=True, help="run folder written by train.py")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.add_argument("--input", help="a .csv or .jsonl file to label, streamed row by row (any length). Checked first: "
                   "each column once in the header, as many fields in every row as in the header")
    p.add_argument("--text-column", default="text", help="--input: the column holding the texts (default text)")
    p.add_argument("--output", help="--input: the labelled file to write (.csv or .jsonl): every input row in order, "
                   "plus label, score and p_<label> columns; where the input has such a column already they are named "
                   "predicted_label, ... (no input column is ever overwritten). Until the last row is done they go to "
                   "NAME.partial.csv beside --output NAME.csv (or .jsonl), which Ctrl-C or an error leaves holding the "
                   "whole rows done so far")
    device_flags(p)
    p.add_argument("--no-progress", action="store_true", help="--input: no progress bar")
    p.add_argument("texts", nargs="*", help="texts to classify; none: read stdin")
    p = sub.add_parser("export", help="an int8 copy of a run for CPU inference, measured beside the fp32 model")
    p.add_argument("run", help="run folder written by train.py (a LoRA run is merged first)")
    p.add_argument("--out", help="folder for the int8 model (default: <run>-int8 beside the run)")
    p.add_argument("--no-measure", action="store_true", help="write the model only; no test-split comparison")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice); the speed depends on it")
    p.add_argument("--latency-sentences", type=int, default=50, help="test sentences timed one by one (default 50)")
    p = sub.add_parser("behaviour", help="the functional test suite (hate vs swearing, identity terms, spelling, ...)")
    p.add_argument("runs", nargs="+", help="run folders written by train.py")
    p.add_argument("--suite", default=str(behaviour.DEFAULT_SUITE), help="suite file (default suites/behaviour.toml)")
    p.add_argument("--out", help="folder for behaviour.md and behaviour.json (default: print only)")
    device_flags(p)
    p = sub.add_parser("beyond", help="runs of any splits on the behaviour suite and on each dataset's test split, "
                       "with paired differences where they share test texts")
    p.add_argument("runs", nargs="+", help="run folders written by train.py")
    p.add_argument("--out", help="folder for beyond.md and beyond.json (default: beyond/ beside the first run)")
    device_flags(p)
    p = sub.add_parser("explain", help="which words made a run's label: integrated gradients per word (docs/explain.md)")
    p.add_argument("--run", required=True, help="run folder written by train.py (an int8 run: through its fp32 source)")
    p.add_argument("--json", action="store_true", help="one JSON object per text: every label, word and word piece")
    p.add_argument("--steps", type=int, default=explain.STEPS, help=f"points of the integral, doubled where the words do not add up to the change within 1%% "
                   f"(default {explain.STEPS})")
    p.add_argument("--baseline", default="pad", choices=explain.BASELINES, help="what the text is compared with: "
                   "every word a [PAD] (default) or zero embeddings")
    device_flags(p)
    p.add_argument("texts", nargs="*", help="texts to explain; none: read stdin")
    serve.add_flags(sub.add_parser("serve", help="a local HTTP service: POST /v1/classify, GET /health (docs/serve.md)"))
    device_flags(sub.choices["serve"])
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "report")  # `python eval.py RUN_DIR ...` is the report
    args = build_parser().parse_args(argv)
    precision.keep_freed_memory()  # each batch's activations are reused, not handed back and faulted in again
    try:
        {"predict": cmd_predict, "report": cmd_report, "export": cmd_export, "behaviour": cmd_behaviour,
         "beyond": cmd_beyond, "explain": cmd_explain, "serve": cmd_serve}[args.command](args)
    except KeyboardInterrupt as e:  # Ctrl-C: one line that says what was left
        sys.exit(f"error: interrupted; {str(e) or INTERRUPTED[args.command]}")
    except (ValueError, FileNotFoundError) as e:  # RunError and files.DataError are ValueErrors
        sys.exit(f"error: {e}")
    except OSError as e:  # read-only folder, a path under a file, a full disk
        sys.exit(f"error: {files.os_error_message(e)}")


if __name__ == "__main__":
    main()
