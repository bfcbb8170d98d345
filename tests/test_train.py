"""Tests for train.py on the tiny model and a small made-up dataset: every subcommand, the run
folder, determinism, resume after a kill, a non-finite loss, and two-process DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import naming
import pretrained
import runs as R
import train

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-bert")


def run(*argv):
    train.main([str(a) for a in argv])


def common(toy, out, *extra):
    return ["--data", toy, "--out", out, "--batch-size", 8, "--no-progress", "--log-every", 1, *extra]


def epochs(run_dir):
    return [r for r in map(json.loads, open(Path(run_dir) / "metrics.jsonl")) if "val_macro_f1" in r]


@pytest.fixture(scope="module")
def teacher(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "teacher"
    run("teacher", "--model", TINY, *common(toy, out, "--epochs", 4, "--lr", 3e-3))
    return out


def test_teacher_learns_and_writes_the_run_folder(teacher):
    files = sorted(p.name for p in teacher.iterdir())
    assert files == ["README.md", "config.json", "metrics.jsonl", "model.safetensors", "run.json", "summary.json",
                     "tokenizer_config.json", "vocab.txt"]
    assert (teacher.parent / "split.json").is_file()
    e = epochs(teacher)
    assert len(e) == 4 and e[-1]["train_loss"] < e[0]["train_loss"] * 0.6
    assert e[-1]["val_macro_f1"] == 1.0
    steps = [r for r in map(json.loads, open(teacher / "metrics.jsonl")) if "loss" in r]
    assert {"step", "loss", "lr", "sentences_per_s"} <= set(steps[0]) and len(steps) == 4 * 16
    info = R.read_info(teacher)
    split = json.loads((teacher.parent / "split.json").read_text())
    assert info["split_sha256"] == split["manifest_sha256"] and info["lr"] == 3e-3 and info["method"] == "teacher"
    summary = json.loads((teacher / "summary.json").read_text())
    assert summary["wall_seconds"] > 0 and summary["peak_memory_mb"] > 0 and summary["steps"] == 64


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = train.Settings(lr=1.0, warmup=0.1)
    lrs = [train.lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and max(lrs) == 1.0
    assert lrs[10] == pytest.approx(1.0) and lrs[99] == pytest.approx(1 / 90) and lrs == sorted(lrs[:10]) + lrs[10:]


def test_optimizer_skips_decay_on_biases_and_layernorm(teacher):

    net = pretrained.from_pretrained(str(teacher), verbose=False)
    decay, no_decay = train.make_optimizer(net, train.Settings(weight_decay=0.01, lr=1e-3), fused=False).param_groups
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01


@pytest.mark.parametrize("layers", ["odd", "2,3"])
def test_distill_student_learns_from_the_teacher(toy, teacher, layers):
    out = teacher.parent / f"student-{layers}"
    run("distill", "--teacher", teacher, "--layers", layers, *common(toy, out, "--epochs", 2, "--lr", 3e-3))
    info = R.read_info(out)
    assert info["teacher_layers"] == ([1, 3] if layers == "odd" else [2, 3])
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    steps = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "loss" in r]
    assert {"ce", "kl", "hidden"} <= set(steps[0])
    assert steps[-1]["loss"] < steps[0]["loss"]


def test_distill_bad_layer_list_is_a_clear_error(toy, teacher, capsys):
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", teacher, "--layers", "1,9", *common(toy, teacher.parent / "bad"))
    assert "layer 9 out of range; the teacher has layers 1..3" in str(e.value)


def test_distill_refuses_a_teacher_on_another_split(toy, teacher, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", teacher, "--split", tmp_path / "other.json", "--split-seed", 7, *common(toy, tmp_path / "student"))
    assert "the teacher was trained on another split" in str(e.value)


def test_lora_trains_only_the_adapter_and_exports_merged(toy, tmp_path):
    out = tmp_path / "lora"
    run("lora", "--model", TINY, "--export-merged", *common(toy, out, "--epochs", 3, "--lr", 1e-2, "--lora-r", 4))
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    adapter = load_file(out / "adapter_model.safetensors")
    assert all("lora_" in k or ".classifier." in k for k in adapter)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    e = epochs(out)
    assert e[-1]["train_loss"] < e[0]["train_loss"]
    merged = load_file(out / "merged" / "model.safetensors")
    assert not any("lora" in k for k in merged) and "bert.encoder.layer.0.attention.self.query.weight" in merged
    base = load_file(Path(TINY) / "model.safetensors")
    assert not torch.equal(merged["bert.encoder.layer.0.attention.self.query.weight"],
                           base["bert.encoder.layer.0.attention.self.query.weight"])
    assert torch.equal(merged["bert.encoder.layer.0.intermediate.dense.weight"], base["bert.encoder.layer.0.intermediate.dense.weight"])


def test_same_seed_same_metrics(toy, tmp_path):
    for name in ("a", "b"):
        run("teacher", "--model", TINY, *common(toy, tmp_path / name, "--epochs", 1, "--lr", 3e-3))
    strip = lambda d: [{k: v for k, v in r.items() if k not in ("sentences_per_s", "epoch_seconds", "wall_seconds")} for r in
                       map(json.loads, open(tmp_path / d / "metrics.jsonl"))]
    assert strip("a") == strip("b")
    assert load_file(tmp_path / "a" / "model.safetensors") .keys() == load_file(tmp_path / "b" / "model.safetensors").keys()
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def cli(*argv, env=None):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_resume_after_a_kill_mid_epoch_ends_with_the_same_weights(toy, tmp_path):
    args = ["teacher", "--model", TINY, *common(toy, "X", "--epochs", 2, "--lr", 3e-3, "--checkpoint-every", 3)]
    whole = cli(*[tmp_path / "whole" if a == "X" else a for a in args])
    assert whole.returncode == 0, whole.stderr
    # A real SIGKILL after step 20 of 32: epoch 2, batch 4; the last checkpoint is from step 18.
    broken = [tmp_path / "broken" if a == "X" else a for a in args]
    killed = cli(*broken, env={"NANOBERT_CRASH_AT_STEP": "20"})
    assert killed.returncode == -9
    assert (tmp_path / "broken" / "checkpoint.safetensors").is_file()
    resumed = cli(*broken, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed" in resumed.stdout and "at epoch 2, step 18" in resumed.stdout
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "broken" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "broken" / "checkpoint.safetensors").exists()  # removed once the run completed


def test_non_finite_loss_stops_with_the_last_good_checkpoint(toy, tmp_path, monkeypatch):
    real, calls = train.compute_loss, []

    def poisoned(*a, **kw):
        loss, parts = real(*a, **kw)
        calls.append(1)
        return (loss * float("nan"), parts) if len(calls) == 5 else (loss, parts)

    monkeypatch.setattr(train, "compute_loss", poisoned)
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, *common(toy, tmp_path / "nan", "--epochs", 1, "--checkpoint-every", 2))
    assert "non-finite loss (nan) at epoch 1, batch 5, step 4" in str(e.value)
    assert "checkpoint.safetensors" in str(e.value) and (tmp_path / "nan" / "checkpoint.safetensors").is_file()


def test_presets_and_flags(tmp_path, monkeypatch):
    args = train.build_parser().parse_args(["lora", "--preset", "quick", "--out", "x", "--lora-r", "4"])
    cfg = train.settings(args, "lora")
    assert cfg.lr == train.load_preset("quick")["lora"]["lr"] and cfg.lora_r == 4 and cfg.model.endswith("MiniLM-L6-v2")
    args = train.build_parser().parse_args(["lora", "--preset", "quick", "--out", "x", "--lr", "0.5"])
    assert train.settings(args, "lora").lr == 0.5
    # A preset's yes can be turned off by a flag; the precision flags name the same setting.
    parse = train.build_parser().parse_args
    weighted = tmp_path / "weighted.toml"
    weighted.write_text("class_weights = true\n")
    assert train.settings(parse(["teacher", "--preset", str(weighted), "--out", "x"]), "teacher").class_weights is True
    assert train.settings(parse(["teacher", "--preset", str(weighted), "--out", "x", "--no-class-weights"]),
                          "teacher").class_weights is False
    assert train.settings(parse(["teacher", "--preset", "robust", "--out", "x"]), "teacher").precision == "auto"
    assert train.settings(parse(["teacher", "--preset", "robust", "--out", "x", "--bf16"]), "teacher").precision == "bf16"
    assert train.settings(parse(["teacher", "--out", "x", "--precision", "fp32"]), "teacher").precision == "fp32"
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(train.TrainError, match="unknown setting 'learning_rate'"):
        train.settings(train.build_parser().parse_args(["teacher", "--preset", str(bad), "--out", "x"]), "teacher")
    with pytest.raises(train.TrainError, match="no such preset"):
        train.load_preset("nope")


def test_help_explains_every_flag():
    for command in ("teacher", "distill", "lora", "all"):
        text = subprocess.run([sys.executable, str(ROOT / "train.py"), command, "--help"], capture_output=True, text=True).stdout
        assert "--batch-size" in text and "--resume" in text
    assert "--layers" in subprocess.run([sys.executable, str(ROOT / "train.py"), "distill", "--help"],
                                        capture_output=True, text=True).stdout


def test_ddp_two_processes_match_one_process(toy, tmp_path):
    # fp32: the comparison is to 1e-5 (bf16 rounds differently for a batch of 8 and two of 4).
    flags = ["teacher", "--model", TINY, *common(toy, "X", "--epochs", 1, "--lr", 3e-3, "--dropout", 0, "--precision", "fp32")]
    one = cli(*[tmp_path / "one" if a == "X" else a for a in flags])
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).parent / "torchrun"
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"),
                          *[str(tmp_path / "two") if a == "X" else str(a) for a in flags]],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert R.read_info(tmp_path / "two")["world_size"] == 2
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    # Attention's key bias adds the same number to every score of a query, which softmax ignores:
    # its true gradient is zero, so it only ever gets rounding noise, which Adam (dividing by the
    # gradient's own size) turns into steps of size lr. Every other weight must agree.
    assert max((a[k] - b[k]).abs().max().item() for k in a if not k.endswith("key.bias")) < 1e-5
    log = lambda d: [r for r in map(json.loads, open(tmp_path / d / "metrics.jsonl")) if "loss" in r]
    for x, y in zip(log("one"), log("two"), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5) and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)
    assert any(not torch.equal(a[k], load_file(Path(TINY) / "model.safetensors")[k]) for k in a)  # it did train


def test_all_runs_every_arm_on_one_split_then_the_report(toy, tmp_path):
    runs = tmp_path / "runs"
    run("all", "--model", TINY, "--data", toy, "--runs", runs, "--batch-size", 8, "--epochs", 1, "--no-progress",
        "--teacher-lr", 3e-3, "--distill-lr", 3e-3, "--lora-lr", 1e-2)
    hashes = {R.read_info(runs / name)["split_sha256"] for name in ("teacher", "odd", "even", "lora")}
    assert hashes == {json.loads((runs / "split.json").read_text())["manifest_sha256"]}
    assert R.read_info(runs / "odd")["teacher_layers"] == [1, 3]
    assert R.read_info(runs / "even")["teacher_layers"] == [2]
    assert R.read_info(runs / "lora")["lr"] == 1e-2
    results = json.loads((runs / "report" / "results.json").read_text())
    assert len(results["runs"]) == 4
    # --resume keeps what is finished: nothing is trained again.
    before = (runs / "lora" / "adapter_model.safetensors").stat().st_mtime_ns
    run("all", "--model", TINY, "--data", toy, "--runs", runs, "--batch-size", 8, "--epochs", 1, "--no-progress", "--resume")
    assert (runs / "lora" / "adapter_model.safetensors").stat().st_mtime_ns == before


@pytest.mark.parametrize("flags, chosen", [(["--bf16"], "bf16"), (["--precision", "fp32"], "fp32")])
def test_precision_is_recorded_and_both_learn(toy, tmp_path, flags, chosen):
    run("teacher", "--model", TINY, *flags, *common(toy, tmp_path / "r", "--epochs", 4, "--lr", 3e-3))
    e, info = epochs(tmp_path / "r"), R.read_info(tmp_path / "r")
    assert info["precision_chosen"] == chosen and chosen in info["precision_reason"]
    assert e[-1]["train_loss"] < e[0]["train_loss"]
    # The weights on disk are fp32 either way (bf16 trains fp32 master weights).
    assert all(v.dtype == torch.float32 for v in load_file(tmp_path / "r" / "model.safetensors").values())


def test_an_unknown_precision_is_refused_before_anything_is_written(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, "--precision", "fp16", *common(toy, tmp_path / "r"))
    assert "--precision 'fp16': expected one of auto, fp32, bf16" in str(e.value)
    assert not (tmp_path / "r").exists()


def test_distill_inherits_the_teachers_data_and_split(toy, teacher):
    out = teacher.parent / "inherits"
    run("distill", "--teacher", teacher, "--out", out, "--no-progress", "--epochs", 1, "--batch-size", 16)
    info, t = R.read_info(out), R.read_info(teacher)
    assert info["data"] == toy and info["split_sha256"] == t["split_sha256"] and info["batch_size"] == 16


def test_lora_on_a_base_without_pooler_keeps_the_pooler_in_the_adapter(toy, tmp_path):
    # bge-small-en ships no pooler. A LoRA adapter that left the freshly drawn pooler out would
    # load as a different model every time (this happened: validation macro-F1 0.94, test 0.57).
    import model as M

    base = tmp_path / "no-pooler"
    base.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (base / name).write_bytes((Path(TINY) / name).read_bytes())
    weights = {k: v for k, v in load_file(Path(TINY) / "model.safetensors").items() if not k.startswith(("bert.pooler.", "classifier."))}
    from safetensors.torch import save_file
    save_file(weights, base / "model.safetensors")
    out = tmp_path / "lora"
    run("lora", "--model", base, *common(toy, out, "--epochs", 1, "--lr", 1e-2))
    assert any(".pooler." in k for k in load_file(out / "adapter_model.safetensors"))
    ids = torch.randint(5, 900, (2, 6))
    logits = []
    for seed in (1, 2):  # a different random state before each load must not matter
        torch.manual_seed(seed)
        net, _, _ = R.load_run(out)
        logits.append(net(ids).logits)
    assert torch.equal(logits[0], logits[1])
    assert M.count_parameters(net)[0] > 0


def test_distill_auto_ranks_the_teachers_layers_on_validation(toy, teacher, capsys):
    out = teacher.parent / "auto"
    run("distill", "--teacher", teacher, "--layers", "auto:2", "--importance-texts", 10,
        *common(toy, out, "--epochs", 1, "--lr", 3e-3))
    info = R.read_info(out)
    scores, ranking = info["layer_importance"], info["layer_ranking"]
    assert len(scores) == 3 and sorted(ranking) == [1, 2, 3] and info["importance_n"] == 10
    assert [scores[i - 1] for i in ranking] == sorted(scores, reverse=True)
    assert info["teacher_layers"] == sorted(ranking[:2]) and info["importance_seconds"] >= 0
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert "most important first" in capsys.readouterr().out


def test_lora_on_a_student_trains_only_the_adapters(toy, teacher, capsys):

    student = teacher.parent / "student-odd"
    if not student.exists():
        run("distill", "--teacher", teacher, "--layers", "odd", *common(toy, student, "--epochs", 1, "--lr", 3e-3))
    out = teacher.parent / "lora-on-student"
    run("lora", "--base", student, "--out", out, "--no-progress", "--epochs", 2, "--lr", 1e-2, "--batch-size", 8)
    info, s = R.read_info(out), R.read_info(student)
    assert info["split_sha256"] == s["split_sha256"] and info["data"] == toy  # the student's data and split
    assert info["base_model"] == str(student.resolve()) and info["lora_trainable"] == ""
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert info["params_trainable"] == sum(v.numel() for v in adapter.values())
    # Everything but the adapters is the student as it was; the adapters did learn.
    net, _, _ = R.load_run(out, merge=False)
    base = load_file(student / "model.safetensors")
    for k, v in net.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, base[k]), k
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if ".lora_B." in k)
    assert naming.method_label(info) == "lora on odd"


def test_lora_base_errors(toy, teacher, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("lora", "--base", teacher, "--model", TINY, "--out", tmp_path / "x", "--no-progress")
    assert "--base and --model both name the model" in str(e.value)
    lora_run = tmp_path / "lora"
    run("lora", "--model", TINY, *common(toy, lora_run, "--epochs", 1, "--split", teacher.parent / "split.json"))
    with pytest.raises(SystemExit) as e:
        run("lora", "--base", lora_run, "--out", tmp_path / "y", "--no-progress")
    assert "a LoRA run; expected a run with a full model" in str(e.value)


def test_all_extended_adds_layer_choices_lora_on_the_best_student_and_int8(toy, tmp_path):
    runs = tmp_path / "runs"
    run("all", "--model", TINY, "--data", toy, "--runs", runs, "--batch-size", 8, "--epochs", 1, "--no-progress",
        "--teacher-lr", 3e-3, "--distill-lr", 3e-3, "--lora-lr", 1e-2, "--extended", "--importance-texts", 8)
    layers = {n: R.read_info(runs / n)["teacher_layers"] for n in ("bottom", "top", "auto")}
    assert layers["bottom"] == [1] and layers["top"] == [3] and len(layers["auto"]) == 1
    students = ("odd", "even", "auto", "bottom", "top")
    val = {n: json.loads((runs / n / "summary.json").read_text())["best_val_macro_f1"] for n in students}
    best = max(students, key=val.get)
    assert R.read_info(runs / f"lora-{best}")["base"] == str(runs / best)
    results = json.loads((runs / "report" / "results.json").read_text())
    assert [r["name"] for r in results["runs"]] == [
        "teacher", "odd", "even", "auto", "bottom", "top", "lora", f"lora-{best}",
        "teacher-int8", f"{best}-int8", f"lora-{best}-int8"]
    assert (runs / "report" / "efficiency.png").is_file()


def test_an_int8_export_or_a_bad_importance_count_is_refused(toy, teacher, tmp_path):

    R.export_int8(teacher, tmp_path / "teacher-int8")
    for argv in (["distill", "--teacher", tmp_path / "teacher-int8"], ["lora", "--base", tmp_path / "teacher-int8"]):
        with pytest.raises(SystemExit) as e:
            run(*argv, "--out", tmp_path / "x", "--no-progress")
        assert "an int8 export (eval.py export); expected a run with fp32 weights" in str(e.value)
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", teacher, "--layers", "auto", "--importance-texts", 0, "--out", tmp_path / "y", "--no-progress")
    assert "--importance-texts 0: expected at least 1 validation text" in str(e.value)
    with pytest.raises(SystemExit) as e:  # refused before any measuring
        run("distill", "--teacher", teacher, "--layers", "auto:9", "--out", tmp_path / "z", "--no-progress")
    assert "auto:K with K in 1..3" in str(e.value)


# -----------------------------------------------------------------------------
# A finished run is never lost; bad settings are refused before anything is touched


def snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def test_a_finished_run_is_kept_unless_overwrite(toy, teacher, tmp_path):
    student = tmp_path / "odd"
    run("distill", "--teacher", teacher, "--layers", "odd", *common(toy, student, "--epochs", 1))
    before = snapshot(student)
    for extra, message in ((["--layers", "13"], "holds a finished run; expected a new folder, or --overwrite"),
                           (["--layers", "13", "--overwrite"], "layer 13 out of range"),
                           (["--resume"], "the run is finished (summary.json); nothing to resume")):
        with pytest.raises(SystemExit) as e:
            run("distill", "--teacher", teacher, *common(toy, student, *extra))
        assert message in str(e.value)
        assert snapshot(student) == before  # byte for byte
    run("distill", "--teacher", teacher, "--layers", "even", *common(toy, student, "--epochs", 1, "--overwrite"))
    assert R.read_info(student)["teacher_layers"] == [2] and snapshot(student) != before


def test_a_teacher_over_a_lora_run_leaves_no_adapter_behind(toy, tmp_path):
    out = tmp_path / "x"
    run("lora", "--model", TINY, *common(toy, out, "--epochs", 1, "--lr", 1e-2))
    run("teacher", "--model", TINY, *common(toy, out, "--epochs", 1, "--overwrite"))
    assert not (out / "adapter_config.json").exists() and R.load_run(out)[2]["method"] == "teacher"


@pytest.mark.parametrize("flags, message", [
    (["--max-train", 0], "--max-train 0: expected a number above 0"),
    (["--max-train", -5], "--max-train -5: expected a number above 0"),
    (["--accum", 0], "--accum 0: expected a number above 0"),
    (["--lr", 0], "--lr 0.0: expected a number above 0"),
    (["--threads", -1], "--threads -1: expected a number above 0"),
    (["--epochs", 0], "--epochs 0: expected a number above 0"),
    (["--warmup", 2], "--warmup 2.0: expected a number in [0, 1]"),
    (["--max-length", 10000], "--max-length 10000: the model has 128 positions; expected at most 128"),
    (["--label-map", "{bad"], "--label-map '{bad': not valid JSON"),
])
def test_bad_settings_are_one_line_errors_and_leave_nothing(toy, tmp_path, flags, message):
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, *common(toy, tmp_path / "run", *flags))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_missing_teacher_is_named_as_such(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", tmp_path / "nowhere", *common(toy, tmp_path / "s"))
    assert f"--teacher {tmp_path / 'nowhere'}: {tmp_path / 'nowhere'}: not a run folder" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_device_that_is_not_there(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, *common(toy, tmp_path / "run", "--device", "cuda"))
    assert "--device: device 'cuda': no CUDA GPU on this machine" in str(e.value)


def test_all_refuses_layers_it_would_ignore(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("all", "--model", TINY, "--data", toy, "--runs", tmp_path, "--layers", "1,2")
    assert "--layers 1,2: `all` trains the odd and even students" in str(e.value)


def test_resume_keeps_honest_books(toy, tmp_path):
    args = ["teacher", "--model", TINY, *common(toy, tmp_path / "r", "--epochs", 2, "--lr", 3e-3, "--checkpoint-every", 3)]
    killed = cli(*args, env={"NANOBERT_CRASH_AT_STEP": "20"})
    assert killed.returncode == -9
    before = max(r["wall_seconds"] for r in R.read_log(tmp_path / "r")[0])
    assert cli(*args, "--resume").returncode == 0
    steps, epochs = R.read_log(tmp_path / "r")
    assert [r["step"] for r in steps] == list(range(1, 33)) and [r["epoch"] for r in epochs] == [1, 2]  # each once
    assert R.read_summary(tmp_path / "r")["wall_seconds"] > before  # the killed process's time counts
    assert not list((tmp_path / "r").glob(".*"))  # nothing hidden left behind


# -----------------------------------------------------------------------------
# Two questions, one model: toxic and hate as two sigmoids, unannotated labels masked


def test_two_label_teacher_student_and_lora(toy2, tmp_path):
    teacher = tmp_path / "teacher"
    run("teacher", "--model", TINY, "--label-column", "toxic,hate", *common(toy2, teacher, "--epochs", 4, "--lr", 3e-3))
    config = json.loads((teacher / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"] == {"0": "toxic", "1": "hate"}
    info = R.read_info(teacher)
    assert set(info["thresholds"]) == {"toxic", "hate"} and all(0 < v < 1 for v in info["thresholds"].values())
    assert info["test"]["labels"]["hate"]["macro_f1"] > 0.8  # "vermin" gives it away
    e = epochs(teacher)
    assert e[-1]["train_loss"] < e[0]["train_loss"] * 0.6 and e[-1]["val_macro_f1"] > 0.9
    student = tmp_path / "odd"
    run("distill", "--teacher", teacher, "--layers", "odd", *common(toy2, student, "--epochs", 2, "--lr", 3e-3))
    assert json.loads((student / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert {"ce", "kl", "hidden"} <= set(R.read_log(student)[0][0])
    lora_run = tmp_path / "lora"
    run("lora", "--model", TINY, "--label-column", "toxic,hate", "--split", tmp_path / "split.json",
        *common(toy2, lora_run, "--epochs", 3, "--lr", 1e-2))
    net, _, lora_info = R.load_run(lora_run)
    assert net.config.multilabel and set(lora_info["thresholds"]) == {"toxic", "hate"}


def test_a_failed_or_killed_overwrite_leaves_the_old_run_whole(toy, tmp_path, monkeypatch):
    out = tmp_path / "t"
    args = ["teacher", "--model", TINY, *common(toy, out, "--epochs", 2, "--lr", 3e-3, "--checkpoint-every", 3)]
    run(*args)
    before = snapshot(out)
    # Killed in the middle of the replacement: the old run is as it was, the new one waits beside it.
    killed = cli(*args, "--overwrite", "--seed", 1, env={"NANOBERT_CRASH_AT_STEP": "20"})
    assert killed.returncode == -9 and snapshot(out) == before
    assert (tmp_path / ".t.new" / "checkpoint.safetensors").is_file()
    # A failing replacement (a non-finite loss before any checkpoint) leaves the old run and nothing else.
    real = train.compute_loss
    monkeypatch.setattr(train, "compute_loss", lambda *a, **kw: (real(*a, **kw)[0] * float("nan"), {}))
    with pytest.raises(SystemExit):
        run(*args, "--overwrite", "--seed", 2)
    monkeypatch.setattr(train, "compute_loss", real)
    assert snapshot(out) == before and not (tmp_path / ".t.new").exists()
    # The interrupted replacement of seed 1 resumes and only then takes the old run's place.
    killed = cli(*args, "--overwrite", "--seed", 1, env={"NANOBERT_CRASH_AT_STEP": "20"})
    assert snapshot(out) == before
    resumed = cli(*args, "--seed", 1, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert R.read_info(out)["seed"] == 1 and snapshot(out) != before and R.read_info(out)["run_dir"] == str(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_augment_adds_template_texts_to_the_training_part_only(toy, toy2, tmp_path):
    import augment

    out = tmp_path / "aug"
    run("teacher", "--model", TINY, "--label-column", "toxic,hate", "--augment", ROOT / "suites" / "augment.toml",
        *common(toy2, out, "--epochs", 1, "--max-train", 40))
    info = R.read_info(out)
    added = len(augment.load_augment(ROOT / "suites" / "augment.toml", seed=0))
    assert info["train_size"] == 40 + added and info["val_size"] == 24  # validation and test untouched
    with pytest.raises(SystemExit) as e:  # one class per text: no toxic / hate labels to add to
        run("teacher", "--model", TINY, "--augment", ROOT / "suites" / "augment.toml", *common(toy, tmp_path / "single" / "x"))
    assert "--augment" in str(e.value) and "expected a two-question dataset" in str(e.value)
