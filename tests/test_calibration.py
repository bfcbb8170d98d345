"""Tests for calibration.py: temperatures recovered where they are known, the golden-section search
against a fine grid, the ECE and the reliability table by hand, the precision-recall curve and its
average precision by hand, and how run.json keys the temperatures. (A run that records them, and
the readers that apply them: test_train, test_classifier, test_eval, test_card, test_measure.)"""

import math

import numpy as np
import pytest
import torch

import calibration as C


def calibrated_set(n, classes, seed=0):
    """Logits (n, classes) and labels drawn from softmax(logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, classes))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_logits_scaled_from_a_calibrated_set_give_the_scale_back(classes, scale):
    logits, labels = calibrated_set(20_000, classes)
    assert C.fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)
    # Too sure (x3) or too timid (x0.5): dividing by the scale undoes it.
    assert C.fit_temperature(logits * scale, labels) == pytest.approx(scale, rel=0.05)


def test_the_search_finds_the_minimum_of_the_nll():
    logits, labels = calibrated_set(500, 3, seed=1)
    logits *= 2.2
    found = C.fit_temperature(logits, labels)
    grid = np.exp(np.linspace(math.log(0.5), math.log(10), 20_001))
    best = grid[np.argmin([C.nll(logits, labels, t) for t in grid])]
    assert found == pytest.approx(best, rel=2e-4)
    assert C.nll(logits, labels, found) <= min(C.nll(logits, labels, found * f) for f in (0.99, 1.01))


def test_nll_by_hand():
    # softmax([0, ln 3]) = (1/4, 3/4): -log(3/4) for class 1, -log(1/4) for class 0; at T = 2, (0, ln 3 / 2).
    logits = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])
    assert C.nll(logits, [1, 0], 1.0) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2)
    p1 = math.sqrt(3) / (1 + math.sqrt(3))
    assert C.nll(logits, [1, 1], 2.0) == pytest.approx(-math.log(p1))


def test_a_separated_validation_stops_at_the_lower_bound():
    logits = C.two_class_logits(np.array([-2.0, -1.0, 1.0, 2.0]))
    assert C.fit_temperature(logits, [0, 0, 1, 1]) == pytest.approx(C.T_RANGE[0], rel=1e-6)


def test_multilabel_fits_a_temperature_per_label_on_the_texts_that_annotate_it():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (20_000, 2))
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated sigmoids
    labels[::3, 0] = -1  # a third not annotated for the first label
    scaled = z * np.array([2.0, 0.5])
    t = C.fit(scaled, labels, multilabel=True)
    assert t == pytest.approx([2.0, 0.5], rel=0.06)
    annotated = labels[:, 0] >= 0  # the unannotated texts count for nothing: the same T without them
    assert C.fit(scaled[annotated, :1], labels[annotated, :1], multilabel=True) == [t[0]]
    # A label with one answer only on its annotated texts: nothing to fit.
    assert C.fit(z, np.stack([labels[:, 0], np.zeros(len(z), int)], 1), multilabel=True)[1] == 1.0
    # A softmax: one T in every column.
    logits, y = calibrated_set(2000, 3)
    t3 = C.fit(logits * 2, y, multilabel=False)
    assert len(t3) == 3 and t3[0] == t3[1] == t3[2]


def test_probabilities_at_a_temperature():
    logits = torch.tensor([[1.0, 3.0], [-2.0, 0.5]])
    assert torch.equal(C.probabilities(logits, False), torch.softmax(logits, -1))  # None: the model's own, bit for bit
    assert torch.equal(C.probabilities(logits, False, [1.0, 1.0]), torch.softmax(logits, -1))
    assert torch.allclose(C.probabilities(logits, False, [2.0, 2.0]), torch.softmax(logits / 2, -1))
    assert torch.allclose(C.probabilities(logits, True, [2.0, 0.5]), torch.sigmoid(logits / torch.tensor([2.0, 0.5])))
    # A sigmoid is the softmax of (0, z): the same fit serves a label and a class.
    z = np.array([0.3, -1.2])
    assert np.allclose(torch.softmax(torch.tensor(C.two_class_logits(z)), -1)[:, 1].numpy(), 1 / (1 + np.exp(-z)))


def test_run_json_keys_the_temperatures_as_the_thresholds():
    assert C.by_name([1.5, 1.5], ["ok", "toxic"], False) == {"toxic": 1.5}  # two classes: class 1's name
    assert C.by_name([2.0, 0.5], ["toxic", "hate"], True) == {"toxic": 2.0, "hate": 0.5}
    assert C.by_name([3.0] * 3, ["a", "b", "c"], False) == {"a": 3.0, "b": 3.0, "c": 3.0}
    for t, names, multilabel in (([1.5, 1.5], ["ok", "toxic"], False), ([2.0, 0.5], ["toxic", "hate"], True),
                                 ([3.0] * 3, ["a", "b", "c"], False)):
        assert C.per_column(C.by_name(t, names, multilabel), names, multilabel) == t
    # An older run has none: T = 1 everywhere; a label it does not name, too.
    assert C.per_column(None, ["ok", "toxic"], False) == [1.0, 1.0]
    assert C.per_column({"toxic": 2.0}, ["toxic", "hate"], True) == [2.0, 1.0]


def test_ece_and_the_reliability_table_by_hand():
    probs, outcomes = [0.1, 0.2, 0.8, 0.9, 1.0], [0, 1, 1, 1, 0]
    table = C.reliability(probs, outcomes, bins=5)
    assert [b["count"] for b in table] == [1, 1, 0, 0, 3]  # [0, .2) [.2, .4) ... [.8, 1]: 1.0 in the last
    assert table[2]["confidence"] is None and table[2]["frequency"] is None
    assert table[4]["confidence"] == pytest.approx(0.9) and table[4]["frequency"] == pytest.approx(2 / 3)
    # ECE = 1/5 |0 - .1| + 1/5 |1 - .2| + 3/5 |2/3 - .9| = .02 + .16 + .14
    assert C.ece(probs, outcomes, bins=5) == pytest.approx(0.32)
    assert C.ece([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0], bins=4) == pytest.approx(0.0)  # says 25%, is 25%
    assert math.isnan(C.ece([], []))


def test_the_events_a_model_states_a_probability_for():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    (name, (p, hit)), = C.events(probs, [0, 1], ["a", "b", "c"], False).items()
    assert name == C.TOP_CLASS and p.tolist() == [0.7, 0.6] and hit.tolist() == [1, 0]
    (name, (p, y)), = C.events(np.array([[0.9, 0.1], [0.2, 0.8]]), [1, 1], ["ok", "toxic"], False).items()
    assert name == "toxic" and p.tolist() == [0.1, 0.8] and y.tolist() == [1, 1]
    both = C.events(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[-1, 0], [1, 1]]), ["toxic", "hate"], True)
    assert both["toxic"][0].tolist() == [0.2] and both["hate"][1].tolist() == [0, 1]


def test_precision_recall_curve_and_average_precision_by_hand():
    labels, scores = [1, 0, 1, 0, 1], [0.9, 0.8, 0.7, 0.6, 0.5]
    precision, recall, thresholds = C.pr_curve(labels, scores)
    assert thresholds.tolist() == scores
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4, 3 / 5])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])
    # AP = 1/3 (1 + 2/3 + 3/5): the precision at each positive
    assert C.average_precision(labels, scores) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # Tied scores are called together: 0.8 takes a positive and a negative at once.
    precision, recall, thresholds = C.pr_curve([1, 1, 0, 0, -1], [0.9, 0.8, 0.8, 0.1, 0.95])  # -1: not annotated
    assert thresholds.tolist() == [0.9, 0.8, 0.1] and precision.tolist() == pytest.approx([1, 2 / 3, 1 / 2])
    assert C.average_precision([1, 1, 0, 0], [0.9, 0.8, 0.8, 0.1]) == pytest.approx(1 / 2 + 1 / 2 * 2 / 3)
    assert C.average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert math.isnan(C.average_precision([0, 0], [0.3, 0.4]))
