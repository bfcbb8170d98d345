"""Tests on tiny runs trained by train.py (a teacher, an odd student of two seeds, LoRA: conftest.py's
`runs`): the comparison report (report.py, plots.py), predict and export through eval.py's command
line and runs.py, and every kind of bad input."""

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_toy_csv
from safetensors.torch import load_file, save_file

import bootstrap
import calibration
import corpus
import eval as E
import export
import metrics
import report
import runs as runs_module
import splits
import tables

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-bert")
nan = float("nan")


# -----------------------------------------------------------------------------
# The report of the tiny runs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny models on a shared machine: more threads only wait on each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reported(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    # fp32: the tests below compare it number for number with predict and the API (bf16's rounding
    # depends on how texts are batched; test_bf16_report_is_close_to_fp32 bounds it).
    rows = report.report(list(runs.values()), out, device="cpu", precision="fp32", resamples=300)
    return rows, out


def strict_json(path):
    def refuse(name):
        raise ValueError(f"{path}: {name} is not JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_report_rows_match_the_saved_predictions(runs, reported):
    rows, out = reported
    assert [r["name"] for r in rows] == ["teacher", "odd", "odd-s1", "lora"]
    assert [r["method"] for r in rows] == ["teacher", "odd", "odd", "lora"] and [r["seed"] for r in rows] == [0, 0, 1, 0]
    for row in rows:
        saved = strict_json(out / row["predictions"])
        assert saved["labels"].count(0) == 8 and saved["labels"].count(1) == 8  # the whole test part: 10% of 160
        assert saved["label_names"] == ["ok", "toxic"] and len(saved["test_indices"]) == 16
        p = np.array(saved["probabilities"])
        assert p.shape == (16, 2) and np.allclose(p.sum(1), 1, atol=1e-6)
        # A two-class run decides at its threshold chosen on validation (run.json), kept in the file too.
        threshold = runs_module.decision_threshold(runs_module.read_info(row["run_dir"]))
        assert 0 < threshold < 1 and saved["threshold"] == row["threshold"] == threshold
        again = metrics.metrics(saved["labels"], metrics.decisions(p, threshold).tolist(), 2, p[:, 1].tolist())
        for k in ("accuracy", "macro_f1", "recall", "f1", "roc_auc", "confusion_matrix"):
            assert again[k] == row[k] or math.isnan(again[k]) and math.isnan(row[k]), k
        run = Path(row["run_dir"])
        summary = json.loads((run / "summary.json").read_text())
        info = runs_module.read_info(run)
        assert row["train_seconds"] == summary["wall_seconds"] and row["final_train_loss"] == summary["final_train_loss"]
        assert (row["params_total"], row["params_trainable"]) == (info["params_total"], info["params_trainable"])
        assert row["sentences_per_s"] > 0 and 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] and row["latency_n"] == 16
    teacher, lora_row = rows[0], rows[3]
    assert teacher["size_bytes"] == (runs["teacher"] / "model.safetensors").stat().st_size
    assert lora_row["size_bytes"] == (runs["lora"] / "adapter_model.safetensors").stat().st_size
    assert lora_row["params_trainable"] < lora_row["params_total"] == teacher["params_total"] + lora_row["params_trainable"] - 66
    assert teacher["accuracy"] >= 0.9  # it learned the give-away word: the upper reference


def test_report_tables(runs, reported):
    rows, out = reported
    with open(out / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["teacher", "odd", "odd-s1", "lora"]
    assert float(table[0]["accuracy"]) == rows[0]["accuracy"]
    assert json.loads(table[3]["confusion_matrix"]) == rows[3]["confusion_matrix"]
    summary = strict_json(out / "results.json")
    assert summary["test"]["n"] == 16 and summary["test"]["class_counts"] == [8, 8]
    assert [g["label"] for g in summary["groups"]] == ["teacher", "odd", "lora"]
    odd = summary["groups"][1]
    accs = [rows[1]["accuracy"], rows[2]["accuracy"]]
    assert odd["names"] == ["odd", "odd-s1"] and odd["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert odd["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    md = (out / "results.md").read_text()
    odd_line = next(line for line in md.splitlines() if line.startswith("| odd | 0, 1 |"))
    assert " ± " in odd_line
    assert "| teacher | 0 |" in md and "| lora | 0 |" in md
    for pair in ("odd − lora", "odd − teacher", "lora − teacher"):
        assert f"| {pair} |" in md
    assert "Conclusions, as far as the intervals allow" in md and "![training](training.png)" in md
    assert (out / "results.md").stat().st_mode & 0o044  # readable by others, not mkstemp's private 0600


def test_report_statistics_are_reproducible_from_the_prediction_files(reported):
    rows, out = reported
    summary = strict_json(out / "results.json")
    saved = {r["name"]: strict_json(out / r["predictions"]) for r in rows}
    labels = np.array(saved["teacher"]["labels"])
    preds = {n: metrics.decisions(s["probabilities"], s["threshold"]) for n, s in saved.items()}
    c = next(c for c in summary["comparisons"] if (c["a"], c["b"]) == ("odd", "teacher"))
    # The whole table is one family: every model, every pair, the clusters of the test texts as saved.
    models = {g["label"]: [preds[n] for n in g["names"]] for g in sorted(summary["groups"], key=lambda g: report.ORDER[g["method"]])}
    pairs = [(x["a"], x["b"]) for x in summary["comparisons"]]
    again = bootstrap.compare(labels, models, pairs, 2, saved["teacher"]["clusters"],
                              resamples=summary["settings"]["bootstrap_resamples"], seed=summary["settings"]["bootstrap_seed"])
    assert again[pairs.index(("odd", "teacher"))] == {k: c[k] for k in ("macro_f1", "accuracy")}
    assert summary["test"]["n_clusters"] == len(set(saved["teacher"]["clusters"])) == 16  # no group column: texts alone
    # McNemar pairs seed with seed: the teacher has seed 0 only.
    assert [(t["a"], t["b"]) for t in c["mcnemar"]] == [("odd", "teacher")]
    b, cc = metrics.disagreements(labels, preds["odd"], preds["teacher"])
    assert (c["mcnemar"][0]["only_a_right"], c["mcnemar"][0]["only_b_right"]) == (b, cc)
    assert c["mcnemar"][0]["p"] == metrics.mcnemar(b, cc)


def test_report_calibration_at_each_runs_temperature(reported):
    rows, out = reported
    md = (out / "results.md").read_text()
    assert "## Calibration" in md and "![precision-recall](precision-recall.png)" in md
    for row in rows:
        info = runs_module.read_info(row["run_dir"])
        saved = strict_json(out / row["predictions"])
        p, y = np.array(saved["probabilities"]), np.array(saved["labels"])
        t = info["temperatures"]["toxic"]
        assert row["temperature"] == t and row["val_ece"] == info["calibration"]["validation_ece"]["toxic"]["after"]
        # The saved probabilities are the calibrated ones: their ECE and average precision are the row's.
        assert row["ece"] == pytest.approx(calibration.ece(p[:, 1], y)) and row["ece"] == pytest.approx(info["test"]["ece"])
        assert row["average_precision"] == pytest.approx(calibration.average_precision(y, p[:, 1]))
        # ... and at T = 1 they are the model's own: undo the temperature in the logit and measure again.
        raw = 1 / (1 + np.exp(-np.log(p[:, 1] / p[:, 0]) * t))
        assert row["ece_before"] == pytest.approx(calibration.ece(raw, y), abs=1e-5)
        assert f"| {row['name']} | {row['group']} | {t:.3f} | {tables.fmt_num(row['val_ece_before'])} → " \
               f"{tables.fmt_num(row['val_ece'])} | {tables.fmt_num(row['ece_before'])} → {tables.fmt_num(row['ece'])} | " in md
    assert "| model | seeds | accuracy | precision | recall | F1 | macro-F1 | ROC-AUC | test ECE |" in md


def test_report_plots_are_pngs(reported):
    _, out = reported
    for name in ("metrics", "confusion", "training", "efficiency", "precision-recall"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_the_report_resamples_the_groups_of_a_split_by_group_column(tmp_path):
    # A CSV of 96 texts in 24 threads, split from Python by its group column; train.py trains on that split and
    # the report finds the groups again through the manifest: 24 clusters, one per thread, never one per text.
    import train

    path = tmp_path / "threads.csv"
    rows = [line.split(",") for line in write_toy_csv(tmp_path / "toy.csv", n=96).read_text().splitlines()]
    path.write_text("\n".join(",".join(r + ["thread" if i == 0 else str((i - 1) // 4)]) for i, r in enumerate(rows)) + "\n")
    manifest = splits.make_split(corpus.load_dataset(path, group_column="thread"), seed=0)
    splits.save_manifest(manifest, tmp_path / "split.json")
    train.main([str(a) for a in ["teacher", "--model", TINY, "--data", path, "--split", tmp_path / "split.json", "--epochs", 1,
                                 "--batch-size", 8, "--no-progress", "--threads", 1, "--out", tmp_path / "teacher"]])
    report.report([tmp_path / "teacher"], tmp_path / "report", device="cpu", resamples=20, draw=False, beyond=False)
    saved = strict_json(tmp_path / "report" / "predictions-teacher.json")
    threads = {i: i // 4 for i in range(96)}  # the dataset's positions: no text is dropped as a duplicate
    clusters = saved["clusters"]
    # Texts of one thread share a cluster, and no cluster holds two threads.
    assert len(set(clusters)) == len({threads[i] for i in saved["test_indices"]}) < len(clusters)
    assert all((clusters[a] == clusters[b]) == (threads[i] == threads[j]) for a, i in enumerate(saved["test_indices"])
               for b, j in enumerate(saved["test_indices"]))
    card = (tmp_path / "teacher" / "README.md").read_text()
    assert f"over {len(set(clusters))} groups of column 'thread' ({len(clusters)} test texts)" in card
    md = (tmp_path / "report" / "results.md").read_text()
    assert strict_json(tmp_path / "report" / "results.json")["test"]["clusters_of"] == "groups of column 'thread'"
    assert "A run calls a text *1* where its probability reaches the run's threshold, chosen on validation (teacher 0." in md


def test_report_without_matplotlib_still_writes_the_tables(runs, tmp_path, monkeypatch, capsys):
    # As if not installed: `import matplotlib...` raises ImportError, also for modules imported before.
    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    report.report([runs["teacher"]], tmp_path, device="cpu", resamples=10)
    assert "matplotlib is not installed: no plots" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions-teacher.json", "results.csv", "results.json", "results.md"]
    assert "## Differences" not in (tmp_path / "results.md").read_text()  # one model: nothing to compare


def constant_run(runs, where):
    """A copy of the teacher whose classifier says 'ok' to everything: the degenerate case, on purpose."""
    shutil.copytree(runs["teacher"], where)
    tensors = load_file(where / "model.safetensors")
    tensors["classifier.weight"] = torch.zeros_like(tensors["classifier.weight"])
    tensors["classifier.bias"] = torch.tensor([4.0, -4.0])
    save_file(tensors, where / "model.safetensors")
    return where


def test_report_on_a_model_that_never_predicts_toxic(runs, tmp_path):
    run = constant_run(runs, tmp_path / "runs" / "constant")
    (row,) = report.report([run], tmp_path / "report", device="cpu", draw=False)
    # 8 ok, 8 toxic, all called ok: accuracy 1/2, precision undefined, recall 0, F1 0, ok's F1 = 2*8/(16+8) = 2/3,
    # macro-F1 = 1/3; every text gets the same score: ROC-AUC 1/2.
    assert row["confusion_matrix"] == [[8, 0], [8, 0]] and row["accuracy"] == 0.5 and math.isnan(row["precision"])
    assert row["recall"] == 0 and row["f1"] == 0 and row["macro_f1"] == pytest.approx(1 / 3) and row["roc_auc"] == 0.5
    md = (tmp_path / "report" / "results.md").read_text()
    assert "| teacher | 0 | 0.5000 | n/a (never predicts toxic) | 0.0000 | 0.0000 | 0.3333 | 0.5000 |" in md
    assert "| constant | teacher | 0 | 8 0 / 8 0 |" in md
    table = list(csv.DictReader(open(tmp_path / "report" / "results.csv")))
    assert table[0]["precision"] == "" and strict_json(tmp_path / "report" / "results.json")["runs"][0]["precision"] is None


def test_cli_bare_form_writes_the_report_beside_the_runs(runs):
    done = subprocess.run([sys.executable, str(ROOT / "eval.py"), runs["odd"], runs["lora"], "--threads", "1",
                           "--resamples", "50", "--no-plots"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = runs["odd"].parent / "report"
    assert (out / "results.md").is_file() and (out / "predictions-lora.json").is_file()
    assert "| odd | 0 |" in done.stdout and "| odd − lora |" in (out / "results.md").read_text()


# -----------------------------------------------------------------------------
# predict


def first_test_text(runs):
    manifest = splits.load_manifest(runs["teacher"].parent / "split.json")
    dataset = corpus.load_dataset(runs_module.read_info(runs["teacher"])["data"],
                                  label_map={"ok": 0, "toxic": 1})
    test = splits.apply_split(dataset, manifest)["test"]
    return test.texts[0]


@pytest.mark.parametrize("name", ["teacher", "odd", "lora"])
def test_predict_agrees_with_the_report(runs, reported, name, capsys):
    rows, out = reported
    text = first_test_text(runs)
    E.main(["predict", "--run", str(runs[name]), "--precision", "fp32", "--json", text])
    got = json.loads(capsys.readouterr().out)
    saved = strict_json(out / f"predictions-{name}.json")["probabilities"][0]
    assert got["text"] == text and got["label"] == ["ok", "toxic"][int(np.argmax(saved))]
    assert got["probabilities"]["toxic"] == pytest.approx(saved[1], abs=2e-6)
    assert got["probability"] == max(got["probabilities"].values())


def test_predict_reads_stdin_one_text_per_line(runs, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("you are terrible\nwhat a great day\n"))
    E.main(["predict", "--run", str(runs["teacher"])])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["toxic", "ok"]
    assert [line.split("\t")[2] for line in lines] == ["you are terrible", "what a great day"]


# -----------------------------------------------------------------------------
# Bad input: one clear line each


def error_of(argv):
    with pytest.raises(SystemExit) as e:
        E.main([str(a) for a in argv])
    return str(e.value)


def test_empty_text_to_predict(runs, monkeypatch):
    assert error_of(["predict", "--run", runs["teacher"], "  "]).startswith("error: empty text to predict")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert error_of(["predict", "--run", runs["teacher"]]).startswith("error: empty text to predict")


def test_a_folder_that_is_not_a_run(tmp_path):
    assert error_of([tmp_path]) == f"error: {tmp_path}: not a run folder (no run.json); expected a folder written by train.py"
    (tmp_path / "run.json").write_text("{not json")
    assert error_of(["predict", "--run", tmp_path, "hi"]).startswith(f"error: {tmp_path / 'run.json'}: not valid JSON")


def test_a_run_without_its_model(runs, tmp_path):
    (tmp_path / "run").mkdir()
    shutil.copy(runs["teacher"] / "run.json", tmp_path / "run" / "run.json")
    msg = error_of([tmp_path / "run", "--out", tmp_path / "report"])
    assert msg.startswith(f"error: {tmp_path / 'run'}: no trained model") and "\n" not in msg
    shutil.copy(runs["teacher"] / "config.json", tmp_path / "run" / "config.json")
    msg = error_of(["predict", "--run", tmp_path / "run", "hi"])
    assert msg.startswith(f"error: {tmp_path / 'run'}: cannot load the trained model") and "model.safetensors: not found" in msg


def test_a_damaged_checkpoint(runs, tmp_path):
    run = tmp_path / "runs" / "broken"
    shutil.copytree(runs["teacher"], run)
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    msg = error_of([run, "--out", tmp_path / "report"])
    assert msg.startswith(f"error: {run}: cannot load the trained model") and "not a readable safetensors file" in msg
    lora_run = tmp_path / "runs" / "lora"
    shutil.copytree(runs["lora"], lora_run)
    (lora_run / "adapter_model.safetensors").unlink()
    assert "adapter_model.safetensors: not found" in error_of(["predict", "--run", lora_run, "hi"])


def test_runs_on_different_splits_are_refused(runs, tmp_path):
    other = tmp_path / "other" / "teacher"
    shutil.copytree(runs["teacher"], other)
    info = json.loads((other / "run.json").read_text())
    dataset = corpus.load_dataset(info["settings"]["data"], label_map={"ok": 0, "toxic": 1})
    manifest = splits.make_split(dataset, seed=7)
    splits.save_manifest(manifest, tmp_path / "other" / "split.json")
    info["settings"]["split"] = str(tmp_path / "other" / "split.json")
    info["results"]["split_sha256"] = manifest["manifest_sha256"]
    (other / "run.json").write_text(json.dumps(info))
    msg = error_of([runs["teacher"], other, "--out", tmp_path / "report"])
    assert msg.startswith(f"error: {other} and {runs['teacher']} were trained on different splits (split_sha256 ")
    assert "expected one test set for all" in msg
    assert not (tmp_path / "report").exists()  # refused before anything was written


def test_the_same_run_twice_is_refused(runs, tmp_path):
    assert error_of([runs["odd"], runs["odd"], "--out", tmp_path]) == f"error: {runs['odd']}: given twice; expected each run once"


# -----------------------------------------------------------------------------
# export: an int8 model


def test_int8_runs_join_the_report_and_the_efficiency_plot(runs, tmp_path):
    export.export_int8(runs["teacher"], tmp_path / "teacher-int8")
    rows = report.report([runs["teacher"], tmp_path / "teacher-int8"], tmp_path / "report", device="cpu", resamples=20, latency_n=5)
    assert [r["method"] for r in rows] == ["teacher", "teacher int8"]
    assert rows[1]["size_bytes"] < rows[0]["size_bytes"] and rows[1]["train_seconds"] == rows[0]["train_seconds"]
    assert "| teacher int8 | 0 |" in (tmp_path / "report" / "results.md").read_text()
    assert (tmp_path / "report" / "efficiency.png").read_bytes()[:4] == b"\x89PNG"


def test_export_cli(runs, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "eval.py"), "export", runs["teacher"], "--out", tmp_path / "q",
                           "--threads", "1", "--latency-sentences", "3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| fp32 |" in done.stdout and "Same label for" in done.stdout and (tmp_path / "q" / "model-int8.safetensors").is_file()
    done = subprocess.run([sys.executable, str(ROOT / "eval.py"), "export", tmp_path / "nothing"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "not a run folder (no run.json)" in done.stderr


# -----------------------------------------------------------------------------
# The Python API, labelling files, the model card


def test_bf16_report_is_close_to_fp32(runs, reported, tmp_path):
    rows, out = reported
    bf16 = report.report([runs["teacher"]], tmp_path, device="cpu", precision="bf16", resamples=20, latency_n=2, draw=False,
                         beyond=False)
    assert bf16[0]["computed_in"] == "bf16" and rows[0]["computed_in"] == "fp32"
    a = np.array(strict_json(out / "predictions-teacher.json")["probabilities"])
    b = np.array(strict_json(tmp_path / "predictions-teacher.json")["probabilities"])
    assert a.shape == b.shape and 0 < np.abs(a - b).max() < 0.02  # bf16 really ran, and rounds only


def test_classifier_api_agrees_with_the_report(runs, reported):
    from classifier import Classifier

    rows, out = reported
    text = first_test_text(runs)
    clf = Classifier.from_run(runs["lora"], device="cpu", precision="fp32")
    (result,) = clf.predict(text)  # a single string is a batch of one
    saved = strict_json(out / "predictions-lora.json")["probabilities"][0]
    assert clf.labels == ["ok", "toxic"] and result["text"] == text
    assert result["probabilities"]["toxic"] == pytest.approx(saved[1], abs=2e-6)
    assert result["label"] == ["ok", "toxic"][int(np.argmax(saved))] and result["score"] == max(result["probabilities"].values())
    batch = Classifier.from_run(runs["teacher"]).predict([text, "you are terrible", "what a great day"])
    assert [r["label"] for r in batch[1:]] == ["toxic", "ok"] and clf.predict_proba([]).shape == (0, 2)
    with pytest.raises(ValueError, match="torch sees no CUDA GPU") if not torch.cuda.is_available() else nullcontext():
        Classifier.from_run(runs["lora"], device="cuda")


def test_predict_labels_a_csv_and_a_jsonl_file(runs, tmp_path, capsys):
    rows = [{"id": "1", "body": "you are terrible"}, {"id": "2", "body": "  "}, {"id": "3", "body": "what a great day"}]
    with open(tmp_path / "in.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "body"])
        writer.writeheader()
        writer.writerows(rows)
    E.main(["predict", "--run", str(runs["teacher"]), "--input", str(tmp_path / "in.csv"), "--text-column", "body",
            "--output", str(tmp_path / "out.csv"), "--no-progress"])
    err = capsys.readouterr().err
    assert "labelled 2 of 3 rows" in err and "1 blank row(s) left without a label" in err
    out = list(csv.DictReader(open(tmp_path / "out.csv", newline="")))
    assert [r["id"] for r in out] == ["1", "2", "3"] and [r["label"] for r in out] == ["toxic", "", "ok"]
    assert float(out[0]["p_toxic"]) + float(out[0]["p_ok"]) == pytest.approx(1, abs=1e-5) and out[1]["score"] == ""
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    E.main(["predict", "--run", str(runs["teacher"]), "--input", str(tmp_path / "in.jsonl"), "--text-column", "body",
            "--output", str(tmp_path / "out.jsonl"), "--no-progress"])
    got = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert [r.get("label") for r in got] == ["toxic", None, "ok"] and got[0]["id"] == "1"
    assert "--text-column 'text': not a column of" in error_of(["predict", "--run", runs["teacher"], "--input",
                                                               tmp_path / "in.csv", "--output", tmp_path / "x.csv"])
    assert "the same file as --input" in error_of(["predict", "--run", runs["teacher"], "--input", tmp_path / "in.csv",
                                                   "--text-column", "body", "--output", tmp_path / "in.csv"])
    assert "--input needs --output" in error_of(["predict", "--run", runs["teacher"], "--input", tmp_path / "in.csv"])


def test_stdin_blank_lines_are_skipped_not_fatal(runs, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("you are terrible\n\nwhat a great day\n"))
    E.main(["predict", "--run", str(runs["teacher"])])
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "skipped 1 blank text" in captured.err


def test_behaviour_command_scores_runs_on_the_suite(runs, tmp_path, capsys):
    E.main(["behaviour", str(runs["teacher"]), "--out", str(tmp_path), "--device", "cpu"])
    out = capsys.readouterr().out
    assert f"{runs['teacher']}: toxic: mean pass rate" in out and "hate: mean pass rate" in out
    result = json.loads((tmp_path / "behaviour.json").read_text())[str(runs["teacher"])]
    assert set(result["summary"]) == {"toxic", "hate"} and len(result["functionalities"]) >= 20
    assert "| " in (tmp_path / "behaviour.md").read_text()


# -----------------------------------------------------------------------------
# Two questions, one model: the report per label, predict's decisions


@pytest.fixture(scope="module")
def two_label_runs(toy2, tmp_path_factory):
    import train

    root = tmp_path_factory.mktemp("two") / "runs"
    common = ["--batch-size", 8, "--no-progress", "--threads", 1, "--lr", 3e-3]
    train.main([str(a) for a in ["teacher", "--model", TINY, "--data", toy2, "--label-column", "toxic,hate",
                                 "--out", root / "teacher", "--epochs", 4, *common]])
    train.main([str(a) for a in ["distill", "--teacher", root / "teacher", "--out", root / "odd", "--epochs", 2, *common]])
    return root


def test_two_label_report_has_a_report_per_label(two_label_runs, tmp_path):
    rows = report.report([two_label_runs / "teacher", two_label_runs / "odd"], tmp_path, device="cpu", resamples=50)
    assert set(rows[0]["labels"]) == {"toxic", "hate"} and rows[0]["labels"]["hate"]["threshold"] > 0
    top = (tmp_path / "results.md").read_text()
    assert "[hate](hate/results.md)" in top and "hate: macro-F1" in top and "Beyond the test split" in top
    assert "hate: test ECE" in top and "[hate](hate/precision-recall.png)" in top
    assert (tmp_path / "hate" / "precision-recall.png").read_bytes()[:4] == b"\x89PNG"
    info = runs_module.read_info(two_label_runs / "teacher")
    assert rows[0]["labels"]["hate"]["temperature"] == info["temperatures"]["hate"]
    assert rows[0]["labels"]["hate"]["ece"] == pytest.approx(info["test"]["labels"]["hate"]["ece"])
    assert "## Calibration" in (tmp_path / "hate" / "results.md").read_text()
    hate = strict_json(tmp_path / "hate" / "results.json")
    # hate is annotated on every text; toxic on those whose cell is not empty: fewer.
    toxic = strict_json(tmp_path / "toxic" / "results.json")
    assert hate["test"]["n"] == 24 and toxic["test"]["n"] < 24
    assert [c["a"] + " − " + c["b"] for c in hate["comparisons"]] == ["odd − teacher"]
    assert "p_holm" in hate["comparisons"][0]["mcnemar"][0]


def test_two_label_predict_says_yes_or_no_to_each_label(two_label_runs, capsys):
    from classifier import Classifier

    clf = Classifier.from_run(two_label_runs / "teacher")
    got = clf.predict(["you are the vermin here", "you are an idiot", "what a good day"])
    assert [r["label"] for r in got] == ["hate", "toxic", "none"]
    assert got[0]["decisions"] == {"toxic": True, "hate": True} and got[2]["decisions"] == {"toxic": False, "hate": False}
    E.main(["predict", "--run", str(two_label_runs / "teacher"), "you are the vermin here"])
    line = capsys.readouterr().out.strip()
    assert line.startswith("hate\ttoxic=") and "hate=" in line and "*" in line


def test_predict_notes_cut_and_unknown_only_texts(runs, capsys):
    E.main(["predict", "--run", str(runs["teacher"]), "🙂🔥🙂", "you are " * 80])
    err = capsys.readouterr().err
    assert "1 text(s) are unknown tokens only" in err and "1 text(s) longer than 64 tokens were cut" in err


# -----------------------------------------------------------------------------
# A run folder keeps its word: exports in their own folder, unfinished runs named, labels of any run.json


def test_a_re_export_replaces_the_export_whole_and_only_when_done(runs, tmp_path, monkeypatch):
    out = tmp_path / "teacher-int8"
    E.main(["export", str(runs["teacher"]), "--out", str(out), "--no-measure"])
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert (out / "README.md").read_text().startswith("# teacher-int8: teacher int8")
    assert f'Classifier.from_run("{out}")' in (out / "README.md").read_text()  # the card names where it is, not the staging
    import card

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", "README.md")

    monkeypatch.setattr(card, "write_model_card", broken)  # the last file of the new export fails
    assert "nothing was exported" in error_of(["export", runs["teacher"], "--out", out, "--no-measure"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first  # the old export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher-int8"]  # and no staging left beside it
    monkeypatch.undo()
    E.main(["export", str(runs["teacher"]), "--out", str(out), "--no-measure"])
    assert sorted(p.name for p in out.iterdir()) == sorted(first) and (out / "summary.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teacher-int8"]


def unfinished_copy(run, where):
    """A copy of a run as Ctrl-C leaves it after epoch 1 of 3."""
    shutil.copytree(run, where)
    (where / "summary.json").unlink()
    runs_module.trim_log(where, step=runs_module.read_log(where)[1][0]["step"], epoch=1)
    info = json.loads((where / "run.json").read_text())
    info["settings"]["epochs"] = 3
    (where / "run.json").write_text(json.dumps(info))
    return where


def test_an_unfinished_run_says_so_in_every_output(runs, tmp_path, capsys):
    run = unfinished_copy(runs["teacher"], tmp_path / "runs" / "teacher")
    (tmp_path / "in.csv").write_text("text\nyou are terrible\n")
    E.main(["predict", "--run", str(run), "--allow-unfinished", "--input", str(tmp_path / "in.csv"),
            "--output", str(tmp_path / "out.csv"), "--no-progress"])
    assert [r["note"] for r in csv.DictReader(open(tmp_path / "out.csv"))] == ["unfinished, epoch 1 of 3"]
    E.main(["predict", "--run", str(run), "--allow-unfinished", "--json", "you are terrible"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["note"] == "unfinished, epoch 1 of 3"
    assert "note: " + str(run) + ": unfinished, epoch 1 of 3" in captured.err
    E.main(["behaviour", str(run), "--allow-unfinished", "--out", str(tmp_path / "b")])
    assert f"{run} (unfinished, epoch 1 of 3): toxic" in capsys.readouterr().out
    assert f"## {run} (unfinished, epoch 1 of 3)" in (tmp_path / "b" / "behaviour.md").read_text()
    rows = report.report([run, runs["teacher"]], tmp_path / "report", device="cpu", resamples=10, draw=False, beyond=False,
                         allow_unfinished=True)
    assert [r["group"] for r in rows] == ["teacher (unfinished, epoch 1 of 3)", "teacher"]  # not pooled as seeds
    assert "| teacher (unfinished, epoch 1 of 3) | 0 |" in (tmp_path / "report" / "results.md").read_text()
    from classifier import Classifier

    assert Classifier.from_run(run, allow_unfinished=True).unfinished == "unfinished, epoch 1 of 3"
    for argv in (["behaviour", run], ["beyond", run, "--out", tmp_path / "beyond"]):
        assert "unfinished, epoch 1 of 3" in error_of(argv)


def test_a_lora_run_whose_id2label_is_a_list(runs, tmp_path, capsys):
    run = tmp_path / "lora"
    shutil.copytree(runs["lora"], run)
    info = json.loads((run / "run.json").read_text())
    info["results"]["id2label"] = ["ok", "toxic"]
    (run / "run.json").write_text(json.dumps(info))
    E.main(["predict", "--run", str(run), "you are terrible"])
    E.main(["predict", "--run", str(runs["lora"]), "you are terrible"])
    listed, named = capsys.readouterr().out.splitlines()
    assert listed == named and listed.split("\t")[0] in ("ok", "toxic")  # the same answer, by the same names


@pytest.mark.parametrize("argv, where, message", [
    (["predict", "--run", "{teacher}", "you are terrible"], ("classifier", "predict_probs"),
     "error: interrupted; only the texts printed above (if any) were labelled"),
    (["behaviour", "{teacher}"], ("behaviour", "run_suite"), "error: interrupted; the behaviour suite was not finished"),
    (["beyond", "{teacher}", "--out", "{tmp}/beyond"], ("behaviour", "run_suite"),
     "error: interrupted; the scores beyond the test split were not finished"),
])
def test_ctrl_c_in_every_command_is_one_line(runs, tmp_path, monkeypatch, argv, where, message):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(where[0]), where[1], interrupted)
    assert error_of([a.format(teacher=runs["teacher"], tmp=tmp_path) for a in argv]) == message


@pytest.mark.parametrize("command", ["behaviour", "beyond"])
def test_a_full_disk_in_every_command_is_one_line(runs, tmp_path, monkeypatch, command):
    import files

    real = files.atomic_write

    def full(path, write):
        return real(path, lambda tmp: (_ for _ in ()).throw(OSError(28, "No space left on device")))

    monkeypatch.setattr(files, "atomic_write", full)
    message = error_of([command, runs["teacher"], "--out", tmp_path / "out"])
    assert message.startswith(f"error: {tmp_path / 'out'}/") and message.endswith(": no space left on device")
