"""
The model card: README.md in every run folder, what the model is, how it was made, how it scored
on its test split, how to use it, and what it is not for.

    test_scores(net, tokenizer, info, test)   the test scores train.py keeps in run.json, for the card
    write_model_card(run_dir)                 README.md in the run folder (model_card: its text)

The test split is scored once, when a run finishes; nothing was chosen on it. Its accuracy and macro-F1
come with 95% intervals of the cluster bootstrap (bootstrap.py): the test texts resampled by author
or near-duplicate group, so that texts that hang together are not counted as independent evidence.
"""

from pathlib import Path

import numpy as np

import batching
import bootstrap
import calibration
import classifier
import files
import metrics
import naming
import runs
import splits
from tables import fmt_num, fmt_seconds

RESAMPLES = 1000  # of the bootstrap intervals of the test scores

# Known faults of a dataset's labels, said on the card of every model trained on it.
LIMITATIONS = {
    "davidson": "Davidson et al.'s labels mark profanity and dialect as much as hate: 77% of the tweets are "
                "'offensive language', mostly swearing, so a model trained on them flags swearing (also friendly "
                "swearing) and African-American English far more readily than it finds hate without swear words.",
    "hate_speech18": "hate_speech18 is sentences from one white-supremacist forum: its hate is that forum's, and a "
                     "model trained on it alone has seen little profanity, little other hate and no tweets.",
}


def test_scores(net, tokenizer, info, test, batch_size=64):
    """Accuracy, macro-F1 and (two classes) precision/recall/F1/ROC-AUC of class 1 on a test split;
    multi-label: those of each label at its threshold, under "labels"; and the ECE of the probabilities,
    calibrated at the run's temperatures as Classifier gives them."""
    loader = batching.Loader(test.texts, test.labels, tokenizer, info.get("max_length", 128), batch_size, by_length=True)
    probs = classifier.predict_probs(net, loader, classifier.run_temperatures(net, info)).numpy()
    ece = calibration.ece_of(probs, test.labels, test.label_names, test.multilabel)
    keys = ("n", "accuracy", "macro_f1", "precision", "recall", "f1", "roc_auc", "threshold")
    # The intervals resample the test texts by cluster (an author, a near-duplicate group): bootstrap.py.
    clusters = bootstrap.cluster_ids(test.groups, len(test))
    words = splits.cluster_words(test.grouping) if test.groups is not None else None
    if test.multilabel:
        per_label = metrics.multilabel_metrics(test.labels, probs, test.label_names, info.get("thresholds"))["labels"]
        out = {"n": len(test), "labels": {k: {key: v[key] for key in keys if key in v} for k, v in per_label.items()}}
        labels = np.asarray(test.labels)
        for j, m in enumerate(out["labels"].values()):
            keep = labels[:, j] >= 0
            decided = (probs[keep, j] >= m["threshold"]).astype(np.int64)
            m["intervals"] = bootstrap.score_intervals(labels[keep, j], decided, 2, clusters[keep], RESAMPLES)
            m["bootstrap"] = {"clusters_of": words, "clusters": len(np.unique(clusters[keep])), "resamples": RESAMPLES}
        for label, m in out["labels"].items():
            m["ece"] = ece[label]
        return out
    num_classes = probs.shape[1]
    preds = metrics.decisions(probs, runs.decision_threshold(info))  # two classes: at the threshold chosen on validation
    m = metrics.metrics(test.labels, preds.tolist(), num_classes, probs[:, 1].tolist() if num_classes == 2 else None)
    m["threshold"] = runs.decision_threshold(info)
    out = {k: m[k] for k in keys if k in m}
    out["intervals"] = bootstrap.score_intervals(test.labels, preds, num_classes, clusters, RESAMPLES)
    out["bootstrap"] = {"clusters_of": words, "clusters": len(np.unique(clusters)), "resamples": RESAMPLES}
    out["ece"] = next(iter(ece.values()))  # that of class 1, or of the most probable class
    return out


def test_cell(m):
    """The test scores of a run as the card shows them: accuracy and macro-F1 with their intervals, where kept."""
    intervals = m.get("intervals", {})
    return ", ".join(f"{header} {fmt_num(m.get(k))}" + (f" [{fmt_num(intervals[k][0])}, {fmt_num(intervals[k][1])}]" if k in intervals else "")
                     for header, k in metrics.SCORE_NAMES if k in m)


def model_card(info, summary=None, name="model"):
    """The text of a run's README.md."""
    info = runs.as_info(info)
    s = info.settings
    labels = runs.label_names_of(info) or []
    method = naming.method_label(info)
    made = {"teacher": f"full fine-tuning of `{s.get('model')}`",
            "distill": f"a student with layers {info.get('teacher_layers')} of the teacher `{s.get('teacher')}`, "
                       f"distilled (α={fmt_num(s.get('alpha'), '.3g')} CE, β={fmt_num(s.get('beta'), '.3g')} KL at "
                       f"T={s.get('temperature')}, γ={fmt_num(s.get('gamma'), '.3g')} {s.get('hidden_loss')} hidden-state loss)"
                       + (f"; the KL towards the mean of it and `{s['ensemble']}` (an ensemble teacher)" if s.get("ensemble") else ""),
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
        judged = f"{s['select_label']} macro-F1" if s.get("select_label") else "macro-F1"  # --select-label
        lines.append(f"| best epoch | {summary.get('best_epoch')} (validation {judged} "
                     f"{fmt_num(summary.get('best_val_macro_f1'))}); {fmt_seconds(summary.get('wall_seconds'))} of training |")
    test = info.get("test")
    if test and "labels" in test:  # two questions: a row per label, at its threshold
        for label, m in test["labels"].items():
            lines.append(f"| test, {label} ({m['n']} texts) | {test_cell(m)} at threshold {fmt_num(m.get('threshold'), '.3f')} |")
    elif test:
        decided = "" if len(labels) != 2 else f" at threshold {fmt_num(test['threshold'], '.3f')} (chosen on validation)" \
            if test.get("threshold") is not None else " at the most probable class"
        lines.append(f"| test ({test['n']} texts) | {test_cell(test)}"
                     + (f" (precision/recall/F1 of *{labels[1]}*){decided}" if len(labels) == 2 else "") + " |")
    if test and "intervals" in test:  # runs made before intervals were kept have none
        b = test["bootstrap"]
        lines.append(f"| intervals | in brackets: {bootstrap.describe(test['n'], b['clusters'], b['clusters_of'], b['resamples'])}"
                     "; one seed, so the training is held fixed |")
    elif test and all("intervals" in m for m in test.get("labels", {"": {}}).values()):
        b = next(iter(test["labels"].values()))["bootstrap"]
        counts = ", ".join(f"{label}: {m['bootstrap']['clusters']:,} clusters of {m['n']:,} texts" for label, m in test["labels"].items())
        over = f"grouped by {b['clusters_of']}" if b["clusters_of"] else "each text its own cluster (the data names no groups)"
        lines.append(f"| intervals | in brackets: {bootstrap.LEVEL:.0%} cluster bootstrap over each label's test texts, {over} "
                     f"({counts}), {b['resamples']:,} resamples; one seed, so the training is held fixed |")
    lines.append(f"| calibration | {calibration_cell(info)} |")
    lines += ["", "## Use", "",
              "```python", "from classifier import Classifier", "",
              f'clf = Classifier.from_run("{info.dir or "RUN_DIR"}")', 'clf.predict(["some comment"])', "```", "",
              f"or `python eval.py predict --run {info.dir or 'RUN_DIR'} \"some comment\"`, or a whole file with "
              "`--input comments.csv --text-column text --output labelled.csv`.", "",
              f"These apply what `run.json` keeps: the temperatures ({temperature_words(info)}) and "
              f"the thresholds ({threshold_words(info)}). `transformers.pipeline` on this folder applies "
              "neither: it returns the raw softmax (two questions: sigmoid) of the logits.", "",
              "## Intended use and limitations", "",
              "For research on toxic-comment detection and for screening comments with a human in the loop; not for "
              "decisions about people without review.", ""]
    dataset = str(s.get("data"))
    lines += [f"- {text}" for key, text in LIMITATIONS.items() if key in dataset]
    lines += ["- Scores are from a split of the same data the model was trained on; text from elsewhere (other "
              "sites, other years, other kinds of hate) will do worse. See the behaviour results of "
              "`eval.py` where they are present."]
    return "\n".join(lines) + "\n"


def temperature_words(info):
    recorded = info.get("temperatures")
    if not recorded:
        return "none: T = 1, the model's own probabilities"
    if info.get("problem_type") != "multi_label_classification":  # one T for the softmax, whatever the key
        return f"T = {next(iter(recorded.values())):.3f}, dividing each logit of the softmax"
    return ", ".join(f"{k} T = {v:.3f}" for k, v in recorded.items())


def threshold_words(info):
    recorded = info.get("thresholds")
    if not recorded:
        return "none: 0.5" if info.get("problem_type") == "multi_label_classification" else "none: the most probable class"
    return ", ".join(f"{k} {v:.3f}" for k, v in recorded.items())


def calibration_cell(info):
    """The card's calibration row: the temperatures fitted on validation, and the ECE before and after
    them on validation and on the test split (of each label's yes; two classes: of class 1's; more: of
    the most probable class)."""
    record = info.get("calibration")
    if not record:
        return "not calibrated (a run made before calibration): the probabilities are the model's own"
    test = info.get("test") or {}
    test_ece = {k: m.get("ece") for k, m in test["labels"].items()} if "labels" in test else \
        {k: test.get("ece") for k in record["validation_ece"]}
    ece = "; ".join(f"{k}: validation {fmt_num(e['before'])} → {fmt_num(e['after'])}, test {fmt_num(test_ece.get(k))}"
                    for k, e in record["validation_ece"].items())
    how = f"temperatures fitted on validation ({temperature_words(info)}); " if info.get("temperatures") else \
        "not calibrated (--calibrate off): T = 1; "
    return f"{how}expected calibration error ({record['bins']} bins), {ece}"


def write_model_card(run_dir, summary=None, name=None, info=None):
    """README.md of a run folder; info (default: its run.json) for a folder staged to take another's place."""
    run_dir = Path(run_dir)
    info = info or runs.read_info(run_dir)
    summary = summary or runs.read_summary(run_dir)
    files.write_text(run_dir / runs.CARD_FILE, model_card(info, summary, name or run_dir.name))
