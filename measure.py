"""
Measuring a run on its held-out test split: quality, size on disk, speed; and the int8 export
measured beside its fp32 source.

    evaluate_run(run_dir, info, test)   (one report row, test probabilities): what report.py tabulates
    measure_export(run, int8_run)       fp32 vs int8 on the test split: export.md / .json

Read top to bottom:
  1. speed: one pass over the test texts, and the latency of one sentence;
  2. one run on the test split: its scores, size and cost in one row;
  3. the int8 export measured beside its fp32 original.
"""

import json
import time
from pathlib import Path

import numpy as np
import torch

import batching
import calibration
import classifier
import files
import metrics
import model as M
import naming
import precision as P
import runs
import wordpiece
from tables import fmt_bytes, fmt_num, json_safe, markdown_table

# -----------------------------------------------------------------------------
# 1. Speed


@torch.no_grad()
def timed_predict(net, loader):
    """(logits, seconds) of one pass over the loader, after one warm-up batch."""
    device = classifier.device_of(net)
    warm = loader.collate(list(range(min(len(loader.ids), loader.sampler.batch_size))))
    net(*(warm[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
    classifier.sync(device)
    t0 = time.perf_counter()
    logits = classifier.predict_logits(net, loader)
    classifier.sync(device)
    return logits, time.perf_counter() - t0


@torch.no_grad()
def latencies_ms(net, tokenizer, texts, max_length, warmup=3):
    """Milliseconds to label one sentence, tokenizing included: what a single request waits."""
    device = classifier.device_of(net)
    out = []
    for i, text in enumerate([texts[0]] * warmup + list(texts)):
        t0 = time.perf_counter()
        batch = wordpiece.encode(tokenizer, [text], max_length)
        net(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
        classifier.sync(device)
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
    return out


# -----------------------------------------------------------------------------
# 2. One run on the held-out test split: quality, size, speed


def evaluate_run(run_dir, info, test, *, device="cpu", precision="auto", batch_size=64, latency_n=50, fast=True):
    """(one report row, test probabilities (N, C) as numpy) for a run, computed in `precision` (precision.py)."""
    net, tokenizer, _ = runs.load_run(run_dir)
    if info.get("quantized"):
        device = torch.device("cpu")  # int8 kernels are CPU kernels
    choice = P.choose(precision, device, fast=fast, config=net.config)
    P.prepare(net, choice, inference=True)
    num_classes = net.config.num_labels
    if num_classes != len(test.label_names):
        raise runs.RunError(f"{run_dir}: the model has {num_classes} classes, its test data {len(test.label_names)}; "
                       "expected the same")
    net.to(device)
    max_length = info.get("max_length", 128)
    logits, seconds = timed_predict(net, batching.Loader(test.texts, test.labels, tokenizer, max_length, batch_size,
                                                         by_length=True))
    lat = latencies_ms(net, tokenizer, test.texts[:latency_n], max_length)
    # The probabilities at the run's temperatures, as Classifier gives them; and at T = 1, for the ECE before.
    probs = calibration.probabilities(logits, test.multilabel, classifier.run_temperatures(net, info)).numpy()
    raw = calibration.probabilities(logits, test.multilabel).numpy()
    if test.multilabel:  # each label at its threshold on the texts that annotate it; the mean over labels
        m = metrics.multilabel_metrics(test.labels, probs, test.label_names, info.get("thresholds"))
    else:  # two classes at the run's threshold chosen on validation; older runs and more classes by argmax
        threshold = runs.decision_threshold(info)
        m = metrics.metrics(test.labels, metrics.decisions(probs, threshold).tolist(), num_classes,
                            probs[:, 1].tolist() if num_classes == 2 else None)
        m["threshold"] = threshold
    add_calibration(m, info, probs, raw, test)
    _, epochs = runs.read_log(run_dir)
    train_seconds, final_loss = runs.training_cost(run_dir, epochs)
    total, trainable = M.count_parameters(net)
    row = {"run_dir": str(run_dir), "method": naming.method_label(info), "seed": info.get("seed"), "device": str(device),
           "computed_in": P.computed_in(net, choice), **m,
           "label_names": list(test.label_names),
           "params_total": info.get("params_total", total), "params_trainable": info.get("params_trainable", trainable),
           "size_bytes": runs.weights_file(run_dir).stat().st_size, "train_seconds": train_seconds, "final_train_loss": final_loss,
           "sentences_per_s": len(test) / seconds, "throughput_batch_size": batch_size,
           "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
           "latency_n": len(lat)}
    return row, probs


def add_calibration(m, info, probs, raw, test):
    """Calibration into the scores m (multi-label: into each label's, m["labels"][label]): the
    "temperature", the ECE of the test probabilities at it ("ece") and at T = 1 ("ece_before"), the
    validation ECE after and before it that training recorded ("val_ece", "val_ece_before"), and for a
    yes/no question the "average_precision" of its probability (calibration.py)."""
    names, labels = test.label_names, np.asarray(test.labels)
    recorded = (info.get("calibration") or {}).get("validation_ece", {})
    temperatures = calibration.per_column(info.get("temperatures"), names, test.multilabel)
    after, before = (calibration.ece_of(p, labels, names, test.multilabel) for p in (probs, raw))

    def scores(name, t):
        return {"temperature": t, "ece": after[name], "ece_before": before[name],
                "val_ece": recorded.get(name, {}).get("after"), "val_ece_before": recorded.get(name, {}).get("before")}

    if test.multilabel:
        for j, name in enumerate(names):
            m["labels"][name].update(scores(name, temperatures[j]),
                                     average_precision=calibration.average_precision(labels[:, j], probs[:, j]))
        return
    m.update(scores(next(iter(after)), temperatures[0]))  # class 1's yes, or the most probable class
    if len(names) == 2:
        m["average_precision"] = calibration.average_precision((labels == 1).astype(int), probs[:, 1])


# -----------------------------------------------------------------------------
# 3. The int8 export, measured beside its fp32 original


def measure_export(run_dir, int8_dir, *, batch_size=64, latency_n=50):
    """Both models on the source run's test split, on the CPU: size, speed, quality and how often they
    agree; written to <int8_dir>/export.md and export.json, and returned."""
    info, record = runs.read_info(run_dir), runs.read_info(int8_dir)
    test, _, _ = runs.load_test_split(run_dir, info)
    fp32, p32 = evaluate_run(run_dir, info, test, device="cpu", precision="fp32", batch_size=batch_size, latency_n=latency_n)
    int8, p8 = evaluate_run(int8_dir, record, test, device="cpu", batch_size=batch_size, latency_n=latency_n)
    # The size of a deployable fp32 model: a LoRA run's file holds only the adapter.
    net = runs.plain_model(runs.load_run(run_dir, merge=False)[0])
    fp32["size_bytes"] = sum(v.numel() * v.element_size() for v in net.state_dict().values())
    same, max_diff = metrics.same_decisions(p32, fp32.get("threshold"), p8, int8.get("threshold"))
    result = {"fp32": fp32, "int8": int8, "agreement": float(same.mean()), "max_abs_prob_diff": max_diff, "n": len(test)}
    lines = [[name, fmt_bytes(r["size_bytes"]), f"{r['sentences_per_s']:.0f}", f"{r['latency_p50_ms']:.1f}",
              fmt_num(r["accuracy"]), fmt_num(r["macro_f1"])] for name, r in (("fp32", fp32), ("int8", int8))]
    table = markdown_table(["model", "weights", "sentences/s", "latency p50 (ms)", "accuracy", "macro-F1"], lines)
    text = (f"# {run_dir} as int8\n\n{table}\n\nOn {len(test)} test texts, CPU, {torch.get_num_threads()} threads. "
            f"Same label for {result['agreement']:.2%} of them; largest probability difference "
            f"{result['max_abs_prob_diff']:.4f}.\n")
    files.write_text(Path(int8_dir) / "export.md", text)
    files.write_text(Path(int8_dir) / "export.json", json.dumps(json_safe(result), indent=2) + "\n")
    print(text)
    return result
