"""Tests for runs.py: run.json's sections and fields, the log, unfinished runs."""

import json

import pytest

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
