"""Tests for train.py on the tiny model and a small made-up dataset: the loop of each method, the run
folder it leaves, determinism, resume after a kill (and the precision it keeps), a non-finite loss, a
full disk, the precision, and two questions in one model. The modules around it have their own:
test_settings, test_run_folder, test_methods, test_training_data, test_optimizer, test_distributed,
test_memory, test_compare."""

import hashlib
import json
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY, cli, common, epochs, run
from safetensors.torch import load_file, save_file

import batching
import calibration
import classifier
import corpus
import machine
import metrics
import precision
import runs as R
import splits
import train


def test_teacher_learns_and_writes_the_run_folder(teacher_run):
    files = sorted(p.name for p in teacher_run.iterdir())
    assert files == ["README.md", "config.json", "metrics.jsonl", "model.safetensors", "run.json", "summary.json",
                     "tokenizer_config.json", "vocab.txt"]
    assert (teacher_run.parent / "split.json").is_file()
    e = epochs(teacher_run)
    assert len(e) == 4 and e[-1]["train_loss"] < e[0]["train_loss"] * 0.6
    assert e[-1]["val_macro_f1"] == 1.0
    steps = [r for r in map(json.loads, open(teacher_run / "metrics.jsonl")) if "loss" in r]
    assert {"step", "loss", "lr", "sentences_per_s"} <= set(steps[0]) and len(steps) == 4 * 16
    info = R.read_info(teacher_run)
    split = json.loads((teacher_run.parent / "split.json").read_text())
    assert info["split_sha256"] == split["manifest_sha256"] and info["lr"] == 3e-3 and info["method"] == "teacher"
    summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["wall_seconds"] > 0 and summary["peak_memory_mb"] > 0 and summary["steps"] == 64


@pytest.mark.parametrize("layers", ["odd", "2,3"])
def test_distill_student_learns_from_the_teacher(toy, teacher_run, layers):
    out = teacher_run.parent / f"student-{layers}"
    run("distill", "--teacher", teacher_run, "--layers", layers, *common(toy, out, "--epochs", 2, "--lr", 3e-3))
    info = R.read_info(out)
    assert info["teacher_layers"] == ([1, 3] if layers == "odd" else [2, 3])
    # The teacher's weights, for provenance (nothing checks them later: the student's own weights stand alone).
    assert info["teacher_sha256"] == hashlib.sha256((teacher_run / "model.safetensors").read_bytes()).hexdigest()
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    steps = [r for r in map(json.loads, open(out / "metrics.jsonl")) if "loss" in r]
    assert {"ce", "kl", "hidden"} <= set(steps[0])
    assert steps[-1]["loss"] < steps[0]["loss"]


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


def poison_fifth_loss(monkeypatch):
    """Make the 5th batch's loss NaN: the run must stop there, keeping its last good checkpoint.
    Returns the real compute_loss, to put back."""
    real, calls = train.compute_loss, []

    def poisoned(*a, **kw):
        loss, parts = real(*a, **kw)
        calls.append(1)
        return (loss * float("nan"), parts) if len(calls) == 5 else (loss, parts)

    monkeypatch.setattr(train, "compute_loss", poisoned)
    return real


def test_non_finite_loss_stops_with_the_last_good_checkpoint(toy, tmp_path, monkeypatch):
    poison_fifth_loss(monkeypatch)
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, *common(toy, tmp_path / "nan", "--epochs", 1, "--checkpoint-every", 2))
    assert "non-finite loss (nan) at epoch 1, batch 5, step 4" in str(e.value)
    assert "checkpoint.safetensors" in str(e.value) and (tmp_path / "nan" / "checkpoint.safetensors").is_file()


@pytest.mark.parametrize("flags, chosen", [(["--bf16"], "bf16"), (["--precision", "fp32"], "fp32")])
def test_precision_is_recorded_and_both_learn(toy, tmp_path, flags, chosen):
    run("teacher", "--model", TINY, *flags, *common(toy, tmp_path / "r", "--epochs", 4, "--lr", 3e-3))
    e, info = epochs(tmp_path / "r"), R.read_info(tmp_path / "r")
    assert info["precision_chosen"] == chosen and chosen in info["precision_reason"]
    assert e[-1]["train_loss"] < e[0]["train_loss"]
    # The weights on disk are fp32 either way (bf16 trains fp32 master weights).
    assert all(v.dtype == torch.float32 for v in load_file(tmp_path / "r" / "model.safetensors").values())


def test_auto_records_its_probe_and_a_resumed_run_keeps_its_precision(toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(machine, "probe_matmuls", lambda *a, **k: {"fp32": 3e-3, "bf16": 1e-3})  # bf16 3x faster
    real = poison_fifth_loss(monkeypatch)
    args = ["teacher", "--model", TINY, *common(toy, tmp_path / "r", "--epochs", 2, "--checkpoint-every", 2)]
    with pytest.raises(SystemExit):
        run(*args)
    info = R.read_info(tmp_path / "r")
    assert info["precision_chosen"] == "bf16" and "3.00x" in info["precision_reason"]
    assert info["precision_probe"]["ratio"] == 3.0 and info["precision_probe"]["cache"].startswith(str(tmp_path / "cache"))
    line = next(x for x in capsys.readouterr().out.splitlines() if "computing in" in x)
    assert "computing in bf16 (auto: " in line and "3.00x" in line and info["precision_probe"]["cache"] in line
    # Resumed where the probe would now say fp32: the run goes on in the bf16 it started in, unmeasured.
    monkeypatch.setattr(train, "compute_loss", real)
    monkeypatch.setattr(machine, "probe_matmuls", lambda *a, **k: pytest.fail("a resumed run measured again"))
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path / "another-cache"))
    run(*args, "--resume")
    assert "computing in bf16 (bf16, as the run started in (auto: bf16's" in capsys.readouterr().out
    assert R.read_info(tmp_path / "r")["precision_chosen"] == "bf16"


def test_two_label_teacher_student_and_lora(toy, toy2, tmp_path):
    teacher = tmp_path / "teacher"
    run("teacher", "--model", TINY, "--label-column", "toxic,hate", "--select-label", "hate",
        *common(toy2, teacher, "--epochs", 4, "--lr", 3e-3))
    config = json.loads((teacher / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and config["id2label"] == {"0": "toxic", "1": "hate"}
    info = R.read_info(teacher)
    assert set(info["thresholds"]) == {"toxic", "hate"} and all(0 < v < 1 for v in info["thresholds"].values())
    assert set(info["temperatures"]) == set(info["calibration"]["validation_ece"]) == {"toxic", "hate"}  # one T per label
    assert info["test"]["labels"]["hate"]["macro_f1"] > 0.8  # "vermin" gives it away
    e = epochs(teacher)
    assert e[-1]["train_loss"] < e[0]["train_loss"] * 0.6 and e[-1]["val_macro_f1"] > 0.9
    # --select-label hate: the epoch kept is the one of the best hate macro-F1 on validation, not of the mean
    hate = [r["val_hate_macro_f1"] for r in e]
    summary = json.loads((teacher / "summary.json").read_text())
    assert summary["best_val_macro_f1"] == max(hate) and summary["best_epoch"] == hate.index(max(hate)) + 1
    assert "(validation hate macro-F1 " in (teacher / "README.md").read_text()  # the model card says what chose
    assert all(r["val_macro_f1"] == pytest.approx((r["val_hate_macro_f1"] + r["val_toxic_macro_f1"]) / 2) for r in e)
    for flags, words in ((("--label-column", "toxic,hate", "--select-label", "spam"), "expected one of the labels"),
                         (("--select-label", "hate", "--split", tmp_path / "toy-split.json"), "one class per text")):
        with pytest.raises(SystemExit) as bad:
            run("teacher", "--model", TINY, *flags, *common(toy2 if "spam" in flags else toy, tmp_path / "bad", "--epochs", 1))
        assert "--select-label" in str(bad.value) and words in str(bad.value)
    assert not (tmp_path / "bad").exists()
    student = tmp_path / "odd"
    run("distill", "--teacher", teacher, "--layers", "odd", *common(toy2, student, "--epochs", 2, "--lr", 3e-3))
    assert json.loads((student / "config.json").read_text())["problem_type"] == "multi_label_classification"
    assert {"ce", "kl", "hidden"} <= set(R.read_log(student)[0][0])
    lora_run = tmp_path / "lora"
    run("lora", "--model", TINY, "--label-column", "toxic,hate", "--split", tmp_path / "split.json",
        *common(toy2, lora_run, "--epochs", 3, "--lr", 1e-2))
    net, _, lora_info = R.load_run(lora_run)
    assert net.config.multilabel and set(lora_info["thresholds"]) == {"toxic", "hate"}


def validation_logits(run_dir, toy):
    """The validation part of a run on the toy data, and the logits of its saved best model on it."""
    net, tokenizer, info = R.load_run(run_dir)
    val = splits.apply_split(corpus.load_dataset(toy), splits.load_manifest(Path(run_dir).parent / "split.json"))["validation"]
    return val, classifier.predict_logits(net, batching.Loader(val.texts, val.labels, tokenizer, info["max_length"], 64,
                                                                by_length=True))


def test_a_run_calibrates_on_validation_and_the_classifier_applies_it(toy, tmp_path):
    run("teacher", "--model", TINY, *common(toy, tmp_path / "t", "--epochs", 1, "--lr", 5e-4))
    info = R.read_info(tmp_path / "t")
    positive = R.label_names_of(info)[1]
    assert set(info["temperatures"]) == set(info["thresholds"]) == {positive}  # keyed as the thresholds are
    t = info["temperatures"][positive]
    assert calibration.T_RANGE[0] < t < calibration.T_RANGE[1]  # fitted, not stopped at a bound
    val, logits = validation_logits(tmp_path / "t", toy)
    assert calibration.fit(logits.numpy(), val.labels, False) == pytest.approx([t, t], rel=1e-6)
    ece = info["calibration"]["validation_ece"][positive]
    raw, calibrated = torch.softmax(logits, -1).numpy(), torch.softmax(logits / t, -1).numpy()
    assert ece == pytest.approx({"before": calibration.ece(raw[:, 1], val.labels), "after": calibration.ece(calibrated[:, 1], val.labels)})
    # The threshold is chosen on the calibrated probabilities; Classifier gives those and decides at it.
    assert info["thresholds"][positive] == pytest.approx(metrics.best_threshold(val.labels, calibrated[:, 1]), rel=1e-6)
    clf = classifier.Classifier.from_run(tmp_path / "t", device="cpu", precision="fp32")
    assert np.allclose(clf.predict_proba(val.texts), calibrated, atol=1e-6)
    assert info["test"]["ece"] >= 0 and "| calibration | temperatures fitted on validation" in (tmp_path / "t" / "README.md").read_text()


def test_calibrate_off_keeps_the_models_probabilities_and_a_target_recall_is_reached(toy, tmp_path):
    run("teacher", "--model", TINY, *common(toy, tmp_path / "t", "--epochs", 1, "--lr", 5e-4, "--calibrate", "off",
                                            "--target-recall", 1))
    info = R.read_info(tmp_path / "t")
    positive = R.label_names_of(info)[1]
    assert "temperatures" not in info and info["calibrate"] is False and info["target_recall"] == 1
    ece = info["calibration"]["validation_ece"][positive]
    assert ece["before"] == ece["after"]
    val, logits = validation_logits(tmp_path / "t", toy)
    raw = torch.softmax(logits, -1).numpy()
    assert np.allclose(classifier.Classifier.from_run(tmp_path / "t", device="cpu", precision="fp32").predict_proba(val.texts),
                       raw, atol=1e-6)
    threshold = info["thresholds"][positive]
    assert threshold == pytest.approx(metrics.best_threshold(val.labels, raw[:, 1], target_recall=1), rel=1e-6)
    assert all(p >= threshold * (1 - 1e-6) for p, y in zip(raw[:, 1], val.labels, strict=True) if y == 1)  # every positive found


def test_three_classes_share_one_temperature_and_decide_by_the_most_probable(tmp_path):
    import csv
    import random

    from conftest import NEUTRAL

    rng, path = random.Random(0), tmp_path / "three.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(150):
            w.writerow([" ".join(rng.sample(NEUTRAL, 6) + [["good", "bad", "odd"][i % 3]]) + f" {i}", i % 3])
    encoder = tmp_path / "encoder"  # the tiny model without its two-class head: a new head of three
    shutil.copytree(TINY, encoder)
    save_file({k: v for k, v in load_file(encoder / "model.safetensors").items() if not k.startswith("classifier.")},
              encoder / "model.safetensors")
    run("teacher", "--model", encoder, *common(str(path), tmp_path / "t", "--epochs", 2, "--lr", 3e-3))
    info = R.read_info(tmp_path / "t")
    assert "thresholds" not in info and set(info["temperatures"]) == {"0", "1", "2"}
    assert len(set(info["temperatures"].values())) == 1 and list(info["calibration"]["validation_ece"]) == [calibration.TOP_CLASS]
    val, logits = validation_logits(tmp_path / "t", str(path))
    t = info["temperatures"]["0"]
    assert np.allclose(classifier.Classifier.from_run(tmp_path / "t", device="cpu", precision="fp32").predict_proba(val.texts),
                       torch.softmax(logits / t, -1).numpy(), atol=1e-6)
    assert f"{calibration.TOP_CLASS}: validation" in (tmp_path / "t" / "README.md").read_text()


def test_a_resumed_run_keeps_its_calibration_and_target(toy, tmp_path):
    args = ["teacher", "--model", TINY, *common(toy, tmp_path / "r", "--epochs", 2, "--lr", 5e-4)]
    assert cli(*args, env={"NANOBERT_CRASH_AT_STEP": "20"}).returncode != 0
    for flags, named in ((["--calibrate", "off"], "--calibrate False (run.json: True)"),
                         (["--target-recall", "0.9"], "--target-recall 0.9 (run.json: None)")):
        with pytest.raises(SystemExit) as e:
            run(*args, *flags, "--resume")
        assert named in str(e.value) and "\n" not in str(e.value)
    run(*args, "--resume")
    assert "temperatures" in R.read_info(tmp_path / "r")


def test_fast_off_trains_the_plain_model(toy, tmp_path, monkeypatch):
    # --fast off: model.py as written, in fp32 (LoRA through LoRALinear.forward); the fast path never runs.
    import fast

    monkeypatch.setattr(fast, "prepare", lambda *a, **k: pytest.fail("the fast path ran under --fast off"))
    run("teacher", "--model", TINY, "--fast", "off", *common(toy, tmp_path / "r", "--epochs", 4, "--lr", 3e-3))
    e, info = epochs(tmp_path / "r"), R.read_info(tmp_path / "r")
    assert info["precision_chosen"] == "fp32" and "--fast off" in info["precision_reason"] and info.settings["fast"] is False
    assert e[-1]["train_loss"] < e[0]["train_loss"] and e[-1]["val_macro_f1"] == 1.0
    run("lora", "--model", TINY, "--fast", "off", *common(toy, tmp_path / "l", "--epochs", 2, "--lr", 1e-2))
    assert (tmp_path / "l" / "adapter_model.safetensors").is_file()


def test_a_resumed_run_keeps_the_precision_it_recorded(toy, tmp_path, monkeypatch, capsys):
    args = ["teacher", "--model", TINY, *common(toy, tmp_path / "r", "--epochs", 2, "--lr", 3e-3)]
    assert cli(*args, env={"NANOBERT_CRASH_AT_STEP": "20"}).returncode == -9
    recorded = R.read_info(tmp_path / "r")["precision_chosen"]
    # On the machine it resumes on, `auto` would choose the other one; the run keeps its own.
    monkeypatch.setattr(precision, "native_bf16", lambda device: (recorded == "fp32", "pretend"))
    assert precision.choose("auto", "cpu").precision != recorded
    run(*args, "--resume")
    assert f"teacher: computing in {recorded}" in capsys.readouterr().out
    assert R.read_info(tmp_path / "r")["precision_chosen"] == recorded and R.read_summary(tmp_path / "r")


def test_a_full_disk_while_saving_is_one_line_and_leaves_no_folder(toy, tmp_path):
    """A real process whose writes the kernel refuses past 100 kB (a file-size limit, as a full disk
    refuses them): the model is the first file that big."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    out = tmp_path / "run"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "teacher", "--model", TINY, *map(str, common(toy, out))],
                       cwd=ROOT, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert p.returncode == 1 and p.stderr.strip() == f"error: {out}/model.safetensors: file too large", p.stderr
    assert not out.exists()


# -----------------------------------------------------------------------------
# pretrain: masked-language-model pretraining on the training texts, then fine-tuning from it


@pytest.fixture(scope="module")
def pretrain_run(toy, tmp_path_factory):
    """2 epochs of masked-LM pretraining of the tiny model on the toy data's training part."""
    out = tmp_path_factory.mktemp("mlm") / "mlm"
    run("pretrain", "--model", TINY, *common(toy, out, "--epochs", 2, "--lr", 3e-3))
    return out


def test_pretrain_writes_the_encoder_and_its_head_in_the_reference_layout(pretrain_run):
    assert sorted(p.name for p in pretrain_run.iterdir()) == ["config.json", "metrics.jsonl", "model.safetensors", "run.json",
                                                              "summary.json", "tokenizer_config.json", "vocab.txt"]
    assert json.loads((pretrain_run / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    saved = load_file(pretrain_run / "model.safetensors")
    assert {"cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight"} <= set(saved)
    assert "cls.predictions.decoder.weight" not in saved and not any(k.startswith("classifier.") for k in saved)  # tied; no classifier
    tiny = load_file(Path(TINY) / "model.safetensors")
    assert torch.equal(saved["bert.pooler.dense.weight"], tiny["bert.pooler.dense.weight"])  # carried, not trained
    assert not torch.equal(saved["bert.encoder.layer.0.attention.self.query.weight"], tiny["bert.encoder.layer.0.attention.self.query.weight"])
    e = epochs_of(pretrain_run)
    assert [r["epoch"] for r in e] == [1, 2] and e[1]["train_loss"] < e[0]["train_loss"] and "val_macro_f1" not in e[0]
    steps = [r for r in map(json.loads, open(pretrain_run / "metrics.jsonl")) if r["kind"] == "step"]
    assert len(steps) == 2 * 16 and steps[-1]["loss"] < steps[0]["loss"] - 1.0  # from ~ln(909) = 6.8
    info = R.read_info(pretrain_run)
    split = json.loads((pretrain_run.parent / "split.json").read_text())
    assert info["method"] == "pretrain" and info["mask_rate"] == 0.15 and info["lr"] == 3e-3
    assert info["split_sha256"] == split["manifest_sha256"] and info["train_size"] == 128
    summary = R.read_summary(pretrain_run)
    assert summary["steps"] == 32 and summary["final_train_loss"] == e[-1]["train_loss"]


def epochs_of(run_dir):
    return [r for r in map(json.loads, open(Path(run_dir) / "metrics.jsonl")) if r["kind"] == "epoch"]


def test_pretrain_reads_the_training_part_of_the_split_and_nothing_else(toy, tmp_path, monkeypatch):
    import batching
    import corpus
    import mlm
    import splits

    given = []
    real = batching.Loader.__init__

    def spy(self, texts, *a, **kw):
        if kw.get("shuffle"):  # the training loader; the validation one is built too, and never read
            given.append(list(texts))
        real(self, texts, *a, **kw)

    masked = []
    real_mask = mlm.mask_batch
    monkeypatch.setattr(batching.Loader, "__init__", spy)
    monkeypatch.setattr(mlm, "mask_batch", lambda b, *a: masked.append(b["index"]) or real_mask(b, *a))
    run("pretrain", "--model", TINY, *common(toy, tmp_path / "mlm", "--epochs", 1))
    parts = splits.apply_split(corpus.load_dataset(toy), splits.load_manifest(tmp_path / "split.json"))
    assert given == [parts["train"].texts]
    assert sorted(torch.cat(masked).tolist()) == list(range(len(parts["train"])))  # every training text, once an epoch
    assert not set(given[0]) & (set(parts["validation"].texts) | set(parts["test"].texts))


def test_a_teacher_fine_tunes_from_the_pretraining_run(toy, pretrain_run, monkeypatch, capsys):
    import pretrained

    loaded = []
    real = pretrained.from_pretrained

    def spy(*a, **kw):
        net = real(*a, **kw)
        loaded.append({k: v.clone() for k, v in net.state_dict().items()})
        return net

    monkeypatch.setattr(pretrained, "from_pretrained", spy)
    out = pretrain_run.parent / "teacher"
    run("teacher", "--model", pretrain_run, *common(toy, out, "--epochs", 4, "--lr", 3e-3))
    assert "ignored 5 keys of heads this model does not use (cls.predictions" in capsys.readouterr().out
    # It started from the pretrained encoder (and the pooler it carried), with a fresh classifier ...
    mlm_weights = load_file(pretrain_run / "model.safetensors")
    start = loaded[0]
    assert all(torch.equal(start[k], mlm_weights[k]) for k in start if k.startswith("bert."))
    assert not torch.equal(start["classifier.weight"], load_file(Path(TINY) / "model.safetensors")["classifier.weight"])
    # ... on the same split, and it learns.
    assert R.read_info(out)["split_sha256"] == R.read_info(pretrain_run)["split_sha256"]
    e = epochs(out)
    assert e[-1]["train_loss"] < e[0]["train_loss"] and e[-1]["val_macro_f1"] == 1.0
    assert not any(k.startswith("cls.") for k in load_file(out / "model.safetensors"))
    # LoRA takes it as its base model too.
    run("lora", "--model", pretrain_run, *common(toy, pretrain_run.parent / "lora", "--epochs", 1, "--lr", 1e-2))
    assert R.load_run(pretrain_run.parent / "lora")[2]["base_sha256"] == hashlib.sha256((pretrain_run / "model.safetensors").read_bytes()).hexdigest()


def test_pretrain_resumes_after_a_kill_with_the_same_weights_and_keeps_its_settings(toy, tmp_path):
    args = ["pretrain", "--model", TINY, *common(toy, "X", "--epochs", 2, "--lr", 3e-3, "--checkpoint-every", 3)]
    run(*[tmp_path / "whole" if a == "X" else a for a in args])
    broken = [tmp_path / "broken" if a == "X" else a for a in args]
    killed = cli(*broken, env={"NANOBERT_CRASH_AT_STEP": "20"})  # a real SIGKILL in epoch 2; the checkpoint of step 18 stays
    assert killed.returncode == -9, killed.stderr
    with pytest.raises(SystemExit, match=r"--mask-rate 0.3 \(run.json: 0.15\) differs from the settings the run started with"):
        run(*broken, "--resume", "--mask-rate", 0.3)
    run(*broken, "--resume")  # the masks of the steps after the checkpoint are drawn again, the same
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "broken" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit, match="holds a finished run; expected a new folder, or --overwrite"):
        run(*broken)


def test_an_unfinished_pretraining_run_is_not_a_model_yet(toy, pretrain_run, tmp_path):
    import shutil

    unfinished = tmp_path / "mlm"
    shutil.copytree(pretrain_run, unfinished)
    (unfinished / "summary.json").unlink()
    with pytest.raises(SystemExit, match=r"--model .*mlm: a run folder, unfinished, epoch 2 of 2 \(no summary.json\); "
                                         "expected a finished run"):
        run("teacher", "--model", unfinished, *common(toy, tmp_path / "teacher"))
    assert not (tmp_path / "teacher").exists()


def test_pretrain_in_bf16_learns_with_its_head_in_fp32(toy, tmp_path):
    run("pretrain", "--model", TINY, "--bf16", *common(toy, tmp_path / "mlm", "--epochs", 2, "--lr", 3e-3))
    assert R.read_info(tmp_path / "mlm")["precision_chosen"] == "bf16"
    e = epochs_of(tmp_path / "mlm")
    assert e[1]["train_loss"] < e[0]["train_loss"]
    assert all(v.dtype == torch.float32 for v in load_file(tmp_path / "mlm" / "model.safetensors").values())


def test_one_source_two_questions_with_the_templates_trains_and_scores_its_test(tiny_mirror, tmp_path):
    # hate_speech18 answers hate alone (toxic only where it is hate): the templates give toxic its "no",
    # so the questions are checked once the templates are in; and the test split is read back as trained.
    base = ["--model", TINY, "--data-mirror", tiny_mirror, "--multilabel", "--batch-size", 8, "--no-progress",
            "--threads", 1, "--max-length", 32]
    with pytest.raises(SystemExit, match="expected yes and no for each"):
        run("teacher", "--data", "hate_speech18", "--out", tmp_path / "alone", *base)
    assert not (tmp_path / "alone").exists()
    out = tmp_path / "h18"
    run("teacher", "--data", "hate_speech18", "--augment", "suites/augment.toml", "--out", out, *base)
    info = R.read_info(out)
    assert info["multilabel"] and R.is_finished(out)
    test, _, _ = R.load_test_split(out, info)
    assert len(test) == info["test"]["n"] and test.multilabel
    # Masked-LM pretraining reads the texts alone: the dataset's own, without the templates, is enough.
    run("pretrain", "--data", "hate_speech18", "--split", tmp_path / "split.json", "--out", tmp_path / "mlm", *base)
    assert R.is_finished(tmp_path / "mlm")
