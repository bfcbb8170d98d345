"""
Beyond the test split: what a score on held-out texts of the training data cannot tell. Every run
goes through the functional suite of behaviour.py; a run trained on Davidson or hate_speech18 also
answers toxic / hate on both datasets' test splits, and the other dataset is text it never saw.

    beyond(run_dirs, out_dir)                      beyond.md / beyond.json for any runs, any splits
    beyond_the_split(run_dirs, infos, names, ...)  the results, for the comparison report too
    beyond_markdown(extras, groups)                their tables

Read top to bottom:
  1. what a model answers: its probabilities as the suite's two questions, and which columns of a
     model answer toxic and hate on a dataset;
  2. each dataset's test texts, the same for every run of one split seed;
  3. scoring the runs, and the paired differences where two were scored on the same texts;
  4. the tables, and the two files of `eval.py beyond`.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

import behaviour
import classifier
import corpus
import files
import metrics
import naming
import runs
import splits
from tables import cell, json_safe, markdown_table

CROSS_DATASETS = ("davidson", "hate_speech18")

# -----------------------------------------------------------------------------
# 1. What a model answers


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


# -----------------------------------------------------------------------------
# 2. Each dataset's test texts


def dataset_test_texts(run_dir, info, name, cache):
    """(texts, [toxic, hate] per text, -1 where not annotated) of dataset `name`'s test split: the run's
    own test texts of that dataset when it trained on it, else the dataset's own grouped split (with the
    run's split seed): texts it never saw. Both ways, a dataset's test texts are the same for every run
    of one split seed (a joined split is each source's own split)."""
    mirror, normalize = info.get("data_mirror"), info.get("normalize", True)
    key = (name, mirror, json.dumps(normalize, default=str))
    if key not in cache:
        both = corpus.load_dataset(name, mirror=mirror, normalize=normalize, multilabel=True)
        cache[key] = dict(zip(both.texts, both.labels, strict=True))
    labels_of = cache[key]
    if name in str(info["data"]).split("+"):
        test, _, _ = runs.load_test_split(run_dir, info)
        texts = [t for t, s in zip(test.texts, test.sources or [name] * len(test), strict=True) if s == name]
    else:
        alone = corpus.load_dataset(name, mirror=mirror, normalize=normalize)
        texts = splits.apply_split(alone, splits.make_split(alone, seed=info.get("split_seed", 0)))["test"].texts
    return texts, [labels_of[t] for t in texts]


# -----------------------------------------------------------------------------
# 3. Scoring the runs beyond the test split


def beyond_the_split(run_dirs, infos, names, device, precision="auto", fast=True, allow_unfinished=False):
    """Per run: the behaviour suite's result, and toxic / hate on each dataset's test split (for runs
    trained on Davidson or hate_speech18: the other one is text they never saw), with the decisions
    kept for paired comparisons."""
    cases, cache, out = behaviour.load_suite(), {}, {}
    for d, info, name in zip(run_dirs, infos, names, strict=True):
        clf = classifier.Classifier.from_run(d, device=str(device).split(" ")[0], precision=precision, fast=fast,
                                             allow_unfinished=allow_unfinished)
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
    where both were scored on the very same texts; intervals as report.compare() reads them."""
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


# -----------------------------------------------------------------------------
# 4. The tables, and beyond.md / beyond.json


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


def beyond(run_dirs, out_dir, *, device="auto", precision="auto", fast=True, allow_unfinished=False):
    """The behaviour suite and each dataset's test split for any runs, whatever split they were trained
    on: beyond.md and beyond.json in out_dir. An unfinished run is refused unless allow_unfinished."""
    run_dirs = [Path(d) for d in run_dirs]
    infos = [runs.read_info(d, required=("method", "data")) for d in run_dirs]
    notes = [runs.check_finished(d, allow_unfinished) for d in run_dirs]
    names = naming.run_names(run_dirs)
    device = classifier.pick_device(device)
    extras = beyond_the_split(run_dirs, infos, names, device, precision, fast, allow_unfinished)
    groups = naming.group_runs(infos, names, notes)
    text = "# Beyond the test split\n\n" + "\n".join(f"- {n}: `{d}`" + (f" ({note})" if note else "")
                                                      for n, d, note in zip(names, run_dirs, notes, strict=True))
    files.write_text(Path(out_dir) / "beyond.md", text + "\n\n" + beyond_markdown(extras, groups) + "\n")
    files.write_json(Path(out_dir) / "beyond.json", json_safe({"runs": dict(zip(names, map(str, run_dirs), strict=True)),
                                                                "groups": groups, "results": extras}))
    print(beyond_markdown(extras, groups).split("\n\nPass rate")[0])
    print(f"wrote {Path(out_dir) / 'beyond.md'} and beyond.json")
    return extras
