"""
Evaluation: the held-out test set, every number of the comparison, and predictions with a run.

    python eval.py runs/quick/teacher runs/quick/odd runs/quick/even runs/quick/lora   # -> runs/quick/report/
    python eval.py report RUN_DIR [RUN_DIR ...] --out DIR                               # the same, spelled out
    python eval.py predict --run runs/quick/lora "you are awesome"                      # or texts on stdin
    python eval.py export runs/quick/odd                                                # -> runs/quick/odd-int8/

Read top to bottom:
  1. metrics (accuracy, precision/recall/F1, macro-F1, ROC-AUC), written out by hand, with the
     degenerate cases (a model that never predicts a class) said, not hidden;
  2. loading a run folder written by train.py, and predicting with it;
  3. one run on the test split of its manifest: quality, size on disk, speed;
  4. statistics: mean ± std over seeds, a paired bootstrap interval, McNemar's test;
  5. the report: results.md, results.csv, results.json and per-example predictions;
  6. plots (matplotlib is optional: without it the tables are still written);
  7. export: an int8 model for CPU inference (quantize.py), measured beside its fp32 original;
  8. the command line.
"""

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import data
import files
import distill
import lora
import model as M
import quantize

# -----------------------------------------------------------------------------
# 1. Metrics (no sklearn: each is a few lines, and the degenerate cases are said, not hidden)


def confusion_matrix(labels, preds, num_classes):
    """cm[true][pred] counts."""
    cm = [[0] * num_classes for _ in range(num_classes)]
    for y, p in zip(labels, preds, strict=True):
        cm[int(y)][int(p)] += 1
    return cm


def safe_div(a, b):
    # Undefined (0/0) is reported as NaN rather than silently as 0: a model that never
    # predicts a class has no precision for it, and the report says so.
    return a / b if b else float("nan")


def class_scores(cm, c):
    """precision, recall, F1 of class c. F1 is 0 when the class exists but is never found."""
    tp = cm[c][c]
    predicted = sum(row[c] for row in cm)
    actual = sum(cm[c])
    precision, recall = safe_div(tp, predicted), safe_div(tp, actual)
    if tp == 0:
        f1 = 0.0 if predicted + actual else float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def roc_auc(labels, scores):
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties half."""
    pairs = sorted(zip(scores, labels, strict=True))
    n_pos = sum(1 for y in labels if y == 1)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    # Rank-sum (Mann-Whitney U) with average ranks for tied scores.
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1] == 1)
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def metrics(labels, preds, num_classes, pos_scores=None):
    """
    Accuracy, macro-F1 (the mean F1 over the classes that occur in labels or preds), the F1 of every
    class, and for two classes the precision/recall/F1 of class 1 (toxic / hate) and ROC-AUC.
    """
    cm = confusion_matrix(labels, preds, num_classes)
    per_class = [class_scores(cm, c) for c in range(num_classes)]
    f1s = [f for _, _, f in per_class if not math.isnan(f)]
    out = {
        "n": len(labels),
        "accuracy": safe_div(sum(cm[c][c] for c in range(num_classes)), len(labels)),
        "macro_f1": sum(f1s) / len(f1s) if f1s else float("nan"),
        "f1_per_class": [f for _, _, f in per_class],
        "confusion_matrix": cm,
    }
    if num_classes == 2:
        out["precision"], out["recall"], out["f1"] = per_class[1]
        if pos_scores is not None:
            out["roc_auc"] = roc_auc(labels, pos_scores)
    return out


# -----------------------------------------------------------------------------
# 2. Loading a run and predicting


class RunError(ValueError):
    pass


def read_run_info(run_dir, required=()):
    """run.json of a run folder, with the `required` fields checked present."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no run.json); expected a folder written by train.py")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e}); expected the settings train.py wrote") from None
    if not isinstance(info, dict):
        raise RunError(f"{path}: a JSON {type(info).__name__}, expected an object of settings")
    missing = [f for f in required if f not in info]
    if missing:
        raise RunError(f"{path}: missing field {missing[0]!r}; expected run.json as written by train.py")
    return info


def is_lora_run(run_dir):
    return (Path(run_dir) / lora.CONFIG_NAME).is_file()


def load_run(run_dir, merge=True, verbose=False):
    """
    (model, tokenizer, run_info) for a run folder written by train.py: a full checkpoint
    (teacher, student), a LoRA adapter on its base model (merged for inference by default),
    or an int8 model written by `eval.py export` (CPU only).
    """
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    if not is_lora_run(run_dir) and not (run_dir / "config.json").is_file():
        raise RunError(f"{run_dir}: no trained model (neither config.json + model.safetensors nor "
                       f"{lora.CONFIG_NAME}); expected a run that finished at least one epoch")
    try:
        if is_lora_run(run_dir):
            # A LoRA run holds only the adapter: load its base model, then the adapter onto it.
            base = lora.read_adapter_config(run_dir)["base_model_name_or_path"]
            net = M.from_pretrained(base, id2label=info.get("id2label"), verbose=verbose)
            lora.load_adapter(net, run_dir, base)
            if merge:
                lora.merge_all(net)
        elif quantize.is_quantized_dir(run_dir):
            net = quantize.load_quantized(run_dir)
        else:
            net = M.from_pretrained(str(run_dir), verbose=verbose)
        tokenizer = data.load_tokenizer(run_dir)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise RunError(f"{run_dir}: cannot load the trained model ({e})") from None
    return net.eval(), tokenizer, info


def device_of(net):
    return next(net.parameters()).device


def sync(device):
    # CUDA runs asynchronously: a clock read right after a launch measures the launch, not the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict(net, loader):
    """Class probabilities (N, C) on the CPU, in the order of the loader's texts."""
    net.eval()
    device = device_of(net)
    probs = torch.empty(len(loader.ids), net.config.num_labels)
    for batch in loader:
        logits = net(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids"))).logits
        probs[batch["index"]] = torch.softmax(logits.float(), dim=-1).cpu()
    return probs


def evaluate(net, loader, labels, num_classes):
    probs = predict(net, loader)
    preds = probs.argmax(-1).tolist()
    return metrics(labels, preds, num_classes, probs[:, 1].tolist() if num_classes == 2 else None)


# -----------------------------------------------------------------------------
# 3. One run on the held-out test split: quality, size, speed


def teacher_depth(info):
    """Layers of the teacher a student was cut from, or None when its run folder is not at hand."""
    try:
        return json.loads((Path(info["teacher"]) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    except (KeyError, TypeError, OSError, ValueError):
        return None


def method_label(info):
    """How a run is named in the report: teacher, odd, even, bottom, top, 'auto (1,2,12)',
    'layers 1,2,12', lora, 'lora on odd'; ' int8' after an exported int8 model."""
    label = str(info.get("method"))
    if info.get("method") == "distill":
        label = student_label(info)
    elif info.get("method") == "lora" and info.get("base"):
        try:
            label = "lora on " + method_label(read_run_info(info["base"]))
        except RunError:  # the base moved away: name it by its folder
            label = "lora on " + Path(info["base"]).name
    return label + (" int8" if info.get("quantized") else "")


def student_label(info):
    layers = list(info.get("teacher_layers") or [])
    spelled = str(info.get("layers", ""))
    if spelled.startswith("auto"):
        return f"auto ({','.join(map(str, layers))})"
    depth = teacher_depth(info)
    named = ("odd", "even", "bottom", "top")
    if depth is None:  # the teacher moved away: trust the spelling
        return spelled if spelled in named else "layers " + ",".join(map(str, layers))
    # The run's own word first: with a 2-layer teacher, bottom is also odd.
    for name in sorted(named, key=lambda n: n != spelled):
        if distill.parse_layers(name, depth) == layers:
            return name
    return "layers " + ",".join(map(str, layers))


def find_manifest(run_dir, info):
    written = Path(info["split"])
    # run.json keeps the path as train.py was given it, relative to where it ran; the default
    # place of the manifest is beside the run folders, so look there too.
    for path in (written, Path(run_dir).parent / written.name):
        if path.is_file():
            return path
    raise RunError(f"{run_dir}: split manifest {written} not found (nor {Path(run_dir).parent / written.name}); "
                   "expected the manifest the run was trained on")


def load_test_split(run_dir, info):
    """(test Dataset, manifest path, manifest): the held-out part of the run's data, as its manifest says."""
    if info.get("data_mirror"):
        os.environ["NANOBERT_DATA"] = str(info["data_mirror"])  # as train.py does
    path = find_manifest(run_dir, info)
    manifest = data.load_manifest(path)
    if manifest["manifest_sha256"] != info["split_sha256"]:
        raise RunError(f"{path}: sha256 {manifest['manifest_sha256'][:12]}…, but {run_dir} was trained on split "
                       f"{info['split_sha256'][:12]}…; expected the run's own manifest")
    label_map = info.get("label_map")
    label_map = json.loads(label_map) if isinstance(label_map, str) else label_map
    dataset = data.load_dataset(info["data"], three_class=info.get("three_class", False),
                                normalize=info.get("normalize", True), text_column=info.get("text_column", "text"),
                                label_column=info.get("label_column", "label"), label_map=label_map)
    # max_train / max_val only ever limited training and validation: the test part is always whole.
    return data.apply_split(dataset, manifest)["test"], path, manifest


def weights_file(run_dir):
    """The file that holds what the run trained: the LoRA adapter, the whole checkpoint, or its int8 copy."""
    if quantize.is_quantized_dir(run_dir):
        return Path(run_dir) / quantize.WEIGHTS_NAME
    return Path(run_dir) / (lora.WEIGHTS_NAME if is_lora_run(run_dir) else "model.safetensors")


def read_log(run_dir):
    """(step records, epoch records) of metrics.jsonl; a line cut short by a killed run is skipped."""
    steps, epochs = [], []
    path = Path(run_dir) / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "val_macro_f1" in record:
            epochs.append(record)
        elif "loss" in record:
            steps.append(record)
    return steps, epochs


def training_cost(run_dir, epochs):
    """(seconds, final training loss) from summary.json, or from the log of an unfinished run."""
    try:
        summary = json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
        return summary.get("wall_seconds"), summary.get("final_train_loss")
    except (OSError, ValueError):
        if not epochs:
            return None, None
        return sum(e.get("epoch_seconds", 0) for e in epochs), epochs[-1].get("train_loss")


@torch.no_grad()
def timed_predict(net, loader):
    """(probabilities, seconds) of one pass over the loader, after one warm-up batch."""
    device = device_of(net)
    warm = loader.collate(list(range(min(len(loader.ids), loader.sampler.batch_size))))
    net(*(warm[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
    sync(device)
    t0 = time.perf_counter()
    probs = predict(net, loader)
    sync(device)
    return probs, time.perf_counter() - t0


@torch.no_grad()
def latencies_ms(net, tokenizer, texts, max_length, warmup=3):
    """Milliseconds to label one sentence, tokenizing included: what a single request waits."""
    device = device_of(net)
    out = []
    for i, text in enumerate([texts[0]] * warmup + list(texts)):
        t0 = time.perf_counter()
        batch = data.encode(tokenizer, [text], max_length)
        net(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
        sync(device)
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
    return out


def evaluate_run(run_dir, info, test, *, device="cpu", batch_size=64, latency_n=50):
    """(one report row, test probabilities (N, C) as numpy) for a run."""
    net, tokenizer, _ = load_run(run_dir)
    if quantize.is_quantized_dir(run_dir):
        device = torch.device("cpu")  # int8 kernels are CPU kernels
    num_classes = net.config.num_labels
    if num_classes != len(test.label_names):
        raise RunError(f"{run_dir}: the model has {num_classes} classes, its test data {len(test.label_names)}; "
                       "expected the same")
    net.to(device)
    max_length = info.get("max_length", 128)
    probs, seconds = timed_predict(net, data.Loader(test.texts, test.labels, tokenizer, max_length, batch_size))
    lat = latencies_ms(net, tokenizer, test.texts[:latency_n], max_length)
    probs = probs.numpy()
    m = metrics(test.labels, probs.argmax(1).tolist(), num_classes, probs[:, 1].tolist() if num_classes == 2 else None)
    _, epochs = read_log(run_dir)
    train_seconds, final_loss = training_cost(run_dir, epochs)
    total, trainable = M.count_parameters(net)
    row = {"run_dir": str(run_dir), "method": method_label(info), "seed": info.get("seed"), "device": str(device), **m,
           "label_names": list(test.label_names),
           "params_total": info.get("params_total", total), "params_trainable": info.get("params_trainable", trainable),
           "size_bytes": weights_file(run_dir).stat().st_size, "train_seconds": train_seconds, "final_train_loss": final_loss,
           "sentences_per_s": len(test) / seconds, "throughput_batch_size": batch_size,
           "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
           "latency_n": len(lat)}
    return row, probs


# -----------------------------------------------------------------------------
# 4. Statistics: seeds, paired bootstrap, McNemar


def mean_std(values):
    """(mean, sample standard deviation; 0 for one value) of the defined (non-NaN, non-None) values."""
    v = [float(x) for x in values if x is not None and not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def bootstrap_weights(n, resamples=1000, seed=0):
    """(resamples, n) counts: how often each test example is drawn in each resample (n draws with replacement)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    # Counting with one bincount: draw j of resample b lands in cell b * n + draws[b, j].
    flat = (draws + np.arange(resamples)[:, None] * n).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def weighted_scores(weights, labels, preds, num_classes):
    """
    Accuracy and macro-F1 of preds under each row of weights (B, N): all resamples at once, as matrix
    products. F1 = 2 TP / (predicted + actual), equal to 2PR/(P+R), and, like metrics(), undefined
    (left out of the macro mean) for a class neither present nor predicted in a resample.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    accuracy = weights @ (preds == labels) / weights.sum(1)
    f1 = np.empty((num_classes, len(weights)))
    for c in range(num_classes):
        tp = weights @ ((preds == c) & (labels == c))
        both = weights @ (preds == c) + weights @ (labels == c)
        f1[c] = np.where(both > 0, 2 * tp / np.maximum(both, 1), np.nan)
    return {"accuracy": accuracy, "macro_f1": np.nanmean(f1, axis=0)}


def paired_bootstrap(labels, preds_a, preds_b, num_classes, weights):
    """
    Difference A - B of accuracy and macro-F1, with its 95% percentile interval over resamples of the
    test examples. preds_a, preds_b: lists of prediction arrays, one per seed; a model's score is the
    mean over its seeds. Both models are scored on the same resamples: that is the pairing.
    """
    def score(preds_list, w):
        per_seed = [weighted_scores(w, labels, p, num_classes) for p in preds_list]
        return {k: np.mean([s[k] for s in per_seed], axis=0) for k in ("accuracy", "macro_f1")}

    full = np.ones((1, len(labels)))
    point_a, point_b = score(preds_a, full), score(preds_b, full)
    boot_a, boot_b = score(preds_a, weights), score(preds_b, weights)
    out = {}
    for k in ("accuracy", "macro_f1"):
        low, high = np.percentile(boot_a[k] - boot_b[k], [2.5, 97.5])
        out[k] = {"diff": float(point_a[k][0] - point_b[k][0]), "low": float(low), "high": float(high)}
    return out


def mcnemar(b, c):
    """
    Exact two-sided McNemar p-value. b: examples only model A gets right, c: only B. If both models
    were equally good, each of the b + c disagreements would go either way with probability 1/2.
    """
    n, k = b + c, min(b, c)
    # 2 * P(X <= k), X ~ Binomial(n, 1/2), summed in whole numbers: exact for any n, one rounding at the end.
    term = tail = 1
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1) from C(n, i)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def disagreements(labels, preds_a, preds_b):
    """(b, c): examples only A gets right, only B gets right."""
    labels, a, b = np.asarray(labels), np.asarray(preds_a), np.asarray(preds_b)
    return int(((a == labels) & (b != labels)).sum()), int(((a != labels) & (b == labels)).sum())


def conclusion(name_a, name_b, metric, d):
    """A sentence that claims no more than the interval allows."""
    interval = f"{name_a} − {name_b} = {d['diff']:+.4f}, 95% CI [{d['low']:+.4f}, {d['high']:+.4f}]"
    if d["low"] <= 0 <= d["high"]:
        return f"{name_a} and {name_b} do not differ significantly in {metric} (the interval contains 0: {interval})"
    return f"{name_a if d['low'] > 0 else name_b} is better in {metric} ({interval})"


# -----------------------------------------------------------------------------
# 5. The report

# Settings that may differ between runs of one arm of the comparison: the seed (what replicates
# vary), where files were, and how the run was executed. Runs that agree on everything else are
# seeds of one model; the table shows their mean ± std.
NOT_THE_MODEL = {"seed", "run_dir", "command", "split", "teacher", "data_mirror", "preset", "progress", "resume",
                 "threads", "device", "torch", "world_size", "checkpoint_every", "log_every", "eval_batch_size",
                 "base_model", "base", "source_run", "importance_seconds", "layer_importance", "layer_ranking"}


def model_key(info):
    """What makes a run's model: its settings less NOT_THE_MODEL and less what does not apply to it
    (a setting that is None, the model of a LoRA run on a trained base, importance_texts unless
    the layers were chosen by importance), so that runs of older versions still group with new ones."""
    key = {k: v for k, v in info.items() if k not in NOT_THE_MODEL and v is not None}
    if info.get("base"):
        key.pop("model", None)  # the base run's folder: differs seed by seed
    if not str(info.get("layers", "")).startswith("auto") or info.get("method") != "distill":
        key.pop("importance_texts", None)
    return json.dumps(key, sort_keys=True, default=str)
ORDER = {"distill": 0, "lora": 1, "teacher": 2}  # comparisons read student - LoRA, student - teacher, LoRA - teacher


def group_runs(infos, names):
    """[{'label', 'method', 'names'}]: runs that differ only in NOT_THE_MODEL, in the order given."""
    groups = {}
    for info, name in zip(infos, names, strict=True):
        key = model_key(info)
        groups.setdefault(key, {"label": method_label(info), "method": info["method"], "names": [], "settings": info})
        groups[key]["names"].append(name)
    groups = list(groups.values())
    # Two arms of one method (say teachers at two learning rates) get the settings that tell them apart.
    for g in groups:
        same = [h["settings"] for h in groups if method_label(h["settings"]) == method_label(g["settings"])]
        if len(same) > 1:
            keys = sorted(k for k in set().union(*same) - NOT_THE_MODEL
                          if len({json.dumps(s.get(k), default=str) for s in same}) > 1)
            g["label"] += " (" + ", ".join(f"{k}={g['settings'].get(k)}" for k in keys[:3]) + ")"
    return [{k: v for k, v in g.items() if k != "settings"} for g in groups]


def run_names(run_dirs):
    """A short unique name per run folder: its name, with its parent's where two share one."""
    names = [d.name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{d.parent.name}-{d.name}" for d in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    return ["".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in n) for n in names]


def fmt_num(x, spec=".4f"):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def fmt_bytes(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def fmt_seconds(s):
    return "n/a" if s is None else f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def why_undefined(row, key):
    """Why a score is undefined (NaN), in words."""
    positive = row["label_names"][1] if len(row["label_names"]) > 1 else "1"
    return {"precision": f"never predicts {positive}", "recall": f"no {positive} in the test set",
            "f1": f"no {positive} in the test set, none predicted", "roc_auc": "one class in the test set"}.get(key, "undefined")


# (header, row key, how to show one value, mean ± std over seeds?)
SCORE_COLUMNS = [("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
                 ("macro-F1", "macro_f1"), ("ROC-AUC", "roc_auc")]
COST_COLUMNS = [("params", "params_total", lambda v: f"{v:,}", False),
                ("trainable", "params_trainable", lambda v: f"{v:,}", False),
                ("size on disk", "size_bytes", fmt_bytes, False),
                ("train time", "train_seconds", fmt_seconds, True),
                ("final train loss", "final_train_loss", lambda v: f"{v:.4f}", True),
                ("sentences/s", "sentences_per_s", lambda v: f"{v:,.0f}", True),
                ("latency p50", "latency_p50_ms", lambda v: f"{v:.1f} ms", True),
                ("latency p95", "latency_p95_ms", lambda v: f"{v:.1f} ms", True)]


def cell(rows, key, show, spread=True):
    """One table cell: the value, or mean ± std over the rows (seeds), saying what is undefined."""
    values = [r.get(key) for r in rows]
    defined = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not defined:
        return f"n/a ({why_undefined(rows[0], key)})"
    if len(defined) == 1 or not spread and len(set(defined)) == 1:
        text = show(defined[0])
    else:
        mean, std = mean_std(defined)
        text = f"{show(mean)} ± {show(std)}"
    if len(defined) < len(values):
        text += f" (n/a in {len(values) - len(defined)} of {len(values)} seeds: {why_undefined(rows[0], key)})"
    return text


def confusion_text(cm):
    return " / ".join(" ".join(str(x) for x in row) for row in cm)


def markdown_table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(str(x) for x in line) + " |" for line in lines])


def table_columns(num_classes):
    scores = SCORE_COLUMNS if num_classes == 2 else [c for c in SCORE_COLUMNS if c[1] in ("accuracy", "macro_f1")]
    return [(h, k, fmt_num, True) for h, k in scores] + COST_COLUMNS


def write_text(path, text):
    files.atomic_write(path, lambda p: Path(p).write_text(text, encoding="utf-8"))


def json_safe(x):
    """NaN is not JSON: write null (the tables say why)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def report(run_dirs, out_dir, *, device="auto", batch_size=64, latency_n=50, resamples=1000, seed=0, plots=True):
    """
    Evaluate every run on the test split they share, write results.md / .csv / .json, one
    predictions-<name>.json per run and the plots into out_dir; return the rows (one per run).
    """
    run_dirs, out_dir = [Path(d) for d in run_dirs], Path(out_dir)
    if not run_dirs:
        raise RunError("no run folders given; expected at least one folder written by train.py")
    for i, d in enumerate(run_dirs):
        if d.resolve() in [e.resolve() for e in run_dirs[:i]]:
            raise RunError(f"{d}: given twice; expected each run once")
    # Everything that can be refused is refused before the first model is loaded.
    infos = [read_run_info(d, required=("method", "data", "split", "split_sha256")) for d in run_dirs]
    for d, info in zip(run_dirs, infos, strict=True):
        if info["split_sha256"] != infos[0]["split_sha256"]:
            raise RunError(f"{d} and {run_dirs[0]} were trained on different splits (split_sha256 "
                           f"{info['split_sha256'][:12]}… vs {infos[0]['split_sha256'][:12]}…); expected one test set for all")
    test, manifest_path, manifest = load_test_split(run_dirs[0], infos[0])
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    names = run_names(run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows, probs = [], {}
    for d, info, name in zip(run_dirs, infos, names, strict=True):
        print(f"evaluating {name} ({d}) on {len(test)} test texts")
        row, probs[name] = evaluate_run(d, info, test, device=device, batch_size=batch_size, latency_n=latency_n)
        row = {"name": name, **row, "predictions": f"predictions-{name}.json"}
        rows.append(row)
        record = {"name": name, "run_dir": str(d), "method": row["method"], "seed": row["seed"],
                  "split_sha256": info["split_sha256"], "test_indices": manifest["indices"]["test"],
                  "label_names": test.label_names, "labels": test.labels, "probabilities": probs[name].tolist()}
        write_text(out_dir / row["predictions"], json.dumps(record) + "\n")

    groups = group_runs(infos, names)
    by_name = {r["name"]: r for r in rows}
    for g in groups:
        for r in (by_name[n] for n in g["names"]):
            r["group"] = g["label"]
    comparisons = compare(groups, by_name, probs, test.labels, len(test.label_names), resamples, seed)
    if any(r["device"] != str(device) for r in rows):  # int8 models run on the CPU whatever the device
        device = f"{device} (int8 models: cpu)"
    settings = {"device": str(device), "torch_threads": torch.get_num_threads(), "throughput_batch_size": batch_size,
                "latency_sentences": min(latency_n, len(test)), "bootstrap_resamples": resamples, "bootstrap_seed": seed}
    test_info = {"manifest": str(manifest_path), "split_sha256": infos[0]["split_sha256"], "n": len(test),
                 "label_names": test.label_names,
                 "class_counts": np.bincount(test.labels, minlength=len(test.label_names)).tolist()}

    pngs = write_plots(out_dir, groups, by_name, run_dirs, names) if plots else []
    md = results_markdown(test_info, settings, groups, by_name, comparisons, pngs)
    write_text(out_dir / "results.md", md)
    write_text(out_dir / "results.csv", results_csv(rows))
    keys = [k for _, k, _, _ in table_columns(len(test.label_names))]
    for g in groups:  # the numbers behind the mean ± std cells
        g.update({k: dict(zip(("mean", "std"), mean_std([by_name[n].get(k) for n in g["names"]]), strict=True)) for k in keys})
    summary = {"test": test_info, "settings": settings, "runs": rows, "groups": groups, "comparisons": comparisons}
    write_text(out_dir / "results.json", json.dumps(json_safe(summary), indent=2) + "\n")
    print(models_table(groups, by_name, table_columns(len(test.label_names))))
    print(f"wrote {out_dir / 'results.md'}, results.csv, results.json, predictions-*.json ({len(rows)})"
          + (f" and {len(pngs)} plots" if pngs else ""))
    return rows


def compare(groups, by_name, probs, labels, num_classes, resamples, seed):
    """Every pair of models: paired bootstrap differences and McNemar, students first, the teacher last."""
    weights = bootstrap_weights(len(labels), resamples, seed)  # the same resamples for every pair
    ordered = sorted(groups, key=lambda g: ORDER.get(g["method"], 1))
    preds = {name: p.argmax(1) for name, p in probs.items()}
    out = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            diffs = paired_bootstrap(labels, [preds[n] for n in a["names"]], [preds[n] for n in b["names"]],
                                     num_classes, weights)
            # McNemar compares two sets of predictions: pair the runs seed by seed.
            seeds_b = {by_name[n]["seed"]: n for n in b["names"]}
            pairs = [(n, seeds_b[by_name[n]["seed"]]) for n in a["names"] if by_name[n]["seed"] in seeds_b]
            tests = []
            for na, nb in pairs or list(zip(a["names"], b["names"], strict=False)):  # no common seed: in order
                bb, cc = disagreements(labels, preds[na], preds[nb])
                tests.append({"a": na, "b": nb, "only_a_right": bb, "only_b_right": cc, "p": mcnemar(bb, cc)})
            out.append({"a": a["label"], "b": b["label"], **diffs, "mcnemar": tests,
                        "conclusions": [conclusion(a["label"], b["label"], m, diffs[k])
                                        for k, m in (("macro_f1", "macro-F1"), ("accuracy", "accuracy"))]})
    return out


def models_table(groups, by_name, columns):
    """One row per model: a single run's values, or mean ± std over the seeds of one model."""
    return markdown_table(["model", "seeds"] + [h for h, _, _, _ in columns],
                          [[g["label"], ", ".join(str(by_name[n]["seed"]) for n in g["names"])]
                           + [cell([by_name[n] for n in g["names"]], k, show, spread) for _, k, show, spread in columns]
                           for g in groups])


def results_markdown(test_info, settings, groups, by_name, comparisons, pngs):
    counts = ", ".join(f"{n}: {c}" for n, c in zip(test_info["label_names"], test_info["class_counts"], strict=True))
    several = any(len(g["names"]) > 1 for g in groups)
    columns = table_columns(len(test_info["label_names"]))
    lines = [
        "# Results", "",
        f"Test split: `{test_info['manifest']}` (sha256 {test_info['split_sha256'][:12]}…), {test_info['n']} texts "
        f"({counts}), never seen in training or model selection.",
    ]
    if len(test_info["label_names"]) == 2:
        lines.append(f"Precision, recall and F1 are those of class 1, *{test_info['label_names'][1]}*; "
                     "macro-F1 averages the F1 of both classes.")
    lines += [
        f"Speed on {settings['device']} (torch threads: {settings['torch_threads']}): sentences/s = one pass over the "
        f"pre-tokenized test texts at batch {settings['throughput_batch_size']}; latency = one sentence, tokenizing "
        f"included, over {settings['latency_sentences']} test sentences. Train time and final train loss: from each run's "
        "summary.json; a student's time leaves out its teacher's.",
        "", "## Models", "",
        "One row per model; " + ("for several seeds, mean ± std (sample std over seeds)." if several else "one seed each."), "",
        models_table(groups, by_name, columns),
        "", "## Runs", "",
        "Confusion matrices: rows are the true classes, columns the predicted ones, in the order "
        + ", ".join(test_info["label_names"]) + ".", "",
        markdown_table(["run", "model", "seed", "confusion matrix"] + ([h for h, _, _, _ in columns] if several else []),
                       [[n, by_name[n]["group"], by_name[n]["seed"], confusion_text(by_name[n]["confusion_matrix"])]
                        + ([cell([by_name[n]], k, show) for _, k, show, _ in columns] if several else [])
                        for g in groups for n in g["names"]]),
    ]
    if comparisons:
        one_seed = all(len(g["names"]) == 1 for g in groups)
        lines += [
            "", "## Differences", "",
            f"Paired bootstrap over the test examples ({settings['bootstrap_resamples']} resamples, seed "
            f"{settings['bootstrap_seed']}): every model is scored on the same resamples; a model of several seeds by "
            "the mean of its seeds. McNemar: exact two-sided test on the examples exactly one of the two gets right "
            "(A right only / B right only), run by run, seed matched to seed."
            + (" With one seed per model the intervals cover the choice of test examples, not the randomness of "
               "training." if one_seed else ""), "",
            markdown_table(["A − B", "Δ macro-F1 [95% CI]", "Δ accuracy [95% CI]", "McNemar"],
                           [[f"{c['a']} − {c['b']}"]
                            + [f"{c[k]['diff']:+.4f} [{c[k]['low']:+.4f}, {c[k]['high']:+.4f}]" for k in ("macro_f1", "accuracy")]
                            + ["; ".join(f"{t['only_a_right']}/{t['only_b_right']}, p = {t['p']:.3g}" for t in c["mcnemar"])]
                            for c in comparisons]),
            "", "Conclusions, as far as the intervals allow:", "",
        ]
        lines += [f"- {'; '.join(c['conclusions'])}." for c in comparisons]
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in pngs]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["name", "group", "method", "seed", "run_dir", "n", "accuracy", "precision", "recall", "f1", "macro_f1",
              "roc_auc", "confusion_matrix", "params_total", "params_trainable", "size_bytes", "train_seconds",
              "final_train_loss", "sentences_per_s", "latency_p50_ms", "latency_p95_ms", "predictions"]


def results_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        # An empty cell for an undefined score (results.md says why); the matrix as JSON.
        writer.writerow({k: "" if r.get(k) is None or isinstance(r.get(k), float) and math.isnan(r[k]) else
                         json.dumps(r[k]) if k == "confusion_matrix" else r[k] for k in CSV_FIELDS})
    return buf.getvalue()


# -----------------------------------------------------------------------------
# 6. Plots (matplotlib is optional: the tables never depend on it)


def write_plots(out_dir, groups, by_name, run_dirs, names):
    """metrics.png, confusion.png, training.png, efficiency.png; [] with a message when matplotlib is missing."""
    try:
        # The object-oriented API: no pyplot, no global figure state, no GUI backend chosen for the caller.
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plots (the tables are written); pip install 'nanobert[plots]'")
        return []
    colors = {g["label"]: f"C{i % 10}" for i, g in enumerate(groups)}
    paths = []
    for name, draw in (("metrics", plot_metrics), ("confusion", plot_confusions), ("training", plot_training),
                       ("efficiency", plot_efficiency)):
        fig = draw(Figure, groups, by_name, dict(zip(names, run_dirs, strict=True)), colors)
        path = out_dir / f"{name}.png"
        files.atomic_write(path, lambda p, f=fig: f.savefig(p, format="png", dpi=110, bbox_inches="tight"))
        paths.append(path)
    return paths


def plot_metrics(Figure, groups, by_name, run_dirs, colors):
    """Bars per model for every score, the std over seeds as error bars."""
    binary = len(by_name[groups[0]["names"][0]]["label_names"]) == 2
    keys = [(h, k) for h, k in SCORE_COLUMNS if binary or k in ("accuracy", "macro_f1")]
    fig = Figure(figsize=(max(6, 1.6 * len(keys) * max(1, len(groups) / 3)), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        stats = [mean_std([by_name[n].get(k) for n in g["names"]]) for _, k in keys]
        x = np.arange(len(keys)) + (i - (len(groups) - 1) / 2) * width
        means = np.array([0.0 if math.isnan(m) else m for m, _ in stats])
        several = len(g["names"]) > 1
        ax.bar(x, means, width, yerr=[s for _, s in stats] if several else None, capsize=3, color=colors[g["label"]],
               label=g["label"] + (f" ({len(g['names'])} seeds, ± std)" if several else ""))
        for xi, (m, sd) in zip(x, stats, strict=True):
            ax.text(xi, 0.01 if math.isnan(m) else m + sd + 0.01, "n/a" if math.isnan(m) else f"{m:.3f}",
                    ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(np.arange(len(keys)), [h for h, _ in keys])
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("score on the test set")
    positive = by_name[groups[0]["names"][0]]["label_names"][-1]
    ax.set_title("Test scores per model" + (f" (precision, recall, F1 of: {positive})" if binary else ""))
    ax.legend(loc="upper center", ncols=min(4, len(groups)), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.08))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_confusions(Figure, groups, by_name, run_dirs, colors):
    """One matrix per run: counts, coloured by the share of each true class (the row)."""
    names = [n for g in groups for n in g["names"]]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    labels = by_name[names[0]]["label_names"]
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names, strict=False):  # more panels than runs: the rest are hidden below
        cm = np.array(by_name[name]["confusion_matrix"], dtype=float)
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (t, p), count in np.ndenumerate(cm):
            ax.text(p, t, f"{int(count)}\n{share[t, p]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[t, p] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8, rotation=90, va="center")
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        group = by_name[name]["group"]
        ax.set_title(name if name == group else f"{name}\n{group}", fontsize=9)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Confusion matrices on the test set (colour: share of the true class)", fontsize=10)
    return fig


def plot_training(Figure, groups, by_name, run_dirs, colors):
    """Training loss per logged step, and validation macro-F1 per epoch, one colour per model."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, f1_ax = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    last_epoch = 1
    for g in groups:
        for i, name in enumerate(g["names"]):
            steps, epochs = read_log(run_dirs[name])
            label = g["label"] + (f" seed {by_name[name]['seed']}" if len(g["names"]) > 1 else "")
            style = dict(color=colors[g["label"]], linestyle=styles[i % len(styles)], label=label)
            if steps:
                x, y = np.array([r["step"] for r in steps]), np.array([r["loss"] for r in steps])
                # A running mean over ~5% of the points shows the trend under the batch-to-batch noise.
                k = max(1, len(y) // 20)
                if k > 1:
                    loss_ax.plot(x, y, alpha=0.2, linewidth=0.7, color=style["color"])
                loss_ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), **style)
            if epochs:
                f1_ax.plot([r["epoch"] for r in epochs], [r["val_macro_f1"] for r in epochs], marker="o", **style)
                last_epoch = max(last_epoch, epochs[-1]["epoch"])
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Training loss (distill: α·CE + β·KL + γ·hidden, not the scale of plain CE)", fontsize=9)
    f1_ax.set_xlabel("epoch")
    f1_ax.set_ylabel("validation macro-F1")
    f1_ax.set_title("Validation macro-F1 after each epoch", fontsize=9)
    f1_ax.set_xticks(range(1, last_epoch + 1))
    f1_ax.set_xlim(0.7, last_epoch + 0.3)
    for ax in (loss_ax, f1_ax):
        ax.grid(alpha=0.3)
    # One legend for both panels, below them, where it hides no curve.
    handles, labels = (loss_ax if loss_ax.lines else f1_ax).get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8, frameon=False)
    return fig


def plot_efficiency(Figure, groups, by_name, run_dirs, colors):
    """Test macro-F1 against the latency of one sentence, one marker per model, its area growing
    linearly with the parameters that training changed (from a small minimum, so LoRA stays visible)."""
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.subplots()
    points = []
    for g in groups:
        rows = [by_name[n] for n in g["names"]]
        f1, f1_sd = mean_std([r.get("macro_f1") for r in rows])
        ms, _ = mean_std([r.get("latency_p50_ms") for r in rows])
        trainable, _ = mean_std([r.get("params_trainable") for r in rows])
        if not (math.isnan(f1) or math.isnan(ms)):
            points.append((g["label"], ms, f1, f1_sd if len(rows) > 1 else 0.0, trainable))
    largest = max((p[4] for p in points if not math.isnan(p[4])), default=1) or 1
    for label, ms, f1, sd, trainable in points:
        area = 20 + 900 * (0 if math.isnan(trainable) else trainable / largest)
        ax.scatter(ms, f1, s=area, color=colors[label], alpha=0.55, edgecolors="black", linewidths=0.6,
                   marker="s" if label.endswith(" int8") else "o", label=f"{label}: {fmt_count(trainable)} trained")
        if sd:
            ax.errorbar(ms, f1, yerr=sd, color=colors[label], capsize=3, linewidth=1)
        ax.annotate(label, (ms, f1), textcoords="offset points", xytext=(7, 5), fontsize=8)
    ax.set_xlabel("latency of one sentence, median (ms; tokenizing included)")
    ax.set_ylabel("macro-F1 on the test set")
    ax.set_title("Quality against speed; marker area: trainable parameters (squares: int8)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.15)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right upper", frameon=False, markerscale=0.4)
    return fig


def fmt_count(n):
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


# -----------------------------------------------------------------------------
# 7. Export: an int8 model for CPU inference, measured beside its fp32 original


def export_int8(run_dir, out_dir=None, *, measure=True, batch_size=64, latency_n=50):
    """
    Write run_dir's model (a LoRA run: with the adapter folded in) as a dynamically quantised
    int8 model into out_dir (default <run_dir>-int8), a run folder of its own that the report
    and the web app read like any other. With measure, evaluate both on the test split and
    return {'fp32': row, 'int8': row, 'agreement': share of test texts given the same label}.
    """
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir.resolve().with_name(run_dir.resolve().name + "-int8")
    info = read_run_info(run_dir, required=("method",))
    if info.get("quantized"):
        raise RunError(f"{run_dir}: already an int8 model; expected a run with fp32 weights")
    if out_dir.resolve() == run_dir.resolve():
        raise RunError(f"{out_dir}: the export must not overwrite its own source run; expected another folder")
    if (out_dir / "run.json").is_file() and not read_run_info(out_dir).get("quantized"):
        raise RunError(f"{out_dir}: holds another run (run.json without 'quantized'); expected a new folder or an "
                       "earlier int8 export")
    for stale in ("export.md", "export.json", "summary.json"):  # from an earlier export into the same folder
        (out_dir / stale).unlink(missing_ok=True)
    net, _, _ = load_run(run_dir, merge=False)
    if lora.lora_layers(net):
        plain = M.BertForSequenceClassification(net.config)
        plain.load_state_dict(lora.merged_state_dict(net))
        net = plain.eval()
    quantize.save_quantized(quantize.quantize(net), out_dir, tokenizer_dir=run_dir)
    record = {**info, "quantized": quantize.METHOD, "source_run": str(run_dir), "run_dir": str(out_dir),
              "command": " ".join(sys.argv), "params_total": M.count_parameters(net)[0]}
    write_text(out_dir / "run.json", json.dumps(record, indent=2) + "\n")
    summary = run_dir / "summary.json"  # the training cost is the source run's
    if summary.is_file():
        write_text(out_dir / "summary.json", summary.read_text(encoding="utf-8"))
    print(f"wrote {out_dir}: int8 linear layers, {fmt_bytes(weights_file(out_dir).stat().st_size)} "
          f"(fp32 {fmt_bytes(weights_file(run_dir).stat().st_size)} for what the run trained)")
    if not measure:
        return None
    test, _, _ = load_test_split(run_dir, info)
    fp32, p32 = evaluate_run(run_dir, info, test, device="cpu", batch_size=batch_size, latency_n=latency_n)
    int8, p8 = evaluate_run(out_dir, record, test, device="cpu", batch_size=batch_size, latency_n=latency_n)
    # The size of a deployable fp32 model: a LoRA run's file holds only the adapter.
    fp32["size_bytes"] = sum(v.numel() * v.element_size() for v in net.state_dict().values())
    result = {"fp32": fp32, "int8": int8, "agreement": float((p32.argmax(1) == p8.argmax(1)).mean()),
              "max_abs_prob_diff": float(np.abs(p32 - p8).max()), "n": len(test)}
    lines = [[name, fmt_bytes(r["size_bytes"]), f"{r['sentences_per_s']:.0f}", f"{r['latency_p50_ms']:.1f}",
              fmt_num(r["accuracy"]), fmt_num(r["macro_f1"])] for name, r in (("fp32", fp32), ("int8", int8))]
    table = markdown_table(["model", "weights", "sentences/s", "latency p50 (ms)", "accuracy", "macro-F1"], lines)
    text = (f"# {run_dir} as int8\n\n{table}\n\nOn {len(test)} test texts, CPU, {torch.get_num_threads()} threads. "
            f"Same label for {result['agreement']:.2%} of them; largest probability difference "
            f"{result['max_abs_prob_diff']:.4f}.\n")
    write_text(out_dir / "export.md", text)
    write_text(out_dir / "export.json", json.dumps(json_safe(result), indent=2) + "\n")
    print(text)
    return result


# -----------------------------------------------------------------------------
# 8. Command line


def cmd_predict(args):
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    if not texts or any(not t.strip() for t in texts):
        raise RunError("empty text to predict; expected at least one non-blank text (argument or stdin line)")
    net, tokenizer, info = load_run(args.run)
    loader = data.Loader(texts, None, tokenizer, info.get("max_length", 128), 64)
    probs = predict(net, loader)
    names = net.config.id2label
    for text, p in zip(texts, probs.tolist(), strict=True):
        label = max(range(len(p)), key=p.__getitem__)
        if args.json:
            print(json.dumps({"text": text, "label": names[label], "probability": round(p[label], 6),
                              "probabilities": {names[i]: round(x, 6) for i, x in enumerate(p)}}, ensure_ascii=False))
        else:
            print(f"{names[label]}\t{p[label]:.3f}\t{text}")


def cmd_report(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(args.runs[0]).parent / "report"
    report(args.runs, out, device=args.device, batch_size=args.batch_size, latency_n=args.latency_sentences,
           resamples=args.resamples, seed=args.seed, plots=not args.no_plots)


def cmd_export(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    export_int8(args.run, args.out, measure=not args.no_measure, latency_n=args.latency_sentences)


COMMANDS = ("report", "predict", "export")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help"):
        argv.insert(0, "report")  # `python eval.py RUN_DIR ...` is the report
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="evaluate runs on their shared test split; tables, plots, statistics (the default)")
    p.add_argument("runs", nargs="+", help="run folders written by train.py, all on one split")
    p.add_argument("--out", help="report folder (default: <parent of the first run>/report)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice); the speed columns depend on it")
    p.add_argument("--batch-size", type=int, default=64, help="batch size of the throughput pass (default 64)")
    p.add_argument("--latency-sentences", type=int, default=50, help="test sentences timed one by one (default 50)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p = sub.add_parser("predict", help="label texts with a trained run (arguments, or stdin one per line)")
    p.add_argument("--run", required=True, help="run folder written by train.py")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.add_argument("texts", nargs="*", help="texts to classify; none: read stdin")
    p = sub.add_parser("export", help="an int8 copy of a run for CPU inference, measured beside the fp32 model")
    p.add_argument("run", help="run folder written by train.py (a LoRA run is merged first)")
    p.add_argument("--out", help="folder for the int8 model (default: <run>-int8 beside the run)")
    p.add_argument("--no-measure", action="store_true", help="write the model only; no test-split comparison")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's choice); the speed depends on it")
    p.add_argument("--latency-sentences", type=int, default=50, help="test sentences timed one by one (default 50)")
    args = parser.parse_args(argv)
    try:
        {"predict": cmd_predict, "report": cmd_report, "export": cmd_export}[args.command](args)
    except (ValueError, FileNotFoundError) as e:  # RunError and data.DataError are ValueErrors
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
