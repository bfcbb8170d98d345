"""
The comparison report: every run evaluated on the test split they share (measure.py), the seeds of
one model grouped (naming.group_runs), every two models compared with paired statistics (metrics.py),
and what was found written down, with what lies beyond the test split (beyond.py).

    report(run_dirs, out_dir)   results.md / .csv / .json, predictions-<run>.json, plots (plots.py);
                                for a two-label model a report per label and a page that joins them

Read top to bottom:
  1. the report: what cannot be compared is refused first, then every run is evaluated and grouped;
     a two-label model is read as one two-class task per label;
  2. every pair of models compared: paired bootstrap intervals, McNemar with Holm's adjustment;
  3. the tables and files.
"""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import torch

import bootstrap
import calibration
import classifier
import files
import measure
import metrics
import naming
import plots
import precision as P
import runs
import splits
from beyond import beyond_markdown, beyond_the_split
from tables import cell, fmt_bytes, fmt_num, fmt_seconds, json_safe, markdown_table

# -----------------------------------------------------------------------------
# 1. The report


def report(run_dirs, out_dir, *, device="auto", precision="auto", batch_size=64, latency_n=50, resamples=1000, seed=0,
           draw=True, beyond=True, fast=True, allow_unfinished=False):
    """
    Evaluate every run on the test split they share, write results.md / .csv / .json, one
    predictions-<name>.json per run and the plots into out_dir; return the rows (one per run).
    An unfinished run is refused unless allow_unfinished; then its model reads "(unfinished, epoch
    k of n)" in every table, grouped with no finished seed.
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
    notes = [runs.check_finished(d, allow_unfinished) for d in run_dirs]
    test, manifest_path, manifest = runs.load_test_split(run_dirs[0], infos[0])
    device = classifier.pick_device(device)
    names = naming.run_names(run_dirs)

    # Evaluate everything first: a run that fails to load leaves no half-written report behind.
    rows, probs = [], {}
    for d, info, name, note in zip(run_dirs, infos, names, notes, strict=True):
        print(f"evaluating {name} ({d}{', ' + note if note else ''}) on {len(test)} test texts")
        row, probs[name] = measure.evaluate_run(d, info, test, device=device, precision=precision, batch_size=batch_size,
                                        latency_n=latency_n, fast=fast)
        rows.append({"name": name, **row, "predictions": f"predictions-{name}.json"})
    groups = naming.group_runs(infos, names, notes)
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
                 "kind": splits.split_kind(manifest),
                 # The clusters the bootstrap resamples: authors, near-duplicate groups, a CSV's group column.
                 "clusters": bootstrap.cluster_ids(test.groups, len(test)).tolist(),
                 "clusters_of": splits.cluster_words(test.grouping) if test.groups is not None else None}
    # Beyond the test split: the functional suite, and hate on each dataset's test split.
    extras = beyond_the_split(run_dirs, infos, names, device, precision, fast, allow_unfinished) if beyond else None
    if not test.multilabel:
        # Two classes: at each run's threshold chosen on validation (older runs, more classes: argmax).
        preds = {r["name"]: metrics.decisions(probs[r["name"]], r.get("threshold")) for r in rows}
        test_info["class_counts"] = np.bincount(test.labels, minlength=len(test.label_names)).tolist()
        comparisons = compare(groups, {r["name"]: r for r in rows}, preds, test.labels, len(test.label_names), resamples, seed,
                              test_info["clusters"])
        write_report(out_dir, test_info, settings, groups, {r["name"]: r for r in rows}, comparisons, probs, run_dirs,
                     names, draw, extras)
        return rows
    # Two questions: each label is a yes/no task of its own, on the test texts that annotate it, with
    # each run's decisions at its threshold; a report per label, and one page that joins them.
    for j, label in enumerate(test.label_names):
        view, view_probs, view_preds, view_info = label_view(rows, probs, test_info, infos, j, label)
        comparisons = compare(groups, {r["name"]: r for r in view}, view_preds, view_info["labels"], 2, resamples, seed,
                              view_info["clusters"])
        write_report(out_dir / label, view_info, settings, groups, {r["name"]: r for r in view}, comparisons, view_probs,
                     run_dirs, names, draw, None)
    files.write_text(out_dir / "results.md", multilabel_markdown(test_info, settings, groups, rows, extras, draw))
    files.write_text(out_dir / "results.json", json.dumps(json_safe({"test": {k: v for k, v in test_info.items()
                     if k not in ("labels", "test_indices", "clusters")}, "settings": settings, "runs": rows, "beyond": extras}),
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
            "test_indices": np.asarray(test_info["test_indices"])[keep].tolist(), "class_counts": np.bincount(y, minlength=2).tolist(),
            "clusters": np.asarray(test_info["clusters"])[keep].tolist()}
    return view, view_probs, view_preds, info


# -----------------------------------------------------------------------------
# 2. Every pair of models, compared

ORDER = {"distill": 0, "lora": 1, "teacher": 2}  # comparisons read student - LoRA, student - teacher, LoRA - teacher


def compare(groups, by_name, preds, labels, num_classes, resamples, seed, clusters=None):
    """
    Every pair of models, students first, the teacher last: the differences of macro-F1 and accuracy
    with simultaneous intervals over the whole table, from the cluster bootstrap over test texts and
    seeds (bootstrap.compare), each with the sentence it allows; and McNemar, run by run. preds: each
    run's decisions on the test texts; clusters: each test text's (None: every text its own).
    """
    ordered = sorted(groups, key=lambda g: ORDER.get(g["method"], 1))
    pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    family = bootstrap.compare(labels, {g["label"]: [preds[n] for n in g["names"]] for g in ordered},
                               [(a["label"], b["label"]) for a, b in pairs], num_classes, clusters, resamples=resamples, seed=seed)
    out = []
    for (a, b), diffs in zip(pairs, family, strict=True):
        # McNemar compares two sets of predictions: pair the runs seed by seed.
        seeds_b = {by_name[n]["seed"]: n for n in b["names"]}
        matched = [(n, seeds_b[by_name[n]["seed"]]) for n in a["names"] if by_name[n]["seed"] in seeds_b]
        tests = []
        for na, nb in matched or list(zip(a["names"], b["names"], strict=False)):  # no common seed: in order
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


# -----------------------------------------------------------------------------
# 3. The tables and files: results.md / .csv / .json, the predictions

COST_COLUMNS = [("params", "params_total", lambda v: f"{v:,}", False),
                ("trainable", "params_trainable", lambda v: f"{v:,}", False),
                ("size on disk", "size_bytes", fmt_bytes, False),
                ("train time", "train_seconds", fmt_seconds, True),
                ("final train loss", "final_train_loss", lambda v: f"{v:.4f}", True),
                ("sentences/s", "sentences_per_s", lambda v: f"{v:,.0f}", True),
                ("latency p50", "latency_p50_ms", lambda v: f"{v:.1f} ms", True),
                ("latency p95", "latency_p95_ms", lambda v: f"{v:.1f} ms", True)]


def table_columns(num_classes):
    scores = metrics.SCORE_NAMES if num_classes == 2 else [c for c in metrics.SCORE_NAMES if c[1] in ("accuracy", "macro_f1")]
    return [(h, k, fmt_num, True) for h, k in scores] + [("test ECE", "ece", fmt_num, True)] + COST_COLUMNS


def confusion_text(cm):
    return " / ".join(" ".join(str(x) for x in row) for row in cm)


def models_table(groups, by_name, columns):
    """One row per model: a single run's values, or mean ± std over the seeds of one model."""
    return markdown_table(["model", "seeds"] + [h for h, _, _, _ in columns],
                          [[g["label"], ", ".join(str(by_name[n]["seed"]) for n in g["names"])]
                           + [cell([by_name[n] for n in g["names"]], k, show, spread) for _, k, show, spread in columns]
                           for g in groups])


def decision_words(groups, by_name, positive):
    """How the runs of a two-class report decide: at the threshold chosen on validation, or (a run made
    before two-class runs had one) at the most probable class."""
    names = [n for g in groups for n in g["names"]]
    at = [f"{n} {by_name[n]['threshold']:.3f}" for n in names if by_name[n].get("threshold") is not None]
    argmax = [n for n in names if by_name[n].get("threshold") is None]
    words = []
    if at:
        words.append(f"A run calls a text *{positive}* where its probability reaches the run's threshold, chosen on "
                     f"validation ({', '.join(at)})")
    if argmax:
        words.append(("a" if at else "A") + " run with no threshold in its run.json (made before two-class runs had one) "
                     f"decides by the most probable class ({', '.join(argmax)})")
    return "; ".join(words) + "."


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
                     "macro-F1 averages the F1 of both classes. " + decision_words(groups, by_name, test_info["label_names"][1]))
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
        n_tests = sum(len(c["mcnemar"]) for c in comparisons)
        caption = bootstrap.describe(test_info["n"], test_info["n_clusters"], test_info["clusters_of"],
                                     settings["bootstrap_resamples"], seeds=not one_seed, family=2 * len(comparisons),
                                     seed=settings["bootstrap_seed"])
        lines += [
            "", "## Differences", "",
            f"Paired differences A − B: {caption}. Every model is scored on the "
            "same resamples of the clusters (the pairing); a model of several seeds by the mean of its seeds, drawn "
            "with replacement in each resample, so that an interval holds the seed-to-seed spread too. A conclusion "
            "says *better* only where its interval excludes 0, else *no difference detected* (which is not *as good "
            "as*). McNemar: exact two-sided test on the texts exactly one of the two gets right (A right only / B right "
            f"only), run by run, seed matched to seed; in brackets the p-value after Holm's adjustment over the {n_tests} "
            "tests of this table. McNemar counts the texts as independent (it knows no clusters): the conclusions "
            "are the intervals'."
            + (" With one seed per model the intervals cover the choice of test texts, not the randomness of "
               "training." if one_seed else ""), "",
            markdown_table(["A − B", "Δ macro-F1 [simultaneous 95% CI]", "Δ accuracy [simultaneous 95% CI]", "McNemar"],
                           [[f"{c['a']} − {c['b']}"]
                            + [f"{c[k]['diff']:+.4f} [{c[k]['low']:+.4f}, {c[k]['high']:+.4f}]" for k in ("macro_f1", "accuracy")]
                            + ["; ".join(f"{t['only_a_right']}/{t['only_b_right']}, p = {t['p']:.3g} (Holm {t['p_holm']:.3g})"
                                         for t in c["mcnemar"])]
                            for c in comparisons]),
            "", "Conclusions, as far as the intervals allow:", "",
        ]
        lines += [f"- {'; '.join(c['conclusions'])}." for c in comparisons]
    lines += calibration_markdown(groups, by_name, test_info["label_names"], pngs)
    if pngs:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in pngs]
    return "\n".join(lines) + "\n"


def calibration_markdown(groups, by_name, label_names, pngs):
    """Each run's temperature and its ECE on validation and on test before and after it; for a yes/no
    question the average precision too, and the precision-recall curves where they are drawn."""
    yes_no = len(label_names) == 2
    event = f"the probability of *{label_names[1]}*" if yes_no else f"the probability of the {calibration.TOP_CLASS}"
    curves = [Path(p).name for p in pngs if Path(p).stem == plots.PR_CURVES]
    words = ("Each run's logits are divided by its temperature T, fitted on validation when it was trained (T = 1: not "
             "calibrated)" + (", and its threshold was chosen on the probabilities that gives" if yes_no else "")
             + ": the probabilities of `Classifier` and `eval.py predict`. ECE: the expected calibration error of "
             f"{event} over {calibration.BINS} equal-width bins, before → after the temperature (n/a on validation: a "
             "run made before calibration).")
    if yes_no:
        words += f" Average precision: the area under the test precision-recall curve of *{label_names[1]}*" + \
            (f" ([{curves[0]}]({curves[0]}))." if curves else ".")
    header = ["run", "model", "temperature", "validation ECE", "test ECE"] + (["average precision"] if yes_no else [])
    lines = []
    for n in [n for g in groups for n in g["names"]]:
        r = by_name[n]
        lines.append([n, r["group"], fmt_num(r.get("temperature"), ".3f"),
                      f"{fmt_num(r.get('val_ece_before'))} → {fmt_num(r.get('val_ece'))}",
                      f"{fmt_num(r.get('ece_before'))} → {fmt_num(r.get('ece'))}"]
                     + ([fmt_num(r.get("average_precision"))] if yes_no else []))
    return ["", "## Calibration", "", words, "", markdown_table(header, lines)]


CSV_FIELDS = ["name", "group", "method", "seed", "run_dir", "n", "accuracy", "precision", "recall", "f1", "macro_f1",
              "roc_auc", "threshold", "confusion_matrix", "params_total", "params_trainable", "size_bytes", "train_seconds",
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


def write_report(out_dir, test_info, settings, groups, by_name, comparisons, probs, run_dirs, names, draw, extras=None):
    """results.md / .csv / .json, predictions-<name>.json per run, and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, d in zip(names, run_dirs, strict=True):
        row = by_name[name]
        record = {"name": name, "run_dir": str(d), "method": row["method"], "seed": row["seed"],
                  "split_sha256": test_info["split_sha256"], "test_indices": test_info["test_indices"],
                  "label_names": test_info["label_names"], "labels": test_info["labels"], "clusters": test_info["clusters"],
                  "threshold": row.get("threshold"), "probabilities": probs[name].tolist()}
        files.write_text(out_dir / row["predictions"], json.dumps(record) + "\n")
    two = len(test_info["label_names"]) == 2  # a yes/no question: its precision-recall curves too
    pngs = plots.write_plots(out_dir, groups, by_name, run_dirs, names, probs if two else None,
                             test_info["labels"] if two else None) if draw else []
    test_info = {**{k: v for k, v in test_info.items() if k not in ("test_indices", "labels", "clusters")},
                 "n_clusters": len(set(test_info["clusters"]))}
    columns = table_columns(len(test_info["label_names"]))
    md = results_markdown(test_info, settings, groups, by_name, comparisons, pngs)
    files.write_text(out_dir / "results.md", md + ("\n" + beyond_markdown(extras, groups, settings["bootstrap_resamples"],
                                                                         settings["bootstrap_seed"]) + "\n" if extras else ""))
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


def multilabel_markdown(test_info, settings, groups, rows, extras, draw=True):
    """The page that joins a two-label report: each label's scores per model, and what lies beyond the test split."""
    by_name = {r["name"]: r for r in rows}
    header = ["model", "seeds"]
    lines = []
    for label in test_info["label_names"]:
        header += [f"{label}: precision", f"{label}: recall", f"{label}: F1", f"{label}: macro-F1", f"{label}: ROC-AUC",
                   f"{label}: threshold", f"{label}: test ECE"]
    for g in groups:
        runs_ = [by_name[n] for n in g["names"]]
        line = [g["label"], ", ".join(str(r["seed"]) for r in runs_)]
        for label in test_info["label_names"]:
            line += [cell([r["labels"][label] for r in runs_], k, fmt_num) for k in ("precision", "recall", "f1", "macro_f1",
                                                                                      "roc_auc", "threshold", "ece")]
        lines.append(line)
    out = ["# Results: two questions, one model", "",
           f"Test split: `{test_info['manifest']}` (sha256 {test_info['split_sha256'][:12]}…; {test_info['kind']}), "
           f"{test_info['n']} texts. Each label is scored on the test texts whose source annotates it, with each "
           "run's decision threshold (chosen on validation); per label, the full report with intervals and tests: "
           + ", ".join(f"[{n}]({n}/results.md)" for n in test_info["label_names"]) + " (with each label's calibration"
           + (": its precision-recall curves " + ", ".join(f"[{n}]({n}/{plots.PR_CURVES}.png)" for n in test_info["label_names"])
              if draw else "") + ").", "",
           markdown_table(header, lines)]
    if extras:
        out += ["", beyond_markdown(extras, groups, settings["bootstrap_resamples"], settings["bootstrap_seed"])]
    return "\n".join(out) + "\n"
