"""Tests for run_folder.py: a finished run is never lost, a replacement takes its place only once it is
complete, a run that failed before its first checkpoint leaves nothing behind, one process trains into
a folder at a time, and a resumed run keeps the inputs it started on."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, cli, common, run

import run_folder
import runs as R
import train
from settings import TrainError


def snapshot(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def test_a_finished_run_is_kept_unless_overwrite(toy, teacher_run, tmp_path):
    student = tmp_path / "odd"
    run("distill", "--teacher", teacher_run, "--layers", "odd", *common(toy, student, "--epochs", 1))
    before = snapshot(student)
    for extra, message in ((["--layers", "13"], "holds a finished run; expected a new folder, or --overwrite"),
                           (["--layers", "13", "--overwrite"], "layer 13 out of range"),
                           (["--resume"], "the run is finished (summary.json); nothing to resume")):
        with pytest.raises(SystemExit) as e:
            run("distill", "--teacher", teacher_run, *common(toy, student, *extra))
        assert message in str(e.value)
        assert snapshot(student) == before  # byte for byte
    run("distill", "--teacher", teacher_run, "--layers", "even", *common(toy, student, "--epochs", 1, "--overwrite"))
    assert R.read_info(student)["teacher_layers"] == [2] and snapshot(student) != before


def test_a_teacher_over_a_lora_run_leaves_no_adapter_behind(toy, tmp_path):
    out = tmp_path / "x"
    run("lora", "--model", TINY, *common(toy, out, "--epochs", 1, "--lr", 1e-2))
    run("teacher", "--model", TINY, *common(toy, out, "--epochs", 1, "--overwrite"))
    assert not (out / "adapter_config.json").exists() and R.load_run(out)[2]["method"] == "teacher"


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


def test_a_second_train_into_the_same_folder_is_refused(toy, tmp_path):
    """Two real train.py processes, one folder: the second is refused while the first trains, naming it."""
    out = tmp_path / "r"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "teacher", "--model", TINY,
                              *map(str, common(toy, out, "--epochs", 100000, "--threads", 1))],
                             cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for line in first.stdout:
            if line.startswith("teacher:") and "train /" in line:
                break
        second = cli("teacher", "--model", TINY, *common(toy, out, "--epochs", 1))
        assert second.returncode == 1
        assert second.stderr.startswith(f"error: {out}: being written by process {first.pid} (`train.py teacher ")
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.communicate()
    assert R.read_info(out)["epochs"] == 100000  # the second wrote nothing


def test_resume_refuses_inputs_that_changed_since_the_run_started(tmp_path):
    recorded = {"data_sha256": "a" * 64, "split_sha256": "b" * 64, "base_sha256": "c" * 64}
    before = R.RunInfo({}, recorded)
    run_folder.check_same_inputs(tmp_path, before, dict(recorded))
    with pytest.raises(TrainError) as e:
        run_folder.check_same_inputs(tmp_path, before, {**recorded, "base_sha256": "d" * 64})
    assert str(e.value) == (f"--resume {tmp_path}: the base model's weights changed since the run started (sha256 "
                            f"{'d' * 12}…, run.json says {'c' * 12}…); expected the same, or --overwrite to start again "
                            "on the new ones")
