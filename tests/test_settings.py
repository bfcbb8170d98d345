"""Tests for settings.py: the groups and their docs, presets and flags, the help built from them, the
checks that refuse a setting before anything is loaded or written, and what a run inherits from the
run it builds on."""

import dataclasses
import re
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY, common, run

import runs as R
import settings


def test_presets_and_flags(tmp_path, monkeypatch):
    args = settings.build_parser().parse_args(["lora", "--preset", "quick", "--out", "x", "--lora-r", "4"])
    cfg = settings.resolve(args, "lora")
    assert cfg.lr == settings.load_preset("quick")["lora"]["lr"] and cfg.lora_r == 4 and cfg.model.endswith("MiniLM-L6-v2")
    args = settings.build_parser().parse_args(["lora", "--preset", "quick", "--out", "x", "--lr", "0.5"])
    assert settings.resolve(args, "lora").lr == 0.5
    # A preset's yes can be turned off by a flag; the precision flags name the same setting.
    parse = settings.build_parser().parse_args
    weighted = tmp_path / "weighted.toml"
    weighted.write_text("class_weights = true\n")
    assert settings.resolve(parse(["teacher", "--preset", str(weighted), "--out", "x"]), "teacher").class_weights is True
    assert settings.resolve(parse(["teacher", "--preset", str(weighted), "--out", "x", "--no-class-weights"]),
                          "teacher").class_weights is False
    assert settings.resolve(parse(["teacher", "--preset", "robust", "--out", "x"]), "teacher").precision == "auto"
    assert settings.resolve(parse(["teacher", "--preset", "robust", "--out", "x", "--bf16"]), "teacher").precision == "bf16"
    assert settings.resolve(parse(["teacher", "--out", "x", "--precision", "fp32"]), "teacher").precision == "fp32"
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 1\n")
    with pytest.raises(settings.TrainError, match="unknown setting 'learning_rate'"):
        settings.resolve(settings.build_parser().parse_args(["teacher", "--preset", str(bad), "--out", "x"]), "teacher")
    with pytest.raises(settings.TrainError, match="no such preset"):
        settings.load_preset("nope")


def test_help_explains_every_flag():
    for command in ("teacher", "distill", "lora", "pretrain", "all"):
        text = subprocess.run([sys.executable, str(ROOT / "train.py"), command, "--help"], capture_output=True, text=True).stdout
        assert "--batch-size" in text and "--resume" in text
    assert "--layers" in subprocess.run([sys.executable, str(ROOT / "train.py"), "distill", "--help"],
                                        capture_output=True, text=True).stdout
    text = subprocess.run([sys.executable, str(ROOT / "train.py"), "pretrain", "--help"], capture_output=True, text=True).stdout
    assert "--mask-rate MASK_RATE" in text and "BERT's 0.15" in text and "--layers" not in text


@pytest.mark.parametrize("flags, message", [
    (["--mask-rate", 0], "--mask-rate 0.0: expected a number above 0"),
    (["--mask-rate", 1.5], "--mask-rate 1.5: expected a number in [0, 1]"),
])
def test_a_mask_rate_is_a_fraction_above_0(toy, tmp_path, flags, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        run("pretrain", "--model", TINY, *common(toy, tmp_path / "run", *flags))
    assert not (tmp_path / "run").exists()
    assert settings.resolve(settings.build_parser().parse_args(["pretrain", "--out", "x"]), "pretrain").lr == 1e-4  # BERT's


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
    (["--fast", "off", "--precision", "bf16"], "--precision bf16 needs --fast on"),
    (["--target-recall", 0], "--target-recall 0.0: expected a number in (0, 1]"),
    (["--target-precision", 1.5], "--target-precision 1.5: expected a number in (0, 1]"),
    (["--target-precision", 0.9, "--target-recall", 0.8],
     "--target-precision 0.9 and --target-recall 0.8: expected one of them (a threshold is chosen for one target)"),
])
def test_bad_settings_are_one_line_errors_and_leave_nothing(toy, tmp_path, flags, message):
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, *common(toy, tmp_path / "run", *flags))
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_an_unknown_precision_is_refused_before_anything_is_written(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, "--precision", "fp16", *common(toy, tmp_path / "r"))
    assert "--precision 'fp16': expected one of auto, fp32, bf16" in str(e.value)
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present: nothing to refuse")
def test_a_device_that_is_not_there(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, *common(toy, tmp_path / "run", "--device", "cuda"))
    assert "--device: device 'cuda': torch sees no CUDA GPU" in str(e.value)


def test_a_missing_teacher_is_named_as_such(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", tmp_path / "nowhere", *common(toy, tmp_path / "s"))
    assert f"--teacher {tmp_path / 'nowhere'}: {tmp_path / 'nowhere'}: not a run folder" in str(e.value)


def test_distill_inherits_the_teachers_data_and_split(toy, teacher_run):
    out = teacher_run.parent / "inherits"
    run("distill", "--teacher", teacher_run, "--out", out, "--no-progress", "--epochs", 1, "--batch-size", 16)
    info, t = R.read_info(out), R.read_info(teacher_run)
    assert info["data"] == toy and info["split_sha256"] == t["split_sha256"] and info["batch_size"] == 16


# -----------------------------------------------------------------------------
# The groups: one line of doc per field, the help built from it, run.json's flat keys


# run.json's "settings" as every run so far wrote it: the grouping must not change the file.
FLAT_KEYS = ["method", "preset", "data", "data_mirror", "three_class", "multilabel", "normalize", "text_column",
             "label_column", "label_map", "split", "split_seed", "max_train", "max_val", "model", "max_length",
             "batch_size", "eval_batch_size", "epochs", "lr", "weight_decay", "warmup", "clip", "accum", "precision",
             "class_weights", "target_precision", "augment", "dropout", "seed", "threads", "device", "checkpoint_every",
             "log_every", "progress", "resume", "overwrite", "teacher", "layers", "alpha", "beta", "gamma", "temperature",
             "hidden_loss", "importance_texts", "base", "lora_r", "lora_alpha", "lora_dropout", "lora_targets",
             "lora_trainable", "export_merged"]


def test_run_json_settings_stay_one_flat_dict_with_the_same_keys():
    flat = dataclasses.asdict(settings.Settings())
    added = ["fast", "mask_rate", "target_recall", "calibrate", "perturb", "ensemble", "select_label"]  # since, beside the old
    assert sorted(flat) == sorted(FLAT_KEYS + added)
    assert not any(isinstance(v, dict) for v in flat.values())
    # The defaults a run.json records are the values of before (16, not 16.0: the model key compares text).
    assert flat["lora_alpha"] == 16 and isinstance(flat["lora_alpha"], int) and flat["lr"] == 5e-5 and flat["fast"] is True
    grouped = [f.name for g in (settings.RunSettings, settings.DataSettings, settings.ModelSettings, settings.TrainingSettings,
                                settings.DistillSettings, settings.LoraSettings, settings.PretrainSettings)
               for f in dataclasses.fields(g)]
    assert sorted(grouped) == sorted(flat)  # every field in exactly one group


def test_every_field_has_one_line_of_doc_and_says_whether_it_may_change_on_resume():
    for f in dataclasses.fields(settings.Settings):
        assert f.metadata["doc"] and "\n" not in f.metadata["doc"] and "default" not in f.metadata["doc"], f.name
        assert isinstance(f.metadata["may_change"], bool), f.name
    may = settings.MAY_CHANGE_ON_RESUME
    assert {"threads", "device", "progress", "log_every", "checkpoint_every", "resume", "overwrite"} <= may
    assert not may & {"lr", "seed", "epochs", "batch_size", "model", "layers", "lora_r", "data", "split", "precision", "fast"}


def test_the_help_is_built_from_the_docs_and_the_defaults():
    fields = {f.name: f for f in dataclasses.fields(settings.Settings)}
    assert settings.help_text(fields["lr"]) == "peak learning rate (default 5e-5; lora 5e-4; pretrain 1e-4)"
    assert settings.help_text(fields["max_train"]) == "use at most N training texts (a fixed subset; default: all)"
    assert settings.help_text(fields["fast"]).endswith("(default on)")
    parser = settings.build_parser()
    args = parser.parse_args(["all"])
    for name, f in fields.items():
        if f.metadata.get("cli", True) and name not in ("teacher", "ensemble", "base", "mask_rate"):  # `all` does not pretrain, nor take teachers
            assert getattr(args, name) is None, name  # not given: the preset or the default decides
            if f.default is not None and not isinstance(f.default, bool):
                assert settings.shown(f.default) in settings.help_text(f), name
    text = subprocess.run([sys.executable, str(ROOT / "train.py"), "teacher", "--help"], capture_output=True, text=True).stdout
    assert "--lr LR" in text and "lora 5e-4" in text and "--fast on|off" in text and "--no-normalize" in text


def test_fast_is_on_unless_a_flag_or_a_preset_says_off(tmp_path, capsys):
    parse = settings.build_parser().parse_args
    assert settings.resolve(parse(["teacher", "--out", "x"]), "teacher").fast is True
    assert settings.resolve(parse(["teacher", "--out", "x", "--fast", "off"]), "teacher").fast is False
    assert settings.resolve(parse(["teacher", "--out", "x", "--fast", "on"]), "teacher").fast is True
    with pytest.raises(SystemExit):
        parse(["teacher", "--out", "x", "--fast", "maybe"])
    assert "argument --fast: 'maybe': expected on or off" in capsys.readouterr().err
    preset = tmp_path / "plain.toml"
    preset.write_text("fast = false\n")
    assert settings.resolve(parse(["teacher", "--preset", str(preset), "--out", "x"]), "teacher").fast is False
    preset.write_text('fast = "off"\n')
    s = settings.resolve(parse(["teacher", "--preset", str(preset), "--out", "x"]), "teacher")
    with pytest.raises(settings.TrainError, match="--fast 'off': expected on or off"):
        settings.check(s)


def test_calibrate_is_on_unless_a_flag_or_a_preset_says_off(tmp_path):
    parse = settings.build_parser().parse_args
    assert settings.resolve(parse(["teacher", "--out", "x"]), "teacher").calibrate is True
    assert settings.resolve(parse(["teacher", "--out", "x", "--calibrate", "off"]), "teacher").calibrate is False
    assert settings.resolve(parse(["all", "--calibrate", "off", "--target-recall", "0.7"]), "distill").target_recall == 0.7
    preset = tmp_path / "raw.toml"
    preset.write_text('calibrate = "no"\n')
    with pytest.raises(settings.TrainError, match="--calibrate 'no': expected on or off"):
        settings.check(settings.resolve(parse(["teacher", "--preset", str(preset), "--out", "x"]), "teacher"))


def test_a_run_inherits_the_data_of_the_run_it_builds_on(tmp_path):
    parent = tmp_path / "teacher"
    R.write_info(parent, R.RunInfo({**dataclasses.asdict(settings.Settings()), "data": "toy.csv", "max_length": 32,
                                    "lr": 0.5, "split": str(tmp_path / "split.json")}, {}))
    parse = settings.build_parser().parse_args
    s = settings.resolve(parse(["distill", "--teacher", str(parent), "--out", "x", "--max-length", "16"]), "distill")
    assert s.data == "toy.csv" and s.max_length == 16 and s.lr == 5e-5  # the data is inherited, a flag wins, lr is not
    s = settings.resolve(parse(["lora", "--base", str(parent), "--out", "x"]), "lora")
    assert s.data == "toy.csv" and s.max_length == 32 and s.model == str(parent) and s.lora_trainable == "" and s.lr == 5e-4


# -----------------------------------------------------------------------------
# --resume: what may change, and what a resumed run must keep


def test_may_change_marks_only_how_the_run_is_executed():
    # These say how a process runs, or what it writes besides the model: a resumed run may change them.
    assert settings.MAY_CHANGE_ON_RESUME == {"preset", "device", "threads", "checkpoint_every", "log_every", "progress",
                                             "resume", "overwrite", "data_mirror", "eval_batch_size", "export_merged"}
    # Everything else shapes the model or its scores (the preset only through the settings it sets, each compared).
    shaping = {"method", "data", "split", "split_seed", "model", "layers", "lr", "batch_size", "accum", "epochs",
               "max_length", "seed", "label_column", "label_map", "augment", "class_weights", "lora_r", "lora_alpha",
               "lora_targets", "precision", "fast", "teacher", "base", "dropout", "target_precision", "target_recall",
               "calibrate"}
    assert shaping <= set(settings.SETTING_NAMES) - settings.MAY_CHANGE_ON_RESUME


def resumed(**changes):
    recorded = dataclasses.asdict(settings.Settings(lr=3e-3, batch_size=8, split="runs/split.json"))
    return recorded, dataclasses.replace(settings.Settings(lr=3e-3, batch_size=8, split="runs/split.json"), **changes)


def test_resume_compares_every_setting_that_shapes_the_run():
    recorded, s = resumed(threads=1, log_every=1, checkpoint_every=5, progress=False, device="cpu", resume=True)
    assert settings.changed_on_resume(recorded, s) == []  # execution only
    recorded, s = resumed(lr=1e-6, batch_size=16, split_seed=5)
    assert settings.changed_on_resume(recorded, s) == [("split_seed", 0, 5), ("batch_size", 8, 16), ("lr", 3e-3, 1e-6)]
    recorded, s = resumed(precision="bf16", fast=False, lora_r=4)
    assert {name for name, _, _ in settings.changed_on_resume(recorded, s)} == {"precision", "fast", "lora_r"}
    # Calibration and the threshold's target shape the run's probabilities and decisions: --resume keeps them.
    recorded, s = resumed(calibrate=False, target_recall=0.9)
    assert settings.changed_on_resume(recorded, s) == [("target_recall", None, 0.9), ("calibrate", True, False)]
    recorded, s = resumed(target_precision=0.8)
    assert settings.changed_on_resume(recorded, s) == [("target_precision", None, 0.8)]
    # A setting an older run.json lacks is not compared: nothing says what it was.
    recorded, s = resumed(fast=False)
    del recorded["fast"]
    assert settings.changed_on_resume(recorded, s) == []


def test_the_same_thing_spelled_another_way_is_the_same_setting(tmp_path, monkeypatch):
    (tmp_path / "toy.csv").write_text("text,label\n")
    monkeypatch.chdir(tmp_path)
    assert settings.same_setting("data", "toy.csv", str(tmp_path / "toy.csv"))  # relative and absolute
    assert not settings.same_setting("data", "toy.csv", "other.csv")
    assert settings.same_setting("lr", 16, 16.0)
    # The run adds the pooler to the trained modules itself when the base has none (methods.build_lora).
    assert settings.same_setting("lora_trainable", "classifier,pooler", "classifier")
    assert settings.same_setting("lora_trainable", "pooler", "")
    assert not settings.same_setting("lora_trainable", "classifier", "")


def test_the_resume_refusal_is_one_line_with_old_and_new_values():
    line = settings.resume_refusal("runs/t", [("lr", 3e-3, 1e-6)])
    assert line == ("--resume runs/t: --lr 1e-06 (run.json: 0.003) differs from the settings the run started with; a "
                    "resumed run keeps them: expected the same, or --overwrite to start again with the new ones")
    many = [(n, 1, 2) for n in ("epochs", "batch_size", "accum", "seed", "max_length")]
    assert "--epochs 2 (run.json: 1), --batch-size 2 (run.json: 1), --accum 2 (run.json: 1) and 2 more differ" in \
        settings.resume_refusal("r", many)
    # Another subcommand: that alone is named (its other settings follow from it).
    line = settings.resume_refusal("r", [("model", "a", "b"), ("method", "teacher", "lora")])
    assert line.startswith("--resume r: the run was started by `train.py teacher`, this is `train.py lora`") and "\n" not in line
