"""Tests for runs.py: run.json's sections, the log, names and labels of runs, which runs are seeds of one
model, and a LoRA run's pinned base."""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest
from conftest import run
from safetensors.torch import load_file, save_file

import classifier
import runs as R


def test_method_labels_and_groups(tmp_path):
    (tmp_path / "t6").mkdir()
    (tmp_path / "t6" / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    def student(layers, spec="list", teacher=str(tmp_path / "t6")):
        return {"method": "distill", "teacher_layers": layers, "layers": spec, "teacher": teacher}

    assert R.method_label(student([1, 3, 5])) == "odd" and R.method_label(student([2, 4, 6])) == "even"
    assert R.method_label(student([1, 3], "1,3")) == "layers 1,3"  # not all odd layers of six
    assert R.method_label(student([1, 3], "odd", teacher="/gone")) == "odd"  # teacher moved: its own words
    assert R.method_label(student([1, 2, 12], "1,2,12", teacher="/gone")) == "layers 1,2,12"
    assert R.method_label({"method": "lora"}) == "lora" and R.method_label({"method": "teacher"}) == "teacher"
    assert R.method_label(student([1, 2, 3])) == "bottom" and R.method_label(student([4, 5, 6])) == "top"
    assert R.method_label(student([4, 5, 6], "top", teacher="/gone")) == "top"
    assert R.method_label(student([1, 2, 6], "auto")) == "auto (1,2,6)"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "run.json").write_text(json.dumps(student([1, 3, 5], "odd")))
    assert R.method_label({"method": "lora", "base": str(tmp_path / "odd")}) == "lora on odd"
    assert R.method_label({"method": "lora", "base": "/gone/even"}) == "lora on even"  # base moved: its folder name
    assert R.method_label({**student([1, 3, 5]), "quantized": "dynamic-int8"}) == "odd int8"
    infos = [{"method": "teacher", "lr": 1e-4, "seed": 0, "run_dir": "a"}, {"method": "teacher", "lr": 3e-4, "seed": 0},
            {"method": "distill", "teacher_layers": [2, 4, 6], "layers": "even", "teacher": "x", "seed": 0},
            {"method": "distill", "teacher_layers": [2, 4, 6], "layers": "even", "teacher": "y", "seed": 1}]
    groups = R.group_runs(infos, ["a", "b", "c", "d"])
    assert [(g["label"], g["names"]) for g in groups] == [
        ("teacher (lr=0.0001)", ["a"]), ("teacher (lr=0.0003)", ["b"]), ("even", ["c", "d"])]
    assert R.run_names([Path("s0/odd"), Path("s1/odd"), Path("s0/lora")]) == ["s0-odd", "s1-odd", "s0-lora"]
    # Seeds of one model group, whatever differs from seed to seed: timings, the teacher's measured
    # ranking, the base or source folder; and a run of an older version without newer fields.
    auto = {"method": "distill", "layers": "auto", "teacher_layers": [1, 3], "importance_texts": 1000}
    lora_on = {"method": "lora", "lora_r": 8, "importance_texts": 1000}
    infos = [{**auto, "seed": 0, "importance_seconds": 3.1, "layer_importance": [0.2, 0.1, 0.3], "teacher": "s0/t"},
            {**auto, "seed": 1, "importance_seconds": 3.3, "layer_importance": [0.25, 0.1, 0.3], "teacher": "s1/t"},
            {**lora_on, "seed": 0, "base": "s0/odd", "model": "s0/odd"}, {**lora_on, "seed": 1, "base": "s1/odd", "model": "s1/odd"},
            {"method": "distill", "layers": "odd", "teacher_layers": [1, 3], "seed": 0},
            {"method": "distill", "layers": "odd", "teacher_layers": [1, 3], "seed": 1, "importance_texts": 1000, "base": None},
            {"method": "teacher", "quantized": "q", "source_run": "s0/teacher", "seed": 0},
            {"method": "teacher", "quantized": "q", "source_run": "s1/teacher", "seed": 1}]
    groups = R.group_runs(infos, list("abcdefgh"))
    assert [g["names"] for g in groups] == [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    assert R.model_key({**auto, "importance_texts": 500}) != R.model_key(auto)  # it does matter for auto


def test_run_json_keeps_settings_and_results_apart_and_reads_old_flat_files(tmp_path):
    info = R.RunInfo({"method": "teacher", "lr": 1e-4, "seed": 3}, {"split_sha256": "abc", "params_total": 7})
    R.write_info(tmp_path, info)
    raw = json.loads((tmp_path / "run.json").read_text())
    assert raw == {"format": R.FORMAT, "settings": {"method": "teacher", "lr": 1e-4, "seed": 3},
                   "results": {"split_sha256": "abc", "params_total": 7}}
    back = R.read_info(tmp_path)
    assert back["lr"] == 1e-4 and back["split_sha256"] == "abc" and back.get("nothing", 5) == 5 and "seed" in back
    # A flat run.json of an earlier version: its results are recognised by name.
    (tmp_path / "run.json").write_text(json.dumps({"method": "teacher", "lr": 1e-4, "split_sha256": "abc", "torch": "2"}))
    old = R.read_info(tmp_path)
    assert old.settings == {"method": "teacher", "lr": 1e-4} and old.results == {"split_sha256": "abc", "torch": "2"}
    (tmp_path / "run.json").write_text(json.dumps({"settings": [], "results": {}}))
    with pytest.raises(R.RunError, match="not an object of settings and results"):
        R.read_info(tmp_path)


def test_seeds_group_on_settings_only(tmp_path):
    a = R.RunInfo({"method": "teacher", "lr": 1e-4, "seed": 0, "threads": 2, "out": "a"}, {"torch": "2.1", "params_total": 5})
    b = R.RunInfo({"method": "teacher", "lr": 1e-4, "seed": 1, "threads": 1, "out": "b"}, {"torch": "2.2", "params_total": 5})
    c = R.RunInfo({"method": "teacher", "lr": 3e-4, "seed": 0}, {})
    assert R.model_key(a) == R.model_key(b) != R.model_key(c)
    int8 = R.RunInfo(a.settings, {"quantized": "nanobert-dynamic-int8"})
    assert R.model_key(int8) != R.model_key(a)
    # The precision a run computed in (what `auto` chose) keeps bf16 and fp32 seeds apart; a run of an
    # older version (a bf16 flag, no precision) groups with the new runs of its precision.
    bf16 = R.RunInfo({**a.settings, "precision": "auto"}, {"precision_chosen": "bf16"})
    fp32 = R.RunInfo({**a.settings, "precision": "auto"}, {"precision_chosen": "fp32"})
    old_fp32, old_bf16 = R.RunInfo({**a.settings, "bf16": False}, {}), R.RunInfo({**a.settings, "bf16": True}, {})
    asked = R.RunInfo({**a.settings, "precision": "fp32"}, {"precision_chosen": "fp32"})
    assert R.model_key(bf16) == R.model_key(old_bf16) != R.model_key(fp32)
    assert R.model_key(old_fp32) == R.model_key(a) == R.model_key(asked) == R.model_key(fp32) != R.model_key(bf16)
    groups = R.group_runs([old_fp32, bf16, asked, old_bf16], list("wxyz"))
    assert [(g["label"], g["names"]) for g in groups] == [("teacher (precision=fp32)", ["w", "y"]),
                                                         ("teacher (precision=bf16)", ["x", "z"])]


def test_the_log_has_kinds_and_a_resume_trims_it(tmp_path):
    for step in (1, 2, 3, 4):
        R.log(tmp_path, "step", {"step": step, "epoch": 1 + (step > 2), "loss": 1.0 / step})
        if step == 2:
            R.log(tmp_path, "epoch", {"epoch": 1, "step": 2, "train_loss": 0.7, "val_macro_f1": 0.5})
    steps, epochs = R.read_log(tmp_path)
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["epoch"] for r in epochs] == [1]
    R.trim_log(tmp_path, step=3, epoch=1)  # a checkpoint at step 3: step 4 will be logged again
    steps, epochs = R.read_log(tmp_path)
    assert [r["step"] for r in steps] == [1, 2, 3] and len(epochs) == 1
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a log of an earlier version: no "kind", and a cut line
        f.write(json.dumps({"step": 9, "loss": 0.1}) + "\n" + json.dumps({"epoch": 2, "val_macro_f1": 0.6}) + "\n{\"ste")
    steps, epochs = R.read_log(tmp_path)
    assert steps[-1]["step"] == 9 and epochs[-1]["epoch"] == 2



# -----------------------------------------------------------------------------
# A LoRA run pins its base: every reader (load_run: predict, report, the API, the app) checks its weights


def test_a_lora_run_refuses_a_base_that_changed_since(toy, teacher_run, tmp_path, monkeypatch):
    base, adapter = tmp_path / "base", tmp_path / "lora"
    shutil.copytree(teacher_run, base)
    argv = ["lora", "--base", str(base), "--out", str(adapter), "--epochs", "1", "--lr", "1e-2", "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])  # run.json's command, as a user typed it
    run(*argv)
    weights = base / "model.safetensors"
    assert R.read_info(adapter).results["base_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    R.load_run(adapter)  # the base as it was: loads
    tensors = load_file(weights)
    name = next(k for k in tensors if k.endswith("query.weight"))
    tensors[name] = tensors[name] * 1.01
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(R.RunError) as e:
        R.load_run(adapter)
    message = str(e.value)
    assert message.startswith(f"{adapter}: its base {base} has changed since the adapter was trained on it (sha256 ")
    assert message.endswith(f"retrain the adapter with `python train.py {' '.join(argv)} --overwrite`")
    assert "\n" not in message
    with pytest.raises(R.RunError, match="has changed since the adapter was trained"):
        classifier.Classifier.from_run(adapter)  # the Python API


def test_the_retrain_command_is_the_recorded_one_with_overwrite(tmp_path):
    info = R.RunInfo({"method": "lora", "base": "runs/odd"}, {"command": "/abs/train.py lora --base runs/odd --out runs/l --resume"})
    assert R.retrain_command("runs/l", info) == "python train.py lora --base runs/odd --out runs/l --overwrite"
    info = R.RunInfo({"method": "lora", "base": "runs/odd"}, {"command": "train.py all --preset quick --extended"})
    assert R.retrain_command("runs/lora-odd", info) == "python train.py lora --base runs/odd --out runs/lora-odd --overwrite"
