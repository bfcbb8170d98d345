"""Tests for compare.py (`train.py all`): every arm on one split, then the report; --resume keeps what is
finished; --extended adds the layer choices, LoRA on the best student and the int8 exports."""

import json

import pytest
from conftest import TINY, run

import compare
import runs as R
import settings


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


def test_all_refuses_layers_it_would_ignore(toy, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("all", "--model", TINY, "--data", toy, "--runs", tmp_path, "--layers", "1,2")
    assert "--layers 1,2: `all` trains the odd and even students" in str(e.value)


def test_all_resume_resumes_a_checkpoint_and_starts_again_a_run_killed_before_one(toy, tmp_path):
    args = settings.build_parser().parse_args(["all", "--model", TINY, "--data", toy, "--runs", str(tmp_path), "--resume"])
    seen = []
    R.write_info(tmp_path / "teacher", R.RunInfo({}, {}))  # killed before its first checkpoint: run.json only
    compare.run_one(args, tmp_path, "teacher", "teacher", {}, lambda s, d: seen.append((s.resume, s.overwrite)))
    (tmp_path / "teacher" / R.CHECKPOINT_FILE).write_bytes(b"")
    compare.run_one(args, tmp_path, "teacher", "teacher", {}, lambda s, d: seen.append((s.resume, s.overwrite)))
    assert seen == [(False, True), (True, False)]
