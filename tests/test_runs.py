"""Tests for runs.py: run.json's sections and fields, the log, unfinished runs, where an export may go,
and a LoRA run's pinned base."""

import hashlib
import json
import shutil
import sys

import pytest
from conftest import TINY, run
from safetensors.torch import load_file, save_file

import classifier
import export
import pretrained
import runs as R


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


@pytest.mark.parametrize("section, key, value, expected", [
    ("settings", "max_length", None, "field 'max_length' is None; expected a whole number of at least 2"),
    ("settings", "max_length", True, "field 'max_length' is True; expected a whole number of at least 2"),
    ("settings", "split", 5, "field 'split' is 5; expected the path of a split manifest"),
    ("settings", "epochs", "3", "field 'epochs' is '3'; expected a whole number above 0"),
    ("results", "id2label", {"0": "ok", "2": "toxic"}, "field 'id2label' is {'0': 'ok', '2': 'toxic'}; expected an object"),
    ("results", "id2label", [], "field 'id2label' is []; expected an object"),
])
def test_run_json_fields_the_readers_use_are_checked(tmp_path, section, key, value, expected):
    good = {"settings": {"method": "teacher", "max_length": 64, "split": "split.json", "epochs": 3},
            "results": {"id2label": {"0": "ok", "1": "toxic"}, "split_sha256": "ab"}}
    (tmp_path / "run.json").write_text(json.dumps(good))
    assert R.label_names_of(R.read_info(tmp_path)) == ["ok", "toxic"]
    good[section][key] = value
    (tmp_path / "run.json").write_text(json.dumps(good))
    with pytest.raises(R.RunError) as e:
        R.read_info(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'run.json'}: {expected}")


def test_id2label_may_be_a_list_or_missing(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"settings": {}, "results": {"id2label": ["ok", "toxic"]}}))
    assert R.label_names_of(R.read_info(tmp_path)) == ["ok", "toxic"]
    (tmp_path / "run.json").write_text(json.dumps({"settings": {}, "results": {}}))
    assert R.label_names_of(R.read_info(tmp_path)) is None


def interrupted_run(folder, epochs_done, epochs=3):
    """A run folder as Ctrl-C leaves it: settings, a model, the log of the epochs done, no summary.json."""
    folder.mkdir(parents=True, exist_ok=True)
    R.write_info(folder, R.RunInfo({"method": "teacher", "epochs": epochs}, {}))
    (folder / "config.json").write_text("{}")
    for epoch in range(1, epochs_done + 1):
        R.log(folder, "epoch", {"epoch": epoch, "step": 10 * epoch, "val_macro_f1": 0.5})
    return folder


def test_an_unfinished_run_is_refused_unless_asked_for_and_then_named(tmp_path):
    run = interrupted_run(tmp_path / "run", 1)
    assert R.unfinished_note(run) == "unfinished, epoch 1 of 3"
    with pytest.raises(R.RunError) as e:
        R.check_finished(run)
    assert str(e.value) == (f"{run}: unfinished, epoch 1 of 3 (no summary.json: interrupted, or still training); expected a "
                            "finished run: continue it with train.py and --resume, or pass --allow-unfinished (Python: "
                            "allow_unfinished=True) to use the best epoch saved so far")
    with pytest.raises(R.RunError, match=r"and --resume$"):
        R.check_finished(run, can_allow=False)
    assert R.check_finished(run, allow_unfinished=True) == "unfinished, epoch 1 of 3"
    R.write_summary(run, {"wall_seconds": 1})
    assert R.unfinished_note(run) is None and R.check_finished(run) is None
    (tmp_path / "empty").mkdir()
    R.write_info(tmp_path / "empty", R.RunInfo({"method": "teacher", "epochs": 3}, {}))
    with pytest.raises(R.RunError, match="no trained model"):  # nothing saved yet: said as such
        R.check_finished(tmp_path / "empty", allow_unfinished=True)


def test_a_pretraining_run_is_no_classifier_for_the_readers(tmp_path):
    folder = tmp_path / "mlm"
    pretrained.save_pretrained(pretrained.from_pretrained(TINY, masked_lm=True, verbose=False), folder)
    R.write_info(folder, R.RunInfo({"method": "pretrain", "epochs": 1}, {}))
    R.write_summary(folder, {"wall_seconds": 1})
    expected = (f"{folder}: a pretraining run (train.py pretrain): an encoder without a classifier; expected a trained "
                f"classifier: fine-tune one from it with `train.py teacher --model {folder}`")
    for read in (R.check_finished, R.load_run, classifier.Classifier.from_run):
        with pytest.raises(R.RunError) as e:
            read(folder)
        assert str(e.value) == expected
    R.write_info(folder, R.RunInfo({"method": "teacher", "epochs": 1}, {}))  # the same files as a teacher's: loads
    assert R.load_run(folder)[0].config.num_labels == 2


def an_export(folder, source):
    folder.mkdir(parents=True)
    R.write_info(folder, R.RunInfo({"method": "teacher"}, {"quantized": "nanobert-dynamic-int8", "source_run": str(source)}))
    return folder


def test_an_export_goes_only_where_nothing_else_is(tmp_path, monkeypatch):
    run, other = tmp_path / "runs" / "odd", tmp_path / "runs" / "even"
    assert export.export_target(run) == (tmp_path / "runs" / "odd-int8").resolve()  # the default: beside the run
    assert export.export_target(run, tmp_path / "new") == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    assert export.export_target(run, tmp_path / "empty") == tmp_path / "empty"
    assert export.export_target(run, an_export(tmp_path / "again", run)) == tmp_path / "again"
    monkeypatch.chdir(tmp_path)  # an earlier export that names its source relative to where it ran
    assert export.export_target(run, an_export(tmp_path / "relative", "runs/odd")) == tmp_path / "relative"
    expected = f"expected a new folder, an empty one, or an earlier int8 export of {run}"
    for folder, says in [(an_export(tmp_path / "other", other), f"holds the int8 export of {other}"),
                         (interrupted_run(tmp_path / "a-run", 1), "holds another run (run.json without 'quantized')")]:
        with pytest.raises(R.RunError) as e:
            export.export_target(run, folder)
        assert str(e.value) == f"{folder}: {says}; {expected}"
    (tmp_path / "project").mkdir()
    for name in ("README.md", "app.py", "config.json", "summary.json", "z.txt", ".git"):
        (tmp_path / "project" / name).write_text("mine")
    with pytest.raises(R.RunError) as e:
        export.export_target(run, tmp_path / "project")
    assert str(e.value) == (f"{tmp_path / 'project'}: not empty and not an int8 export (holds README.md, app.py, config.json, "
                            f"summary.json and 2 more); {expected}")
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(R.RunError, match="a file; expected a folder for the int8 model"):
        export.export_target(run, tmp_path / "afile")


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
