"""
Metrics and statistics, written out by hand with numpy (no sklearn): each is a few lines, and the
degenerate cases (a model that never predicts a class) are said, not hidden.

Read top to bottom:
  1. scores of one set of predictions: confusion matrix, precision/recall/F1, macro-F1, ROC-AUC, and
     the decisions they are made of (argmax, or a threshold on class 1), and how alike two scorings
     of one model decide;
  2. statistics over runs and test examples: mean ± std over seeds, the scores of every bootstrap
     resample at once (the resampling itself: bootstrap.py), McNemar's exact test, Holm's adjustment
     for many comparisons, and a sentence per comparison that claims no more than its interval allows;
  3. multi-label: each label a yes/no question on the texts that annotate it; its scores, those of
     every label of a model, and its decision threshold.

This module imports nothing from the project.
"""

import math

import numpy as np

# -----------------------------------------------------------------------------
# 1. Scores


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


def decisions(probs, threshold=None):
    """(N,) the class of each text from its probabilities (N, C): the most probable one, or with two classes
    and a threshold (chosen on validation: best_threshold), class 1 where its probability reaches it."""
    probs = np.asarray(probs)
    if threshold is None or probs.shape[1] != 2:
        return probs.argmax(1)
    return (probs[:, 1] >= threshold).astype(np.int64)


def same_decisions(probs_a, threshold_a, probs_b, threshold_b):
    """One model scored two ways (fp32 and int8, bf16 and fp32): ((N,) True where both decide alike, each
    at its own threshold, and the largest difference in a probability)."""
    same = decisions(probs_a, threshold_a) == decisions(probs_b, threshold_b)
    return same, float(np.abs(np.asarray(probs_a) - np.asarray(probs_b)).max())


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
# 2. Statistics: seeds, resampled scores, McNemar, Holm


def mean_std(values):
    """(mean, sample standard deviation; 0 for one value) of the defined (non-NaN, non-None) values."""
    v = [float(x) for x in values if x is not None and not math.isnan(x)]
    if not v:
        return float("nan"), float("nan")
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def weighted_scores(weights, labels, preds, num_classes):
    """
    Accuracy and macro-F1 of preds under each row of weights (B, N), and for two classes the recall
    of class 1 (the yes found): all resamples at once, as matrix products. F1 = 2 TP / (predicted +
    actual), equal to 2PR/(P+R), and, like metrics(), undefined (left out of the macro mean) for a
    class neither present nor predicted in a resample; recall is NaN in a resample with no yes.
    """
    labels, preds = np.asarray(labels), np.asarray(preds)
    accuracy = weights @ (preds == labels) / weights.sum(1)
    f1 = np.empty((num_classes, len(weights)))
    for c in range(num_classes):
        tp = weights @ ((preds == c) & (labels == c))
        both = weights @ (preds == c) + weights @ (labels == c)
        f1[c] = np.where(both > 0, 2 * tp / np.maximum(both, 1), np.nan)
    out = {"accuracy": accuracy, "macro_f1": np.nanmean(f1, axis=0)}
    if num_classes == 2:
        yes = weights @ (labels == 1)
        out["recall"] = np.where(yes > 0, (weights @ ((preds == 1) & (labels == 1))) / np.maximum(yes, 1), np.nan)
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
    """
    A sentence that claims no more than its interval allows, d: {"diff", "low", "high"} of A - B from an
    adjusted (simultaneous) interval. "A is better than B" only when the interval excludes 0; otherwise
    "no difference detected", which is not "as good as": a difference the interval cannot see may exist.
    """
    interval = f"{name_a} − {name_b} = {d['diff']:+.4f}, adjusted 95% CI [{d['low']:+.4f}, {d['high']:+.4f}]"
    if d["low"] <= 0 <= d["high"]:
        return f"no difference detected between {name_a} and {name_b} in {metric} (the interval contains 0: {interval})"
    better, worse = (name_a, name_b) if d["low"] > 0 else (name_b, name_a)
    return f"{better} is better than {worse} in {metric} ({interval})"


def holm(p_values):
    """Holm's step-down adjustment: p-values that keep the chance of any false 'significant' among
    all the comparisons at the level asked for. Sorted ascending, the i-th smallest (0-based) of m
    is multiplied by m - i, and the adjusted values are made non-decreasing in that order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# The scores of a report, as (header, key of metrics()); the last four are those of class 1 or need two classes.
SCORE_NAMES = [("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("F1", "f1"),
               ("macro-F1", "macro_f1"), ("ROC-AUC", "roc_auc")]


# -----------------------------------------------------------------------------
# 3. Multi-label: each label a yes/no question, scored on the texts that annotate it (-1: not annotated)


def label_metrics(labels, probs, threshold=0.5):
    """metrics() of one label of a multi-label task at a threshold on its probability, on the texts
    whose source annotates the label."""
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    keep = labels >= 0
    y, p = labels[keep].astype(int), probs[keep]
    out = metrics(y.tolist(), (p >= threshold).astype(int).tolist(), 2, p.tolist())
    out["threshold"] = float(threshold)
    return out


def multilabel_metrics(labels, probs, names, thresholds=None):
    """
    The scores of a multi-label model: label_metrics() of every label at its threshold (0.5 where
    none is given) under "labels", and the mean over the labels of their accuracy and macro-F1.
    labels (N, L), -1 where a text's source does not annotate the label; probs (N, L); names: the
    L label names, in column order.
    """
    labels, probs, thresholds = np.asarray(labels), np.asarray(probs), thresholds or {}
    per_label = {name: label_metrics(labels[:, j], probs[:, j], thresholds.get(name, 0.5)) for j, name in enumerate(names)}
    return {"n": len(labels), "labels": per_label,
            **{k: float(np.mean([m[k] for m in per_label.values()])) for k in ("accuracy", "macro_f1")}}


def best_threshold(labels, probs, target_precision=None, target_recall=None):
    """
    The threshold on one label's probability, chosen on validation texts that annotate the label:
    the one with the best macro-F1 of the yes/no decision, or with target_precision the lowest one
    whose precision reaches it (the most recall at that precision; the best macro-F1 if none does),
    or with target_recall the highest one whose recall reaches it (the most precision at that recall;
    the lowest threshold, calling every text yes, always reaches it). A text is called yes when its
    probability is >= the threshold.
    """
    labels, probs = np.asarray(labels), np.asarray(probs, dtype=np.float64)
    keep = labels >= 0
    y, p = labels[keep].astype(int), probs[keep]
    if not len(y) or y.min() == y.max():
        return 0.5  # nothing to choose from: one class only
    order = np.argsort(-p, kind="stable")
    y, p = y[order], p[order]
    tp, fp = np.cumsum(y), np.cumsum(1 - y)  # calling the first k + 1 texts yes
    last = np.r_[p[1:] != p[:-1], True]  # a threshold can only cut between different probabilities
    tp, fp, cut = tp[last], fp[last], p[last]
    pos, neg = y.sum(), len(y) - y.sum()
    fn, tn = pos - tp, neg - fp
    macro_f1 = (2 * tp / (2 * tp + fp + fn) + 2 * tn / np.maximum(2 * tn + fn + fp, 1)) / 2
    if target_precision is not None:
        reached = np.flatnonzero(tp / (tp + fp) >= target_precision)
        if len(reached):
            return float(cut[reached[-1]])
    if target_recall is not None:  # recall only grows as the threshold falls: the first cut to reach it
        return float(cut[np.flatnonzero(tp / pos >= target_recall)[0]])
    return float(cut[int(np.argmax(macro_f1))])
