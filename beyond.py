"""
Beyond the test split: what a score on held-out texts of the training data cannot tell. Every run
goes through the functional suite of behaviour.py; a run trained on Davidson or hate_speech18 also
answers toxic / hate on both datasets' test splits, and the other dataset is text it never saw.

    beyond(run_dirs, out_dir)                      beyond.md / beyond.json for any runs, any splits
    beyond_the_split(run_dirs, infos, names, ...)  the results, for the comparison report too
    unseen_sources(extras, groups)                 leave one source out: hate where a model never trained
    beyond_markdown(extras, groups)                their tables, with the intervals of bootstrap.py

Read top to bottom:
  1. what a model answers: its probabilities as the suite's two questions, and which columns of a
     model answer toxic and hate on a dataset;
  2. each dataset's test texts, the same for every run of one split seed;
  3. scoring the runs; leave one source out (a model of one dataset scored on the other's); the
     paired differences where two were scored on the same texts or suite, each table one family of
     simultaneous intervals (bootstrap.py);
  4. the tables, and the two files of `eval.py beyond`.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

import behaviour
import bootstrap
import calibration
import classifier
import corpus
import files
import metrics
import naming
import runs
import splits
from tables import cell, json_safe, markdown_table

CROSS_DATASETS = ("davidson", "hate_speech18")
LEVEL_WORDS = f"{bootstrap.LEVEL:.0%}"

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


def suite_thresholds(clf):
    """{question: threshold} the suite decides at, as the model decides: a two-label model's own per
    label, a two-class model's class-1 threshold (chosen on validation; 0.5 for an older run) for both."""
    if clf.multilabel:
        return {k: v for k, v in clf.thresholds.items() if k in behaviour.LABELS}
    return {label: class1_threshold(clf) for label in behaviour.LABELS}


def class1_threshold(clf) -> float:
    """A two-class model's threshold on class 1, chosen on validation; 0.5 for an older run (argmax)."""
    threshold = runs.decision_threshold(clf.info)
    return 0.5 if threshold is None else threshold


def label_columns(clf):
    """{question: (column of its probability, threshold)} of what a model answers: a two-label model its
    toxic and hate at their thresholds; a two-class model its class-1 flag, for hate, and for toxic too
    when its class 1 is called toxic (Davidson's binary task)."""
    if clf.multilabel:
        return {k: (clf.labels.index(k), clf.thresholds[k]) for k in behaviour.LABELS if k in clf.labels}
    if len(clf.labels) != 2:
        return {}
    threshold = class1_threshold(clf)
    return {"hate": (1, threshold), **({"toxic": (1, threshold)} if "toxic" in clf.labels[1] else {})}


def uncalibrated(p, clf, column):
    """The model's own probability of yes (T = 1) from the calibrated one: p = σ(z / T) for a label's
    logit z, or of class 1 over class 0 in a two-class softmax of one T, so σ(T · logit(p)) undoes it."""
    if clf.temperatures is None:
        return p
    z = np.log(np.clip(p, 1e-12, 1)) - np.log(np.clip(1 - p, 1e-12, 1))
    return 1 / (1 + np.exp(-clf.temperatures[column] * z))


# -----------------------------------------------------------------------------
# 2. Each dataset's test texts


def dataset_test_texts(run_dir, info, name, cache):
    """(texts, [toxic, hate] per text, -1 where not annotated, group per text, what the groups are) of
    dataset `name`'s test split: the run's own test texts of that dataset when it trained on it, else the
    dataset's own grouped split (with the run's split seed): texts it never saw. Both ways, a dataset's
    test texts are the same for every run of one split seed (a joined split is each source's own split);
    the groups (authors, near-duplicates: the bootstrap's clusters) are the dataset's own."""
    mirror, normalize = info.get("data_mirror"), info.get("normalize", True)
    key = (name, mirror, json.dumps(normalize, default=str))
    if key not in cache:
        both = corpus.load_dataset(name, mirror=mirror, normalize=normalize, multilabel=True)
        cache[key] = (dict(zip(both.texts, both.labels, strict=True)),
                      dict(zip(both.texts, both.groups or [None] * len(both), strict=True)), splits.cluster_words(both.grouping))
    labels_of, groups_of, words = cache[key]
    if name in str(info["data"]).split("+"):
        test, _, _ = runs.load_test_split(run_dir, info)
        texts = [t for t, s in zip(test.texts, test.sources or [name] * len(test), strict=True) if s == name]
    else:
        alone = corpus.load_dataset(name, mirror=mirror, normalize=normalize)
        texts = splits.apply_split(alone, splits.make_split(alone, seed=info.get("split_seed", 0)))["test"].texts
    return texts, [labels_of[t] for t in texts], [groups_of[t] for t in texts], words


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
        entry = {"behaviour": behaviour.run_suite(cases, suite_predict(clf), suite_thresholds(clf)), "cross": {}}
        trained_on = str(info["data"]).split("+")
        columns = label_columns(clf)
        if columns and set(trained_on) & set(CROSS_DATASETS) and not info.get("three_class"):
            for dataset in CROSS_DATASETS:
                texts, labels, text_groups, words = dataset_test_texts(d, info, dataset, cache)
                probs = clf.predict_proba(texts)
                texts_sha = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
                entry["cross"][dataset] = {"seen": dataset in trained_on, "texts_sha256": texts_sha, "clusters_of": words,
                                           "clusters": bootstrap.cluster_ids(text_groups).tolist()}
                for label, (column, threshold) in columns.items():
                    y = np.asarray([pair[behaviour.LABELS.index(label)] for pair in labels])
                    if len(set(y[y >= 0].tolist())) == 2:  # hate_speech18 marks toxic on hate only: no "no" to score
                        p = probs[:, column]
                        entry["cross"][dataset][label] = {
                            **metrics.label_metrics(y, p, threshold), "labels": y.tolist(),
                            "decisions": (p >= threshold).astype(int).tolist(),
                            # does a probability still mean what it says on text from elsewhere? And did the
                            # temperature fitted on validation help there (the model's own: T = 1)?
                            "ece": calibration.ece(p[y >= 0], y[y >= 0]),
                            "ece_uncalibrated": calibration.ece(uncalibrated(p, clf, column)[y >= 0], y[y >= 0]),
                            "average_precision": calibration.average_precision(y[y >= 0], p[y >= 0])}
        out[name] = entry
    return out


def unseen_sources(extras, groups, resamples=1000, seed=0):
    """
    Leave one source out: every model trained on one of the two datasets (with or without the
    templates) and never on the other, scored on hate in the other's test split: text from elsewhere,
    the project's stand-in for text nobody here has seen. Hate macro-F1 and recall with 95% intervals
    (cluster bootstrap over that dataset's groups, and over the model's seeds), precision, ECE and
    average precision (means over seeds).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for g in groups:
        entries = [extras[n]["cross"] for n in g["names"]]
        for dataset in CROSS_DATASETS:
            if not all("hate" in e.get(dataset, {}) and not e[dataset]["seen"] for e in entries):
                continue
            first = entries[0][dataset]
            y = np.asarray(first["hate"]["labels"])
            keep = y >= 0
            clusters = first.get("clusters") or bootstrap.cluster_ids(None, len(y))
            weights = bootstrap.cluster_weights(clusters, resamples, rng)[:, keep]
            decided = [np.asarray(e[dataset]["hate"]["decisions"])[keep] for e in entries]
            scores = bootstrap.model_scores(y[keep], decided, 2, weights, bootstrap.draw_seeds(len(decided), resamples, rng))
            mean = {k: float(np.mean([e[dataset]["hate"].get(k, np.nan) for e in entries]))
                    for k in ("precision", "ece", "ece_uncalibrated", "average_precision")}
            rows.append({"model": g["label"], "trained_on": "+".join(d for d in CROSS_DATASETS if entries[0][d]["seen"]),
                         "scored_on": dataset, "n": int(keep.sum()), "hate": int(y[keep].sum()), "seeds": len(entries),
                         "macro_f1": bootstrap.percentile(*scores["macro_f1"]), "recall": bootstrap.percentile(*scores["recall"]),
                         **mean})
    return rows


def unseen_markdown(rows, resamples=1000, seed=0):
    """The leave-one-source-out table of unseen_sources' rows."""
    lines = ["### Leave one source out: hate on the dataset a model never saw", "",
             "Each model trained on one dataset (with the training templates where it says so in its settings) and "
             "scored on hate in the other dataset's grouped test split. In brackets, 95% intervals each alone (cluster "
             f"bootstrap over that dataset's groups, and over seeds; {resamples:,} resamples, seed {seed}); which model is "
             "better is for the paired differences below, whose intervals hold together. Precision, ECE (15 bins) at "
             "the temperature fitted on validation and at the model's own (T = 1), and average precision: mean over "
             "seeds.", ""]
    lines.append(markdown_table(
        ["model", "trained on", "scored on (never seen)", "texts (hate)", "hate macro-F1", "hate recall", "precision",
         "ECE (T = 1)", "AP"],
        [[r["model"], r["trained_on"], r["scored_on"], f"{r['n']:,} ({r['hate']:,})", interval(r["macro_f1"]),
          interval(r["recall"]), f"{r['precision']:.3f}", f"{r['ece']:.3f} ({r['ece_uncalibrated']:.3f})",
          f"{r['average_precision']:.3f}"] for r in rows]))
    return "\n".join(lines)


def cross_comparisons(extras, groups, resamples=1000, seed=0):
    """
    Paired differences of macro-F1 between every two models on each dataset's test texts and label,
    where both were scored on the very same texts: one family of simultaneous intervals over the whole
    table (bootstrap.simultaneous), from the cluster bootstrap over each dataset's groups and over the
    models' seeds, each with the sentence its interval allows.
    """
    rng = np.random.default_rng(seed)
    draws = {g["label"]: bootstrap.draw_seeds(len(g["names"]), resamples, rng) for g in groups}  # shared by every row
    weights, scores, rows, diffs = {}, {}, [], []
    for dataset in CROSS_DATASETS:
        for label in behaviour.LABELS:
            scored = [g for g in groups if all(label in extras[n]["cross"].get(dataset, {}) for n in g["names"])]
            for i, a in enumerate(scored):
                for b in scored[i + 1:]:
                    entries = [extras[n]["cross"][dataset] for n in a["names"] + b["names"]]
                    if len({e["texts_sha256"] for e in entries}) > 1:
                        continue  # not the same test texts: no pairing
                    first = entries[0]
                    y = np.asarray(first[label]["labels"])
                    keep = y >= 0
                    clusters = first.get("clusters") or bootstrap.cluster_ids(None, len(y))  # older results: texts alone
                    if first["texts_sha256"] not in weights:  # one draw of a dataset's clusters for all its rows
                        weights[first["texts_sha256"]] = bootstrap.cluster_weights(clusters, resamples, rng)
                    for g in (a, b):  # each model scored once per dataset and label
                        if (dataset, label, g["label"]) not in scores:
                            decided = [np.asarray(extras[n]["cross"][dataset][label]["decisions"])[keep] for n in g["names"]]
                            scores[dataset, label, g["label"]] = bootstrap.model_scores(
                                y[keep], decided, 2, weights[first["texts_sha256"]][:, keep], draws[g["label"]])["macro_f1"]
                    (pa, ba), (pb, bb) = scores[dataset, label, a["label"]], scores[dataset, label, b["label"]]
                    diffs.append((pa - pb, ba - bb))
                    rows.append({"dataset": dataset, "label": label, "a": a["label"], "b": b["label"], "n": int(keep.sum()),
                                 "clusters": len(set(np.asarray(clusters)[keep].tolist())), "clusters_of": first.get("clusters_of")})
    for row, d in zip(rows, bootstrap.simultaneous(diffs), strict=True):
        row.update(d)
        row["conclusion"] = metrics.conclusion(row["a"], row["b"], f"{row['label']} macro-F1 on {row['dataset']}", d)
    return rows


def behaviour_comparisons(extras, groups, resamples=1000, seed=0):
    """Paired differences of the behaviour suite's mean pass rate between every two models, per question:
    one family of simultaneous intervals, from the cluster bootstrap over the suite's templates (the same
    draws for every model) and the models' seeds."""
    rng = np.random.default_rng(seed)
    draws = {g["label"]: bootstrap.draw_seeds(len(g["names"]), resamples, rng) for g in groups}
    rows, diffs = [], []
    for label in ("hate", "toxic"):
        answered = [g for g in groups if all(label in extras[n]["behaviour"]["summary"] for n in g["names"])]
        if len(answered) < 2:
            continue
        results = {g["label"]: [extras[n]["behaviour"] for n in g["names"]] for g in answered}
        templates, strata = bootstrap.suite_templates([r for rs in results.values() for r in rs], label)
        weights = bootstrap.cluster_weights(np.arange(len(templates)), resamples, rng, strata)
        means = {g: bootstrap.pass_rate_scores(rs, label, templates, weights, draws[g])["mean"] for g, rs in results.items()}
        for i, a in enumerate(answered):
            for b in answered[i + 1:]:
                (pa, ba), (pb, bb) = means[a["label"]], means[b["label"]]
                diffs.append((pa - pb, ba - bb))
                rows.append({"label": label, "a": a["label"], "b": b["label"]})
    for row, d in zip(rows, bootstrap.simultaneous(diffs), strict=True):
        row.update(d)
        row["conclusion"] = metrics.conclusion(row["a"], row["b"], f"the behaviour suite's mean {row['label']} pass rate", d)
    return rows


# -----------------------------------------------------------------------------
# 4. The tables, and beyond.md / beyond.json


def interval(d, spec=".3f"):
    return f"{d['value']:{spec}} [{d['low']:{spec}}, {d['high']:{spec}}]"


def beyond_markdown(extras, groups, resamples=1000, seed=0):
    """Tables: the functional suite per model (mean pass rate over functionalities with its interval, the
    lowest one), toxic and hate on each dataset's test split, the paired differences there and on the
    suite, and the pass rate of every functionality with its interval."""
    several = any(len(g["names"]) > 1 for g in groups)
    lines = ["## Beyond the test split", "",
             "Behaviour: the functional suite of `suites/behaviour.toml` (templates written for nanobert, never "
             "trained on), mean pass rate over its functionalities for each question, and the lowest one. A model of "
             f"one class per text answers both questions with its one flag. In brackets, {resamples:,} resamples: "
             + behaviour.INTERVALS + ". On each dataset's test split: the run's own test texts of a dataset it "
             "trained on, else that dataset's grouped test split (text it never saw, marked *); macro-F1 of the yes/no "
             "decision on the texts that annotate the label" + (", mean ± std over seeds." if several else "."), ""]
    header = ["model", "behaviour hate: mean", "hate: lowest", "behaviour toxic: mean", "toxic: lowest"] + \
        [f"{d} {label}: macro-F1 (F1)" for d in CROSS_DATASETS for label in ("hate", "toxic")]
    rows, rates = [], {}
    for g in groups:
        entries = [extras[n] for n in g["names"]]
        line = [g["label"]]
        for label in ("hate", "toxic"):
            summaries = [e["behaviour"]["summary"].get(label, {}) for e in entries]
            if not all(summaries):
                line += ["n/a", "n/a"]
                continue
            rates[g["label"], label] = bootstrap.pass_rates([e["behaviour"] for e in entries], label, resamples, seed)
            line += [interval(rates[g["label"], label]["mean"]),
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
    unseen = unseen_sources(extras, groups, resamples, seed)
    if unseen:
        lines += ["", unseen_markdown(unseen, resamples, seed)]
    pairs = cross_comparisons(extras, groups, resamples, seed)
    if pairs:
        over = "; ".join(f"{p['clusters']:,} {p['clusters_of']} of {d}'s {p['n']:,} test texts" if p["clusters_of"] else
                         f"{d}'s {p['n']:,} test texts, each its own cluster" for d, p in {p["dataset"]: p for p in pairs}.items())
        lines += ["", f"Paired differences on the same test texts: {LEVEL_WORDS} cluster bootstrap over {over}"
                  + (", and over seeds" if several else "") + f", {resamples:,} resamples (seed {seed}); simultaneous intervals (max-t) over "
                  f"the {len(pairs)} differences of this table. *Better* only where an interval excludes 0, else *no "
                  "difference detected*.", ""]
        lines.append(markdown_table(["dataset", "label", "A − B", "Δ macro-F1 [simultaneous 95% CI]"],
                                    [[p["dataset"], p["label"], f"{p['a']} − {p['b']}",
                                      f"{p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]"] for p in pairs]))
        lines += [""] + [f"- {p['conclusion']}." for p in pairs]
    suite_pairs = behaviour_comparisons(extras, groups, resamples, seed)
    if suite_pairs:
        lines += ["", f"Paired differences of the behaviour suite's mean pass rate: {LEVEL_WORDS} cluster bootstrap over its "
                  "templates (drawn within the functionality that wrote them; the same draws for every model)"
                  + (", and over seeds" if several else "") + f", {resamples:,} resamples (seed {seed}); simultaneous intervals (max-t) over the "
                  f"{len(suite_pairs)} differences of this table.", ""]
        lines.append(markdown_table(["question", "A − B", "Δ mean pass rate [simultaneous 95% CI]"],
                                    [[p["label"], f"{p['a']} − {p['b']}", f"{p['diff']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]"]
                                     for p in suite_pairs]))
        lines += [""] + [f"- {p['conclusion']}." for p in suite_pairs]
    functionalities = list(next(iter(extras.values()))["behaviour"]["functionalities"])
    table = [[f] + [interval(rates[g["label"], "hate"][f], ".2f") if f in rates.get((g["label"], "hate"), {}) else "–"
                    for g in groups] for f in functionalities]
    lines += ["", "Pass rate of each functionality, hate question (INV/DIR: consistency and direction), in brackets the "
              "interval as above:", "", markdown_table(["functionality"] + [g["label"] for g in groups], table)]
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
