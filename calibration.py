"""
Calibration: whether a model's probabilities mean what they say, and temperature scaling, the
one-number repair (Guo et al., 2017, "On Calibration of Modern Neural Networks").

A model is calibrated when, of the texts it gives probability p, a share p are what it says: of the
comments it gives 30% hate, 30% are hate. A fine-tuned BERT is often too sure of itself (its logits
too large), and a model trained on one base rate misjudges another. Temperature scaling divides the
logits z by one number T > 0, fitted on the validation split:

    p = softmax(z / T)          one class per text: one T for the whole softmax
    p_l = sigmoid(z_l / T_l)    multi-label: each label its own yes/no question, its own T_l

T > 1 softens an overconfident model, T < 1 sharpens a timid one. Dividing by T > 0 keeps every
ranking: the most probable class stays the most probable, and a label's texts keep their order. So
accuracy, ROC-AUC and the decisions at a threshold chosen on the calibrated probabilities are those
of the uncalibrated model at the corresponding threshold (up to probabilities so near 0 or 1 that
float32 rounds them together): only what the numbers say changes.

Read top to bottom:
  1. the probabilities at a temperature, and how run.json keys the temperatures;
  2. fitting T: the negative log-likelihood on validation, minimised over log T;
  3. measuring calibration: the reliability table and the expected calibration error (ECE);
  4. the precision-recall curve of a label, and its average precision.

This module imports nothing from the project.
"""

import math

import numpy as np
import torch

BINS = 15  # equal-width bins of the reliability table and the ECE, as Guo et al. use
T_RANGE = (0.25, 20.0)  # where fit_temperature looks for T
TOP_CLASS = "most probable class"  # the event whose probability a model of three or more classes states

# -----------------------------------------------------------------------------
# 1. The probabilities at a temperature


def probabilities(logits, multilabel, temperatures=None):
    """(N, C) probabilities from logits (N, C) tensor: softmax(z / T) across the classes, or for a
    multi-label model sigmoid(z_l / T_l) per label. temperatures: (C,) the divisor of each column (a
    softmax: the same T in every column), None: T = 1, the probabilities as the model gives them."""
    z = logits if temperatures is None else logits / torch.as_tensor(temperatures, dtype=logits.dtype)
    return torch.sigmoid(z) if multilabel else torch.softmax(z, dim=-1)


def by_name(temperatures, names, multilabel) -> dict:
    """run.json's "temperatures", keyed as its "thresholds" are: by label name (multi-label), by the
    name of class 1 (two classes: the one yes/no question), and a softmax of more classes by every
    class's name (each logit is divided by the same T)."""
    if multilabel:
        return {name: float(t) for name, t in zip(names, temperatures, strict=True)}
    if len(names) == 2:
        return {names[1]: float(temperatures[1])}
    return {name: float(temperatures[0]) for name in names}


def per_column(recorded, names, multilabel) -> list:
    """(C,) the divisor of each logit column from run.json's "temperatures" (by_name); 1 for a label
    it does not name, and for every column of a run that recorded none (made before calibration)."""
    recorded = recorded or {}
    if multilabel:
        return [float(recorded.get(name, 1.0)) for name in names]
    found = [float(recorded[name]) for name in names if name in recorded]  # a softmax has one T
    return [found[0] if found else 1.0] * len(names)


# -----------------------------------------------------------------------------
# 2. Fitting T on validation


def nll(logits, labels, t):
    """The mean negative log-likelihood of the true classes at temperature t, in float64:

        NLL(T) = 1/N Σ_i [ log Σ_c exp(z_ic / T) − z_iy / T ]
    """
    z = np.asarray(logits, dtype=np.float64) / t  # (N, C)
    top = z.max(1, keepdims=True)  # subtracted before exp: no overflow
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(1))  # (N,)
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def fit_temperature(logits, labels, low=T_RANGE[0], high=T_RANGE[1], steps=50):
    """
    The T in [low, high] that minimises nll(logits (N, C), labels (N,), T). A yes/no label is the
    softmax of the two logits (0, z): sigmoid(z) = softmax([0, z])[1] (two_class_logits).

    NLL is convex in 1/T (a log-sum-exp of lines in 1/T, less a line), so it has one valley along
    log T, and a golden-section search finds it: keep two inner points of the bracket, drop the part
    beyond the higher one, and the bracket shrinks by 0.618 a step (50 steps: from 4.4 in log T to
    1e-10). When validation is perfectly separated NLL keeps falling as T -> 0 and the search stops
    at `low`: a small validation split, or one too easy, says too little to calibrate on.
    """
    labels = np.asarray(labels, dtype=np.int64)
    f = lambda log_t: nll(logits, labels, math.exp(log_t))  # noqa: E731
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2  # 0.618...: each step keeps the ratio of the bracket's parts
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:  # the valley lies left of d
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:  # ... or right of c
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return math.exp((a + b) / 2)


def two_class_logits(z):
    """(N,) logits of a yes/no label -> (N, 2) logits of a softmax with the same probabilities (0, z)."""
    z = np.asarray(z, dtype=np.float64)
    return np.stack([np.zeros_like(z), z], axis=1)


def fit(logits, labels, multilabel) -> list:
    """(C,) temperatures fitted on validation logits (N, C) and labels: one T per label of a multi-label
    model, on the texts that annotate it (labels (N, L), -1: not annotated), T = 1 for a label with
    only one answer there (nothing to fit); one T for a softmax (labels (N,)), in every column."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    if not multilabel:
        return [fit_temperature(logits, labels)] * logits.shape[1]
    out = []
    for j in range(logits.shape[1]):
        keep = labels[:, j] >= 0
        y = labels[keep, j].astype(np.int64)
        out.append(fit_temperature(two_class_logits(logits[keep, j]), y) if len(y) and y.min() < y.max() else 1.0)
    return out


# -----------------------------------------------------------------------------
# 3. Measuring calibration: the reliability table and the ECE


def events(probs, labels, names, multilabel) -> dict:
    """
    {name: (stated probabilities (n,), outcomes (n,) of 0 and 1)}: the yes/no events whose probability
    the model states, to compare with how often they happen. A multi-label model: each label's yes, on
    the texts that annotate it; two classes: class 1 (named by it); more classes: that the most
    probable class is the right one (TOP_CLASS; its probability is the model's confidence).
    """
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if multilabel:
        return {name: (probs[labels[:, j] >= 0, j], labels[labels[:, j] >= 0, j].astype(np.int64))
                for j, name in enumerate(names)}
    if len(names) == 2:
        return {names[1]: (probs[:, 1], (labels == 1).astype(np.int64))}
    return {TOP_CLASS: (probs.max(1), (probs.argmax(1) == labels).astype(np.int64))}


def reliability(probs, outcomes, bins=BINS) -> list:
    """
    The reliability table: the stated probabilities cut into `bins` equal-width bins, [k/B, (k+1)/B)
    (the last one closed at 1); per bin {"low", "high", "count", "confidence": the mean stated
    probability, "frequency": how often the event happened (the accuracy, for the top class)}. A
    calibrated model has confidence ≈ frequency in every bin. Empty bins have None for both.
    """
    probs, outcomes = np.asarray(probs, dtype=np.float64), np.asarray(outcomes, dtype=np.float64)
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)  # 1.0 goes in the last bin
    table = []
    for k in range(bins):
        inside = which == k
        n = int(inside.sum())
        table.append({"low": k / bins, "high": (k + 1) / bins, "count": n,
                      "confidence": float(probs[inside].mean()) if n else None,
                      "frequency": float(outcomes[inside].mean()) if n else None})
    return table


def ece(probs, outcomes, bins=BINS) -> float:
    """
    The expected calibration error: the gap between stated and observed, averaged over the bins of
    the reliability table weighted by how many texts fall in each,

        ECE = Σ_k (n_k / N) · | frequency_k − confidence_k |

    0 for a calibrated model; NaN with no texts.
    """
    table = reliability(probs, outcomes, bins)
    n = sum(b["count"] for b in table)
    if not n:
        return float("nan")
    return float(sum(b["count"] / n * abs(b["frequency"] - b["confidence"]) for b in table if b["count"]))


def ece_of(probs, labels, names, multilabel, bins=BINS) -> dict:
    """{event name: ECE} of every event the model states a probability for (events)."""
    return {name: ece(p, y, bins) for name, (p, y) in events(probs, labels, names, multilabel).items()}


# -----------------------------------------------------------------------------
# 4. The precision-recall curve of a label


def pr_curve(labels, scores):
    """
    (precision, recall, thresholds), each (K,): calling yes every text whose score is >= t, for t at
    each of the K distinct scores from the highest down (texts labelled -1, unannotated, left out):

        precision(t) = TP(t) / (TP(t) + FP(t)),   recall(t) = TP(t) / P

    with P the positives. The last point calls every text yes: recall 1, precision the base rate.
    """
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    keep = labels >= 0
    y, s = labels[keep].astype(np.int64), scores[keep]
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    tp, fp = np.cumsum(y), np.cumsum(1 - y)  # calling the first k + 1 texts yes
    last = np.r_[s[1:] != s[:-1], True]  # tied scores are called together
    tp, fp = tp[last], fp[last]
    recall = tp / y.sum() if y.sum() else np.full(len(tp), np.nan)
    return tp / (tp + fp), recall, s[last]


def average_precision(labels, scores) -> float:
    """
    The area under the precision-recall curve as a sum of steps: each threshold's precision times the
    recall it adds,

        AP = Σ_k (R_k − R_{k−1}) · P_k,   R_0 = 0

    the mean precision at the positives, ranked by score (ties together). NaN without positives.
    """
    precision, recall, _ = pr_curve(labels, scores)
    if not len(recall) or np.isnan(recall).any():
        return float("nan")
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
