"""
Evaluating runs on their held-out test split, and writing what was found: the comparison report,
the int8 export's side-by-side measurement, and the model card of a run folder.

    report(run_dirs, out_dir)       results.md / .csv / .json, predictions-<run>.json, plots
    measure_export(run, int8_run)   fp32 vs int8 on the test split: export.md / .json
    write_model_card(run_dir)       README.md in the run folder: what the model is and is not for

Read top to bottom:
  1. one run on the test split: quality, size on disk, speed;
  2. the report: grouping seeds, comparing every pair of models, the tables;
  3. the int8 export measured beside its source;
  4. the model card.
"""

import csv
import hashlib
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import behaviour
import classifier
import data
import files
import metrics
import model as M
import plots
import precision as P
import runs

# -----------------------------------------------------------------------------
# 1. One run on the held-out test split: quality, size, speed


@torch.no_grad()
def timed_predict(net, loader):
    """(probabilities, seconds) of one pass over the loader, after one warm-up batch."""
    device = classifier.device_of(net)
    warm = loader.collate(list(range(min(len(loader.ids), loader.sampler.batch_size))))
    net(*(warm[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
    classifier.sync(device)
    t0 = time.perf_counter()
    probs = classifier.predict_probs(net, loader)
    classifier.sync(device)
    return probs, time.perf_counter() - t0


@torch.no_grad()
def latencies_ms(net, tokenizer, texts, max_length, warmup=3):
    """Milliseconds to label one sentence, tokenizing included: what a single request waits."""
    device = classifier.device_of(net)
    out = []
    for i, text in enumerate([texts[0]] * warmup + list(texts)):
        t0 = time.perf_counter()
        batch = data.encode(tokenizer, [text], max_length)
        net(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")))
        classifier.sync(device)
        if i >= warmup:
            out.append((time.perf_counter() - t0) * 1000)
    return out


def evaluate_run(run_dir, info, test, *, device="cpu", precision="auto", batch_size=64, latency_n=50, fast=True):
    """(one report row, test probabilities (N, C) as numpy) for a run, computed in `precision` (precision.py),
    on the fast path or (fast False) as model.py writes it."""
    net, tokenizer, _ = runs.load_run(run_dir)
    if info.get("quantized"):
        device = torch.device("cpu")  # int8 kernels are CPU kernels
    choice = P.choose(precision, device, fast=fast)
    P.prepare(net, choice, inference=True)
    num_classes = net.config.num_labels
    if num_classes != len(test.label_names):
        raise runs.RunError(f"{run_dir}: the model has {num_classes} classes, its test data {len(test.label_names)}; "
                       "expected the same")
    net.to(device)
    max_length = info.get("max_length", 128)
    probs, seconds = timed_predict(net, data.Loader(test.texts, test.labels, tokenizer, max_length, batch_size))
    lat = latencies_ms(net, tokenizer, test.texts[:latency_n], max_length)
    probs = probs.numpy()
    if test.multilabel:  # each label at its threshold on the texts that annotate it; the mean over labels
        labels, thresholds = np.asarray(test.labels), info.get("thresholds") or {}
        per_label = {name: metrics.label_metrics(labels[:, j], probs[:, j], thresholds.get(name, 0.5))
                     for j, name in enumerate(test.label_names)}
        m = {"n": len(test), "labels": per_label,
             **{k: float(np.mean([v[k] for v in per_label.values()])) for k in ("accuracy", "macro_f1")}}
    else:
        m = metrics.metrics(test.labels, probs.argmax(1).tolist(), num_classes,
                            probs[:, 1].tolist() if num_classes == 2 else None)
    _, epochs = runs.read_log(run_dir)
    train_seconds, final_loss = runs.training_cost(run_dir, epochs)
    total, trainable = M.count_parameters(net)
    row = {"run_dir": str(run_dir), "method": runs.method_label(info), "seed": info.get("seed"), "device": str(device),
           "computed_in": P.computed_in(net, choice), **m,
           "label_names": list(test.label_names),
           "params_total": info.get("params_total", total), "params_trainable": info.get("params_trainable", trainable),
           "size_bytes": runs.weights_file(run_dir).stat().st_size, "train_seconds": train_seconds, "final_train_loss": final_loss,
           "sentences_per_s": len(test) / seconds, "throughput_batch_size": batch_size,
           "latency_p50_ms": float(np.percentile(lat, 50)), "latency_p95_ms": float(np.percentile(lat, 95)),
           "latency_n": len(lat)}
    return row, probs


# -----------------------------------------------------------------------------
# 2. The report


ORDER = {"distill": 0, "lora": 1, "teacher": 2}  # comparisons read student - LoRA, student - teacher, LoRA - teacher


def group_runs(infos, names):
    """[{'label', 'method', 'names'}]: runs that differ only in how they were executed (seeds of one
    model, runs.model_key), in the order given."""
    groups = {}
    for info, name in zip(infos, names, strict=True):
        info = runs.as_info(info)
        key = runs.model_key(info)
        groups.setdefault(key, {"label": runs.method_label(info), "method": info["method"], "names": [], "key": json.loads(key)})
        groups[key]["names"].append(name)
    groups = list(groups.values())
    # Two arms of one method (say teachers at two learning rates, or in fp32 and bf16) get the settings
    # that tell them apart.
    base = [g["label"] for g in groups]
    for g, label in zip(groups, base, strict=True):
        same = [h["key"] for h, other in zip(groups, base, strict=True) if other == label]
        if len(same) > 1:
            keys = sorted(k for k in set().union(*same) if len({json.dumps(s.get(k), default=str) for s in same}) > 1)
            g["label"] += " (" + ", ".join(f"{k}={g['key'].get(k)}" for k in keys[:3]) + ")"
    return [{k: v for k, v in g.items() if k != "key"} for g in groups]


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
        mean, std = metrics.mean_std(defined)
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
    scores = metrics.SCORE_NAMES if num_classes == 2 else [c for c in metrics.SCORE_NAMES if c[1] in ("accuracy", "macro_f1")]
    return [(h, k, fmt_num, True) for h, k in scores] + COST_COLUMNS


def json_safe(x):
    """NaN is not JSON: write null (the tables say why)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x


def report(run_dirs, out_dir, *, device="auto", precision="auto", batch_size=64, latency_n=50, resamples=1000, seed=0,
           draw=True, beyond=True, fast=True):
    """
    Evaluate every run on the test split they share, write results.md / .csv / .json, one
    predictions-<name>.json per run and the plots into out_dir; return the rows (one per run).
    """
    run_dirs, out_dir = [Path(d) for d in run_dirs], Path(out_dir)
    if not run_dirs:
        raise runs.RunError("no run folders given; expected at least one folder written by train.py")
    for i, d in enumerate(run_dirs):
        if d.resolve() in [e.resolve() for e in run_dirs[:i]]:
            raise runs.RunError(f"{d}: given twice; expected each run once")
    # Everything that can be refused is refused before the first model is loaded.
    infos = [runs.read_info(d, required=("method", "data", "split", "split_sha256")) for d in run_dirs]
    for d, info in zip(run_dirs, infos, strict=True):
        if info["split_sha256"] != infos[0]["split_sha256"]:
            raise runs.RunError(f"{d} and {run_dirs[0]} were trained on different splits (split_sha256 "
                           f"{info['split_sha256'][:12]}… vs {infos[0]['split_sha256'][:12]}…); expected one test set for all")
    test, manifest_path, manifest = runs.load_test_split(run_dirs[0], infos[0])
    device = classifier.pick_device(device)
    names = runs.run_names(run_dirs)

    # Evaluate everything first: a run that fails to load leaves no half-written report behind.
    rows, probs = [], {}
    for d, info, name in zip(run_dirs, infos, names, strict=True):
        print(f"evaluating {name} ({d}) on {len(test)} test texts")
        row, probs[name] = evaluate_run(d, info, test, device=device, precision=precision, batch_size=batch_size,
                                        latency_n=latency_n, fast=fast)
        rows.append({"name": name, **row, "predictions": f"predictions-{name}.json"})
    groups = group_runs(infos, names)
    for g in groups:
        for r in rows:
            if r["name"] in g["names"]:
                r["group"] = g["label"]
    computed_in = P.choose(precision, device, fast=fast).reason
    if any(r["device"] != str(device) for r in rows):  # int8 models run on the CPU whatever the device
        device = f"{device} (int8 models: cpu)"
    settings = {"device": str(device), "precision": computed_in, "torch_threads": torch.get_num_threads(),
                "throughput_batch_size": batch_size, "latency_sentences": min(latency_n, len(test)),
                "bootstrap_resamples": resamples, "bootstrap_seed": seed}
    test_info = {"manifest": str(manifest_path), "split_sha256": infos[0]["split_sha256"], "n": len(test),
                 "label_names": test.label_names, "test_indices": manifest["indices"]["test"], "labels": test.labels,
                 "kind": data.split_kind(manifest)}
    # Beyond the test split: the functional suite, and hate on each dataset's test split.
    extras = beyond_the_split(run_dirs, infos, names, device, precision, fast) if beyond else None
    if not test.multilabel:
        preds = {name: p.argmax(1) for name, p in probs.items()}
        test_info["class_counts"] = np.bincount(test.labels, minlength=len(test.label_names)).tolist()
        comparisons = compare(groups, {r["name"]: r for r in rows}, preds, test.labels, len(test.label_names), resamples, seed)
        write_report(out_dir, test_info, settings, groups, {r["name"]: r for r in rows}, comparisons, probs, run_dirs,
                     names, draw, extras)
        return rows
    # Two questions: each label is a yes/no task of its own, on the test texts that annotate it, with
    # each run's decisions at its threshold; a report per label, and one page that joins them.
    for j, label in enumerate(test.label_names):
        view, view_probs, view_preds, view_info = label_view(rows, probs, test_info, infos, j, label)
        comparisons = compare(groups, {r["name"]: r for r in view}, view_preds, view_info["labels"], 2, resamples, seed)
        write_report(out_dir / label, view_info, settings, groups, {r["name"]: r for r in view}, comparisons, view_probs,
                     run_dirs, names, draw, None)
    files.write_text(out_dir / "results.md", multilabel_markdown(test_info, groups, rows, extras))
    files.write_text(out_dir / "results.json", json.dumps(json_safe({"test": {k: v for k, v in test_info.items()
                     if k not in ("labels", "test_indices")}, "settings": settings, "runs": rows, "beyond": extras}),
                     indent=2) + "\n")
    print(f"wrote {out_dir / 'results.md'} and a report per label in " + ", ".join(str(out_dir / n) for n in test.label_names))
    return rows


def label_view(rows, probs, test_info, infos, j, label):
    """One label of a multi-label report as a two-class task: (rows, probabilities [no, yes], decisions,
    test info), on the test texts whose source annotates the label."""
    labels = np.asarray(test_info["labels"])[:, j]
    keep = labels >= 0
    view, view_probs, view_preds = [], {}, {}
    for row, info in zip(rows, infos, strict=True):
        p = probs[row["name"]][keep, j]
        threshold = (info.get("thresholds") or {}).get(label, 0.5)
        view.append({**row, **row["labels"][label], "label_names": [f"not {label}", label]})
        view_probs[row["name"]] = np.stack([1 - p, p], axis=1)
        view_preds[row["name"]] = (p >= threshold).astype(int)
    y = labels[keep].astype(int)
    info = {**test_info, "n": int(keep.sum()), "label_names": [f"not {label}", label], "labels": y.tolist(),
            "test_indices": np.asarray(test_info["test_indices"])[keep].tolist(), "class_counts": np.bincount(y, minlength=2).tolist()}
    return view, view_probs, view_preds, info


def multilabel_markdown(test_info, groups, rows, extras):
    """The page that joins a two-label report: each label's scores per model, and what lies beyond the test split."""
    by_name = {r["name"]: r for r in rows}
    header = ["model", "seeds"]
    lines = []
    for label in test_info["label_names"]:
        header += [f"{label}: precision", f"{label}: recall", f"{label}: F1", f"{label}: macro-F1", f"{label}: ROC-AUC",
                   f"{label}: threshold"]
    for g in groups:
        runs_ = [by_name[n] for n in g["names"]]
        line = [g["label"], ", ".join(str(r["seed"]) for r in runs_)]
        for label in test_info["label_names"]:
            line += [cell([r["labels"][label] for r in runs_], k, fmt_num) for k in ("precision", "recall", "f1", "macro_f1",
                                                                                      "roc_auc", "threshold")]
        lines.append(line)
    out = ["# Results: two questions, one model", "",
           f"Test split: `{test_info['manifest']}` (sha256 {test_info['split_sha256'][:12]}…; {test_info['kind']}), "
           f"{test_info['n']} texts. Each label is scored on the test texts whose source annotates it, with each "
           "run's decision threshold (chosen on validation); per label, the full report with intervals and tests: "
           + ", ".join(f"[{n}]({n}/results.md)" for n in test_info["label_names"]) + ".", "",
           markdown_table(header, lines)]
    if extras:
        out += ["", beyond_markdown(extras, groups)]
    return "\n".join(out) + "\n"


# -----------------------------------------------------------------------------
# Beyond the test split: the functional suite, and hate on each dataset's test split

CROSS_DATASETS = ("davidson", "hate_speech18")


def suite_predict(clf):
    """predict(texts) -> {"toxic": probs, "hate": probs} for behaviour.run_suite. A model of one class per
    text has one question to answer with its class-1 probability: it is scored against both labels'
    expectations, the way a user reads its one flag."""
    def predict(texts):
        probs = clf.predict_proba(texts)
        named = {label: probs[:, i] for i, label in enumerate(clf.labels) if label in behaviour.LABELS}
        if clf.multilabel and len(named) == len(behaviour.LABELS):
            return named
        return {label: probs[:, 1] for label in behaviour.LABELS}
    return predict


def label_columns(clf):
    """{question: (column of its probability, threshold)} of what a model answers: a two-label model its
    toxic and hate at their thresholds; a two-class model its class-1 flag, for hate, and for toxic too
    when its class 1 is called toxic (Davidson's binary task)."""
    if clf.multilabel:
        return {k: (clf.labels.index(k), clf.thresholds[k]) for k in behaviour.LABELS if k in clf.labels}
    if len(clf.labels) != 2:
        return {}
    return {"hate": (1, 0.5), **({"toxic": (1, 0.5)} if "toxic" in clf.labels[1] else {})}


def dataset_test_texts(run_dir, info, name, cache):
    """(texts, [toxic, hate] per text, -1 where not annotated) of dataset `name`'s test split: the run's
    own test texts of that dataset when it trained on it, else the dataset's own grouped split (with the
    run's split seed): texts it never saw. Both ways, a dataset's test texts are the same for every run
    of one split seed (a joined split is each source's own split)."""
    mirror, normalize = info.get("data_mirror"), info.get("normalize", True)
    key = (name, mirror, json.dumps(normalize, default=str))
    if key not in cache:
        both = data.load_dataset(name, mirror=mirror, normalize=normalize, multilabel=True)
        cache[key] = dict(zip(both.texts, both.labels, strict=True))
    labels_of = cache[key]
    if name in str(info["data"]).split("+"):
        test, _, _ = runs.load_test_split(run_dir, info)
        texts = [t for t, s in zip(test.texts, test.sources or [name] * len(test), strict=True) if s == name]
    else:
        alone = data.load_dataset(name, mirror=mirror, normalize=normalize)
        texts = data.apply_split(alone, data.make_split(alone, seed=info.get("split_seed", 0)))["test"].texts
    return texts, [labels_of[t] for t in texts]


def beyond_the_split(run_dirs, infos, names, device, precision="auto", fast=True):
    """Per run: the behaviour suite's result, and toxic / hate on each dataset's test split (for runs
    trained on Davidson or hate_speech18: the other one is text they never saw), with the decisions
    kept for paired comparisons."""
    cases, cache, out = behaviour.load_suite(), {}, {}
    for d, info, name in zip(run_dirs, infos, names, strict=True):
        clf = classifier.Classifier.from_run(d, device=str(device).split(" ")[0], precision=precision, fast=fast)
        entry = {"behaviour": behaviour.run_suite(cases, suite_predict(clf)), "cross": {}}
        trained_on = str(info["data"]).split("+")
        columns = label_columns(clf)
        if columns and set(trained_on) & set(CROSS_DATASETS) and not info.get("three_class"):
            for dataset in CROSS_DATASETS:
                texts, labels = dataset_test_texts(d, info, dataset, cache)
                probs = clf.predict_proba(texts)
                texts_sha = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
                entry["cross"][dataset] = {"seen": dataset in trained_on, "texts_sha256": texts_sha}
                for label, (column, threshold) in columns.items():
                    y = np.asarray([pair[behaviour.LABELS.index(label)] for pair in labels])
                    if len(set(y[y >= 0].tolist())) == 2:  # hate_speech18 marks toxic on hate only: no "no" to score
                        entry["cross"][dataset][label] = {
                            **metrics.label_metrics(y, probs[:, column], threshold), "labels": y.tolist(),
                            "decisions": (probs[:, column] >= threshold).astype(int).tolist()}
        out[name] = entry
    return out


def cross_comparisons(extras, groups, resamples=1000, seed=0):
    """Paired bootstrap of macro-F1 between every two models on each dataset's test texts and label,
    where both were scored on the very same texts; intervals as compare() reads them."""
    out = []
    for dataset in CROSS_DATASETS:
        for label in behaviour.LABELS:
            scored = [g for g in groups if all(label in extras[n]["cross"].get(dataset, {}) for n in g["names"])]
            for i, a in enumerate(scored):
                for b in scored[i + 1:]:
                    entries = [extras[n]["cross"][dataset] for n in a["names"] + b["names"]]
                    if len({e["texts_sha256"] for e in entries}) > 1:
                        continue  # not the same test texts: no pairing
                    y = np.asarray(entries[0][label]["labels"])
                    keep = y >= 0
                    weights = metrics.bootstrap_weights(int(keep.sum()), resamples, seed)
                    preds = [[np.asarray(extras[n]["cross"][dataset][label]["decisions"])[keep] for n in g["names"]]
                             for g in (a, b)]
                    d = metrics.paired_bootstrap(y[keep], preds[0], preds[1], 2, weights)["macro_f1"]
                    out.append({"dataset": dataset, "label": label, "a": a["label"], "b": b["label"], **d,
                                "conclusion": metrics.conclusion(a["label"], b["label"], f"{label} macro-F1 on {dataset}", d)})
    return out


def beyond_markdown(extras, groups):
    """Tables: the functional suite per model (mean pass rate over functionalities, the lowest one),
    toxic and hate on each dataset's test split, the paired differences there, and the pass rate of
    every functionality."""
    lines = ["## Beyond the test split", "",
             "Behaviour: the functional suite of `suites/behaviour.toml` (templates written for nanobert, never "
             "trained on), mean pass rate over its functionalities for each question, and the lowest one. A model of "
             "one class per text answers both questions with its one flag. On each dataset's test split: the run's "
             "own test texts of a dataset it trained on, else that dataset's grouped test split (text it never saw, "
             "marked *); macro-F1 of the yes/no decision on the texts that annotate the label.", ""]
    header = ["model", "behaviour hate: mean", "hate: lowest", "behaviour toxic: mean", "toxic: lowest"] + \
        [f"{d} {label}: macro-F1 (F1)" for d in CROSS_DATASETS for label in ("hate", "toxic")]
    rows = []
    for g in groups:
        entries = [extras[n] for n in g["names"]]
        line = [g["label"]]
        for label in ("hate", "toxic"):
            summaries = [e["behaviour"]["summary"].get(label, {}) for e in entries]
            line += [cell(summaries, "mean_pass_rate", lambda v: f"{v:.3f}"),
                     cell(summaries, "min_pass_rate", lambda v: f"{v:.3f}") + f" ({summaries[0].get('min_functionality')})"]
        for dataset in CROSS_DATASETS:
            for label in ("hate", "toxic"):
                scores = [e["cross"].get(dataset, {}).get(label) for e in entries]
                if any(sc is None for sc in scores):
                    line.append("n/a")
                    continue
                seen = entries[0]["cross"][dataset]["seen"]
                line.append(f"{cell(scores, 'macro_f1', lambda v: f'{v:.3f}')} ({cell(scores, 'f1', lambda v: f'{v:.3f}')})"
                            + ("" if seen else " *"))
        rows.append(line)
    lines.append(markdown_table(header, rows))
    pairs = cross_comparisons(extras, groups)
    if pairs:
        lines += ["", "Paired differences on the same test texts (bootstrap over the texts, 1,000 resamples):", ""]
        lines.append(markdown_table(["dataset", "label", "A − B", "Δ macro-F1 [95% CI]"],
                                    [[p["dataset"], p["label"], f"{p['a']} − {p['b']}",
                                      f"{p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]"] for p in pairs]))
        lines += [""] + [f"- {p['conclusion']}." for p in pairs]
    functionalities = list(next(iter(extras.values()))["behaviour"]["functionalities"])
    table = []
    for f in functionalities:
        line = [f]
        for g in groups:
            cells = [extras[n]["behaviour"]["functionalities"][f]["labels"].get("hate") for n in g["names"]]
            line.append(cell([c for c in cells if c], "pass_rate", lambda v: f"{v:.2f}") if any(cells) else "–")
        table.append(line)
    lines += ["", "Pass rate of each functionality, hate question (INV/DIR: consistency and direction):", "",
              markdown_table(["functionality"] + [g["label"] for g in groups], table)]
    return "\n".join(lines)


def beyond(run_dirs, out_dir, *, device="auto", precision="auto", fast=True):
    """The behaviour suite and each dataset's test split for any runs, whatever split they were trained
    on: beyond.md and beyond.json in out_dir."""
    run_dirs = [Path(d) for d in run_dirs]
    infos = [runs.read_info(d, required=("method", "data")) for d in run_dirs]
    names = runs.run_names(run_dirs)
    device = classifier.pick_device(device)
    extras = beyond_the_split(run_dirs, infos, names, device, precision, fast)
    groups = group_runs(infos, names)
    text = "# Beyond the test split\n\n" + "\n".join(f"- {n}: `{d}`" for n, d in zip(names, run_dirs, strict=True))
    files.write_text(Path(out_dir) / "beyond.md", text + "\n\n" + beyond_markdown(extras, groups) + "\n")
    files.write_json(Path(out_dir) / "beyond.json", json_safe({"runs": dict(zip(names, map(str, run_dirs), strict=True)),
                                                                "groups": groups, "results": extras}))
    print(beyond_markdown(extras, groups).split("\n\nPass rate")[0])
    print(f"wrote {Path(out_dir) / 'beyond.md'} and beyond.json")
    return extras


def write_report(out_dir, test_info, settings, groups, by_name, comparisons, probs, run_dirs, names, draw, extras=None):
    """results.md / .csv / .json, predictions-<name>.json per run, and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, d in zip(names, run_dirs, strict=True):
        row = by_name[name]
        record = {"name": name, "run_dir": str(d), "method": row["method"], "seed": row["seed"],
                  "split_sha256": test_info["split_sha256"], "test_indices": test_info["test_indices"],
                  "label_names": test_info["label_names"], "labels": test_info["labels"],
                  "probabilities": probs[name].tolist()}
        files.write_text(out_dir / row["predictions"], json.dumps(record) + "\n")
    pngs = plots.write_plots(out_dir, groups, by_name, run_dirs, names) if draw else []
    test_info = {k: v for k, v in test_info.items() if k not in ("test_indices", "labels")}
    columns = table_columns(len(test_info["label_names"]))
    md = results_markdown(test_info, settings, groups, by_name, comparisons, pngs)
    files.write_text(out_dir / "results.md", md + ("\n" + beyond_markdown(extras, groups) + "\n" if extras else ""))
    rows = [by_name[n] for n in names]
    files.write_text(out_dir / "results.csv", results_csv(rows))
    for g in groups:  # the numbers behind the mean ± std cells
        g.update({k: dict(zip(("mean", "std"), metrics.mean_std([by_name[n].get(k) for n in g["names"]]), strict=True))
                  for _, k, _, _ in columns})
    summary = {"test": test_info, "settings": settings, "runs": rows, "groups": groups, "comparisons": comparisons,
               "beyond": extras}
    files.write_text(out_dir / "results.json", json.dumps(json_safe(summary), indent=2) + "\n")
    print(models_table(groups, by_name, columns))
    print(f"wrote {out_dir / 'results.md'}, results.csv, results.json, predictions-*.json ({len(rows)})"
          + (f" and {len(pngs)} plots" if pngs else ""))


def compare(groups, by_name, preds, labels, num_classes, resamples, seed):
    """Every pair of models: paired bootstrap differences and McNemar, students first, the teacher last.
    preds: each run's decisions on the test texts."""
    weights = metrics.bootstrap_weights(len(labels), resamples, seed)  # the same resamples for every pair
    ordered = sorted(groups, key=lambda g: ORDER.get(g["method"], 1))
    out = []
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            diffs = metrics.paired_bootstrap(labels, [preds[n] for n in a["names"]], [preds[n] for n in b["names"]],
                                     num_classes, weights)
            # McNemar compares two sets of predictions: pair the runs seed by seed.
            seeds_b = {by_name[n]["seed"]: n for n in b["names"]}
            pairs = [(n, seeds_b[by_name[n]["seed"]]) for n in a["names"] if by_name[n]["seed"] in seeds_b]
            tests = []
            for na, nb in pairs or list(zip(a["names"], b["names"], strict=False)):  # no common seed: in order
                bb, cc = metrics.disagreements(labels, preds[na], preds[nb])
                tests.append({"a": na, "b": nb, "only_a_right": bb, "only_b_right": cc, "p": metrics.mcnemar(bb, cc)})
            out.append({"a": a["label"], "b": b["label"], **diffs, "mcnemar": tests,
                        "conclusions": [metrics.conclusion(a["label"], b["label"], m, diffs[k])
                                        for k, m in (("macro_f1", "macro-F1"), ("accuracy", "accuracy"))]})
    # Many pairs, many tests: some p < 0.05 would turn up by chance alone. Holm's adjustment over every
    # McNemar test of the report keeps the chance of any false alarm at 5%.
    tests = [t for c in out for t in c["mcnemar"]]
    for t, adjusted in zip(tests, metrics.holm([t["p"] for t in tests]), strict=True):
        t["p_holm"] = adjusted
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
        f"Test split: `{test_info['manifest']}` (sha256 {test_info['split_sha256'][:12]}…; "
        f"{test_info.get('kind', 'random by text')}), {test_info['n']} texts "
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
            "(A right only / B right only), run by run, seed matched to seed; in brackets the p-value after Holm's "
            "adjustment for all the tests of this table."
            + (" With one seed per model the intervals cover the choice of test examples, not the randomness of "
               "training." if one_seed else ""), "",
            markdown_table(["A − B", "Δ macro-F1 [95% CI]", "Δ accuracy [95% CI]", "McNemar"],
                           [[f"{c['a']} − {c['b']}"]
                            + [f"{c[k]['diff']:+.4f} [{c[k]['low']:+.4f}, {c[k]['high']:+.4f}]" for k in ("macro_f1", "accuracy")]
                            + ["; ".join(f"{t['only_a_right']}/{t['only_b_right']}, p = {t['p']:.3g} (Holm {t['p_holm']:.3g})"
                                         for t in c["mcnemar"])]
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
    result = {"fp32": fp32, "int8": int8, "agreement": float((p32.argmax(1) == p8.argmax(1)).mean()),
              "max_abs_prob_diff": float(np.abs(p32 - p8).max()), "n": len(test)}
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


# -----------------------------------------------------------------------------
# 4. The model card: README.md in every run folder

LIMITATIONS = {
    "davidson": "Davidson et al.'s labels mark profanity and dialect as much as hate: 77% of the tweets are "
                "'offensive language', mostly swearing, so a model trained on them flags swearing (also friendly "
                "swearing) and African-American English far more readily than it finds hate without swear words.",
    "hate_speech18": "hate_speech18 is sentences from one white-supremacist forum: its hate is that forum's, and a "
                     "model trained on it alone has seen little profanity, little other hate and no tweets.",
}


def test_scores(net, tokenizer, info, test, batch_size=64):
    """Accuracy, macro-F1 and (two classes) precision/recall/F1/ROC-AUC of class 1 on a test split;
    multi-label: those of each label at its threshold, under "labels"."""
    loader = data.Loader(test.texts, test.labels, tokenizer, info.get("max_length", 128), batch_size)
    probs = classifier.predict_probs(net, loader).numpy()
    keys = ("n", "accuracy", "macro_f1", "precision", "recall", "f1", "roc_auc", "threshold")
    if test.multilabel:
        labels, thresholds = np.asarray(test.labels), info.get("thresholds") or {}
        per_label = {name: metrics.label_metrics(labels[:, j], probs[:, j], thresholds.get(name, 0.5))
                     for j, name in enumerate(test.label_names)}
        return {"n": len(test), "labels": {k: {key: v[key] for key in keys if key in v} for k, v in per_label.items()}}
    num_classes = probs.shape[1]
    m = metrics.metrics(test.labels, probs.argmax(1).tolist(), num_classes,
                        probs[:, 1].tolist() if num_classes == 2 else None)
    return {k: m[k] for k in keys if k in m}


def model_card(info, summary=None, name="model"):
    """The text of a run's README.md."""
    info = runs.as_info(info)
    s = info.settings
    labels = [info["id2label"][str(i)] for i in range(len(info["id2label"]))] if info.get("id2label") else []
    method = runs.method_label(info)
    made = {"teacher": f"full fine-tuning of `{s.get('model')}`",
            "distill": f"a student with layers {info.get('teacher_layers')} of the teacher `{s.get('teacher')}`, "
                       f"distilled (α={fmt_num(s.get('alpha'), '.3g')} CE, β={fmt_num(s.get('beta'), '.3g')} KL at "
                       f"T={s.get('temperature')}, γ={fmt_num(s.get('gamma'), '.3g')} {s.get('hidden_loss')} hidden-state loss)",
            "lora": f"LoRA r={s.get('lora_r')}, alpha={s.get('lora_alpha')} on {s.get('lora_targets')} of "
                    f"`{s.get('base') or s.get('model')}`"}.get(s.get("method"), str(s.get("method")))
    if info.get("quantized"):
        made += f"; then exported as {info['quantized']} from `{info.get('source_run')}`"
    settings = ", ".join(f"{k}={s[k]}" for k in ("epochs", "lr", "batch_size", "max_length", "warmup", "weight_decay",
                                                 "class_weights", "bf16", "seed") if k in s)
    if info.get("precision_chosen"):  # what `--precision` chose (older runs: the bf16 flag above)
        settings += f", computed in {info['precision_chosen']}"
    lines = [f"# {name}: {method}", "",
             f"A BERT text classifier trained by nanobert: {made}.", "",
             "| | |", "|---|---|",
             f"| labels | {', '.join(labels)} |",
             f"| data | `{s.get('data')}` ({info.get('train_size', '?')} training, {info.get('val_size', '?')} validation texts) |",
             f"| split | `{s.get('split')}`, sha256 {str(info.get('split_sha256', ''))[:12]}… |",
             f"| training | {settings} |",
             f"| parameters | {info.get('params_total', 0):,} in all, {info.get('params_trainable', 0):,} trained |"]
    if summary:
        lines.append(f"| best epoch | {summary.get('best_epoch')} (validation macro-F1 "
                     f"{fmt_num(summary.get('best_val_macro_f1'))}); {fmt_seconds(summary.get('wall_seconds'))} of training |")
    test = info.get("test")
    if test and "labels" in test:  # two questions: a row per label, at its threshold
        for label, m in test["labels"].items():
            scores = ", ".join(f"{header} {fmt_num(m.get(k))}" for header, k in metrics.SCORE_NAMES if k in m)
            lines.append(f"| test, {label} ({m['n']} texts) | {scores} at threshold {fmt_num(m.get('threshold'), '.3f')} |")
    elif test:
        scores = ", ".join(f"{header} {fmt_num(test.get(k))}" for header, k in metrics.SCORE_NAMES if k in test)
        lines.append(f"| test ({test['n']} texts) | {scores}" + (f" (precision/recall/F1 of *{labels[1]}*)" if len(labels) == 2 else "")
                     + " |")
    lines += ["", "## Use", "",
              "```python", "from classifier import Classifier", "",
              f'clf = Classifier.from_run("{info.dir or "RUN_DIR"}")', 'clf.predict(["some comment"])', "```", "",
              f"or `python eval.py predict --run {info.dir or 'RUN_DIR'} \"some comment\"`, or a whole file with "
              "`--input comments.csv --text-column text --output labelled.csv`.", "",
              "## Intended use and limitations", "",
              "For research on toxic-comment detection and for screening comments with a human in the loop; not for "
              "decisions about people without review.", ""]
    dataset = str(s.get("data"))
    lines += [f"- {text}" for key, text in LIMITATIONS.items() if key in dataset]
    lines += ["- Scores are from a split of the same data the model was trained on; text from elsewhere (other "
              "sites, other years, other kinds of hate) will do worse. See the behaviour results of "
              "`eval.py` where they are present."]
    return "\n".join(lines) + "\n"


def write_model_card(run_dir, summary=None, name=None):
    run_dir = Path(run_dir)
    info = runs.read_info(run_dir)
    summary = summary or runs.read_summary(run_dir)
    files.write_text(run_dir / runs.CARD_FILE, model_card(info, summary, name or run_dir.name))
