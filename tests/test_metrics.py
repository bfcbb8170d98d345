"""Tests for metrics.py: every score, the resampled scores, McNemar and Holm against values worked out by
hand, the sentences a conclusion may say, the scores of a multi-label model, label by label, and the
thresholds chosen on validation (the resampling itself: tests/test_bootstrap.py)."""

import math

import numpy as np
import pytest

import metrics

nan = float("nan")


# -----------------------------------------------------------------------------
# Metrics, by hand


def test_metrics_by_hand():
    # 4 toxic, 6 not. Predictions: TP 2, FN 2, FP 1, TN 5.
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    preds = [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]
    m = metrics.metrics(labels, preds, 2)
    assert m["confusion_matrix"] == [[5, 1], [2, 2]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(4 / 7)  # 2 TP / (predicted + actual) = 4 / 7
    # Class 0: TP 5, predicted 7, actual 6: F1 = 10 / 13. Macro-F1 = (4/7 + 10/13) / 2 = 61/91.
    assert m["f1_per_class"] == pytest.approx([10 / 13, 4 / 7])
    assert m["macro_f1"] == pytest.approx(61 / 91)


def test_roc_auc_by_hand_with_a_tie():
    # Positives 0.9 0.8 0.4 0.3 against negatives 0.6 0.4 0.2 0.1 0.1 0.05: the positive pairs it ranks
    # above a negative are 6 + 6 + (4 + 1/2 for the tie at 0.4) + 4 = 20.5 of 24.
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.4, 0.3, 0.6, 0.4, 0.2, 0.1, 0.1, 0.05]
    assert metrics.roc_auc(labels, scores) == pytest.approx(41 / 48)
    assert metrics.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5  # no information: every pair a tie
    assert math.isnan(metrics.roc_auc([1, 1], [0.2, 0.9]))  # one class: undefined, not a crash


def test_a_model_that_predicts_one_class_everywhere():
    labels = [0, 0, 0, 1, 1]
    m = metrics.metrics(labels, [0] * 5, 2, [0.3] * 5)
    # Never predicts toxic: precision 0/0 is undefined, recall 0/2 = 0, F1 0; class 0: P 3/5, R 1, F1 3/4.
    assert math.isnan(m["precision"]) and m["recall"] == 0 and m["f1"] == 0
    assert m["macro_f1"] == pytest.approx(3 / 8) and m["accuracy"] == pytest.approx(3 / 5) and m["roc_auc"] == 0.5
    # Always toxic: precision 2/5, recall 1, F1 4/7; class 0 is never found, F1 0: macro-F1 2/7.
    m = metrics.metrics(labels, [1] * 5, 2)
    assert m["precision"] == pytest.approx(2 / 5) and m["recall"] == 1 and m["macro_f1"] == pytest.approx(2 / 7)
    # No toxic text at all in the test set: recall and ROC-AUC undefined (tables.py says why).
    m = metrics.metrics([0, 0], [0, 0], 2, [0.1, 0.2])
    assert math.isnan(m["recall"]) and math.isnan(m["roc_auc"]) and m["accuracy"] == 1


def test_mean_std_of_the_defined_values():
    assert metrics.mean_std([0.8, 0.9]) == (pytest.approx(0.85), pytest.approx(math.sqrt(0.005)))  # std with n - 1
    assert metrics.mean_std([0.5, None, nan]) == (0.5, 0.0) and all(map(math.isnan, metrics.mean_std([nan])))


# -----------------------------------------------------------------------------
# McNemar and the paired bootstrap, by hand


def test_mcnemar_exact_by_hand():
    # p = 2 P(X <= min(b, c)), X ~ Binomial(b + c, 1/2)
    assert metrics.mcnemar(0, 5) == pytest.approx(2 / 32)
    assert metrics.mcnemar(1, 4) == pytest.approx(2 * (1 + 5) / 32)
    assert metrics.mcnemar(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert metrics.mcnemar(3, 3) == 1.0 and metrics.mcnemar(0, 0) == 1.0  # capped at 1; no disagreement, no evidence
    # Large counts: exact in whole numbers, and close to the chi-square with continuity correction.
    chi2 = (abs(400 - 600) - 1) ** 2 / 1000
    assert metrics.mcnemar(400, 600) == metrics.mcnemar(600, 400)
    assert metrics.mcnemar(400, 600) == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=0.3)
    assert metrics.disagreements([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [0, 1, 1, 1, 1]) == (2, 1)


def test_weighted_scores_by_hand():
    labels, preds = [1, 1, 0, 0], [1, 0, 0, 0]
    weights = np.array([[1, 1, 1, 1], [2, 0, 1, 1], [0, 2, 1, 1]], dtype=float)
    s = metrics.weighted_scores(weights, labels, preds, 2)
    # Row 2: example 0 twice, example 1 left out: all right. Row 3: example 1 (a miss) twice: accuracy 2/4;
    # toxic F1 0 (never found), class 0 F1 = 2*2 / (4 predicted + 2 actual) = 2/3: macro 1/3.
    assert s["accuracy"] == pytest.approx([3 / 4, 1, 1 / 2])
    m = metrics.metrics(labels, preds, 2)
    assert s["macro_f1"] == pytest.approx([m["macro_f1"], 1, 1 / 3])


def test_conclusions_claim_no_more_than_the_interval():
    assert metrics.conclusion("odd", "even", "accuracy", {"diff": 0.0, "low": 0.0, "high": 0.0}).startswith(
        "no difference detected between odd and even in accuracy (the interval contains 0: odd − even = +0.0000, adjusted 95% CI")
    assert metrics.conclusion("odd", "lora", "accuracy", {"diff": 1.0, "low": 1.0, "high": 1.0}).startswith(
        "odd is better than lora in accuracy (odd − lora = +1.0000, adjusted 95% CI [+1.0000, +1.0000])")
    assert metrics.conclusion("lora", "odd", "accuracy", {"diff": -0.2, "low": -0.3, "high": -0.1}).startswith("odd is better than lora")
    # An interval that reaches 0 on one side detects nothing; never "as good as".
    wide = metrics.conclusion("odd", "even", "macro-F1", {"diff": -0.0034, "low": -0.0109, "high": 0.0039})
    assert wide.startswith("no difference detected") and "as good as" not in wide


def test_holm_by_hand():
    # Four tests, p sorted 0.01, 0.03, 0.04, 0.5: multiplied by 4, 3, 2, 1 -> 0.04, 0.09, 0.08, 0.5, then made
    # non-decreasing in that order -> 0.04, 0.09, 0.09, 0.5; back in the order given.
    assert metrics.holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert metrics.holm([0.5, 0.9]) == [1.0, 1.0] and metrics.holm([]) == []  # 0.5 * 2 = 1, and none below it after
    assert metrics.holm([0.02]) == [0.02]  # one test: nothing to adjust


# -----------------------------------------------------------------------------
# Multi-label: each label on the texts that annotate it


def test_multilabel_metrics_score_each_label_on_the_texts_that_annotate_it():
    # Two labels over six texts; toxic is not annotated (-1) on texts 2 and 5.
    labels = np.array([[1, 1], [0, 0], [-1, 0], [1, 0], [0, 1], [-1, 0]])
    probs = np.array([[0.9, 0.7], [0.3, 0.2], [0.99, 0.1], [0.45, 0.4], [0.6, 0.3], [0.1, 0.05]], dtype=np.float32)
    m = metrics.multilabel_metrics(labels, probs, ["toxic", "hate"], {"toxic": 0.5})
    toxic, hate = m["labels"]["toxic"], m["labels"]["hate"]
    # toxic on texts 0, 1, 3, 4: yes, no, no, yes for truths 1, 0, 1, 0: one of each outcome; ROC-AUC 3 of 4 pairs.
    assert toxic["n"] == 4 and toxic["confusion_matrix"] == [[1, 1], [1, 1]] and toxic["threshold"] == 0.5
    assert toxic["accuracy"] == 0.5 and toxic["macro_f1"] == 0.5 and toxic["roc_auc"] == 0.75
    # hate on all six at 0.5 (no threshold given): only text 0 yes; F1 2/3 and 8/9; ROC-AUC 7 of 8 pairs.
    assert hate["n"] == 6 and hate["confusion_matrix"] == [[4, 0], [1, 1]] and hate["threshold"] == 0.5
    assert hate["accuracy"] == pytest.approx(5 / 6) and hate["macro_f1"] == pytest.approx(7 / 9) and hate["roc_auc"] == 0.875
    assert m["n"] == 6 and m["accuracy"] == pytest.approx(2 / 3) and m["macro_f1"] == pytest.approx(23 / 36)
    assert list(m) == ["n", "labels", "accuracy", "macro_f1"] and type(m["accuracy"]) is float
    # Each label is label_metrics() of its column at its threshold, nothing else.
    lower = metrics.multilabel_metrics(labels.tolist(), probs, ["toxic", "hate"], {"hate": 0.25})
    assert lower["labels"]["toxic"] == toxic and lower["labels"]["hate"] == metrics.label_metrics(labels[:, 1], probs[:, 1], 0.25)
    assert lower["labels"]["hate"]["confusion_matrix"] == [[3, 1], [0, 2]]


def test_best_threshold_by_hand_for_macro_f1_a_precision_or_a_recall():
    labels, probs = [1, 1, 0, 1, 0, 0, 0, -1], [0.9, 0.8, 0.7, 0.6, 0.3, 0.2, 0.1, 0.65]  # -1: not annotated
    # Cutting below 0.6: TP 3, FP 1, FN 0, TN 3, macro-F1 (6/7 + 6/7) / 2, the best of the cuts.
    assert metrics.best_threshold(labels, probs) == 0.6
    # Precision 1 down to 0.8 (2 of 3 found), 2/3 at 0.7: the lowest cut that keeps it.
    assert metrics.best_threshold(labels, probs, target_precision=0.9) == 0.8
    # Recall 1/3 at 0.9, 2/3 at 0.8, all at 0.6: the highest cut that reaches it.
    assert metrics.best_threshold(labels, probs, target_recall=0.3) == 0.9
    assert metrics.best_threshold(labels, probs, target_recall=0.6) == 0.8
    assert metrics.best_threshold(labels, probs, target_recall=1.0) == 0.6
    assert metrics.best_threshold([0, 0, -1], [0.2, 0.4, 0.9], target_recall=0.5) == 0.5  # one class: nothing to choose
