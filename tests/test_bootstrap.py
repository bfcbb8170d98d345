"""Tests for bootstrap.py against values worked out by hand: whole clusters drawn, an interval that widens
when texts hang together and when seeds differ, max-t intervals and p-values of a family, the pass rates
of a tiny behaviour suite; and the decisions at a threshold that those intervals are made of."""

import math

import numpy as np
import pytest

import behaviour as B
import bootstrap
import metrics
import runs as runs_module

# -----------------------------------------------------------------------------
# Clusters and resamples


def test_cluster_ids_give_a_text_of_no_group_a_cluster_of_its_own():
    assert bootstrap.cluster_ids(["ann", None, "ann", "bob", None]).tolist() == [0, 1, 0, 2, 3]
    assert bootstrap.cluster_ids(None, 4).tolist() == [0, 1, 2, 3]


def test_cluster_weights_draw_whole_clusters_reproducibly():
    clusters = [5, 5, 5, 7, 7, 9]  # any ids: three clusters of 3, 2 and 1 texts
    w = bootstrap.cluster_weights(clusters, 400, 3)
    assert w.shape == (400, 6) and (w >= 0).all()
    # A text weighs as often as its cluster was drawn: equal within a cluster, three clusters drawn per resample.
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 3] == w[:, 4]).all()
    assert (w[:, [0, 3, 5]].sum(1) == 3).all() and w[:, [0, 3, 5]].mean() == pytest.approx(1, abs=0.1)
    assert (w == bootstrap.cluster_weights(clusters, 400, 3)).all() and not (w == bootstrap.cluster_weights(clusters, 400, 4)).all()
    # Each text its own cluster: the plain bootstrap, n texts drawn per resample.
    assert (bootstrap.cluster_weights(np.arange(7), 50, 0).sum(1) == 7).all()
    # Strata: clusters 0, 1 of stratum "a" and 2 of "b" are drawn within their stratum: 2 and 1 draws each time.
    s = bootstrap.cluster_weights([0, 1, 2], 300, 0, strata=["a", "a", "b"])
    assert (s[:, :2].sum(1) == 2).all() and (s[:, 2] == 1).all()


def test_a_model_of_one_seed_scores_its_weighted_texts():
    labels = np.array([1, 1, 0, 0])
    weights = np.array([[1, 1, 1, 1], [2, 0, 2, 0], [0, 2, 0, 2]], dtype=float)
    point, boot = bootstrap.model_scores(labels, [np.array([1, 0, 0, 1])], 2, weights)["accuracy"]
    assert point == 0.5 and boot.tolist() == [0.5, 1.0, 0.0]


# -----------------------------------------------------------------------------
# Intervals that widen: clusters and seeds


def test_two_clusters_of_texts_right_or_wrong_together_widen_the_interval():
    # 20 texts in 2 clusters of 10. A is right everywhere; B is wrong on cluster 0, right on cluster 1:
    # A - B in accuracy is 0.5. Drawing 2 clusters: (0, 0) gives 1, (1, 1) gives 0, one of each 0.5, so
    # T = |d* - 0.5| / se is 0.5 / se or 0 and q = 0.5 / se: the interval is exactly 0.5 -+ 0.5 = [0, 1].
    labels = np.ones(20, dtype=int)
    a, b = labels.copy(), np.r_[np.zeros(10, int), np.ones(10, int)]
    clusters = np.repeat([0, 1], 10)
    by_cluster = bootstrap.compare(labels, {"A": [a], "B": [b]}, [("A", "B")], 2, clusters, keys=("accuracy",))[0]["accuracy"]
    assert by_cluster["diff"] == 0.5
    assert by_cluster["low"] == pytest.approx(0, abs=1e-12) and by_cluster["high"] == pytest.approx(1, abs=1e-12)
    # The bootstrap of texts treats the 20 as independent: d* ~ Binomial(20, 1/2) / 20, se about 0.11.
    by_text = bootstrap.compare(labels, {"A": [a], "B": [b]}, [("A", "B")], 2, None, keys=("accuracy",))[0]["accuracy"]
    assert by_text["high"] - by_text["low"] < 0.5 < by_cluster["high"] - by_cluster["low"]
    assert metrics.conclusion("A", "B", "accuracy", by_text).startswith("A is better than B in accuracy")


def test_seeds_resampled_put_the_seed_spread_into_the_interval():
    # 200 texts, all class 1. A's seed 0 is right on all, its seed 1 on the first half only; B is A's seed 1.
    # Point: (1 + 0.5) / 2 - 0.5 = 0.25; the seeds' own differences are 0.5 and 0. Seeds drawn (0, 0), (1, 1)
    # and one of each, a quarter, a quarter and half the time, put A - B near 0.5, at 0 and near 0.25.
    labels = np.ones(200, dtype=int)
    half = np.r_[np.ones(100, int), np.zeros(100, int)]
    preds = {"A": [labels, half], "B": [half]}
    with_seeds = bootstrap.compare(labels, preds, [("A", "B")], 2, keys=("accuracy",))[0]["accuracy"]
    assert with_seeds["diff"] == 0.25
    assert with_seeds["low"] <= 0 and with_seeds["high"] >= 0.5  # the seed spread, inside
    # The seeds averaged first (training held fixed): only the texts vary, (1 - f) / 2 for f near 1/2.
    fixed = bootstrap.compare(labels, preds, [("A", "B")], 2, keys=("accuracy",), resample_seeds=False)[0]["accuracy"]
    assert 0.15 < fixed["low"] < fixed["high"] < 0.35
    assert metrics.conclusion("A", "B", "accuracy", with_seeds).startswith("no difference detected between A and B")


# -----------------------------------------------------------------------------
# A family of intervals: max-t, by hand


def test_max_t_intervals_and_p_values_by_hand():
    # 20 resamples. Difference 1: 0.3, resampled ten times 0.2 and ten times 0.4: se 0.1, every |t| = 1.
    # Difference 2: 0.1, resampled 0.1 except -0.1 and 0.3 once each: se sqrt(0.08 / 20) = sqrt(0.004), |t| of
    # those two sqrt(0.04 / 0.004) = sqrt(10). T = max: sqrt(10) twice, 1 eighteen times; q, the 19th smallest
    # (ceil(0.95 * 20)), is sqrt(10). Intervals 0.3 -+ sqrt(10) * 0.1 and 0.1 -+ sqrt(10) * sqrt(0.004) = 0.1 -+ 0.2.
    d1 = np.r_[[0.2] * 10, [0.4] * 10]
    d2 = np.r_[[-0.1, 0.3], [0.1] * 18]
    one, two = bootstrap.simultaneous([(0.3, d1), (0.1, d2)])
    assert one["se"] == pytest.approx(0.1) and two["se"] == pytest.approx(math.sqrt(0.004))
    assert (one["low"], one["high"]) == pytest.approx((0.3 - math.sqrt(0.1), 0.3 + math.sqrt(0.1)))
    assert (two["low"], two["high"]) == pytest.approx((-0.1, 0.3))
    # p: (1 + #{T >= |d| / se}) / 21; 0.3 / 0.1 = 3 and 0.1 / 0.063 = 1.58 are both passed by the two sqrt(10).
    assert one["p"] == pytest.approx(3 / 21) and two["p"] == pytest.approx(3 / 21)
    # Alone, difference 1 has q = 1: [0.2, 0.4] excludes 0. In the family it does not: the adjustment decides.
    (alone,) = bootstrap.simultaneous([(0.3, d1)])
    assert (alone["low"], alone["high"]) == pytest.approx((0.2, 0.4)) and alone["p"] == pytest.approx(1 / 21)
    assert metrics.conclusion("odd", "even", "macro-F1", alone).startswith("odd is better than even in macro-F1")
    assert metrics.conclusion("odd", "even", "macro-F1", one).startswith("no difference detected between odd and even")
    # A difference that never varies: its interval is the point; p is the smallest possible, or 1 at 0.
    sure, none = bootstrap.simultaneous([(1.0, np.ones(20)), (0.0, np.zeros(20))])
    assert (sure["low"], sure["high"], sure["p"]) == (1.0, 1.0, 1 / 21) and (none["low"], none["high"], none["p"]) == (0, 0, 1)
    assert bootstrap.simultaneous([]) == []


def test_a_family_is_every_pair_and_score_of_the_table():
    labels = np.array([0, 1] * 30)
    rng = np.random.default_rng(0)
    preds = {m: [np.where(rng.random(60) < q, labels, 1 - labels)] for m, q in (("a", 0.9), ("b", 0.7), ("c", 0.6))}
    pairs = [("a", "b"), ("a", "c"), ("b", "c")]
    family = bootstrap.compare(labels, preds, pairs, 2, resamples=300)
    alone = bootstrap.compare(labels, preds, pairs[:1], 2, resamples=300, keys=("accuracy",))[0]["accuracy"]
    assert [sorted(f) for f in family] == [["accuracy", "macro_f1"]] * 3
    # The same resamples (same seed), but one interval of six is wider than the same one alone.
    assert family[0]["accuracy"]["diff"] == alone["diff"]
    assert family[0]["accuracy"]["high"] - family[0]["accuracy"]["low"] > alone["high"] - alone["low"]


# -----------------------------------------------------------------------------
# The behaviour suite: templates as clusters


def tiny_suite():
    """Functionality f: template f#1 with three cases, f#2 with one; g: one template of two cases."""
    case = lambda text, f, t: B.Case(text, f, "MFT", 1, 1, None, t)
    return [case("f1a", "f", "f#1"), case("f1b", "f", "f#1"), case("f1c", "f", "f#1"), case("f2a", "f", "f#2"),
            case("g1a", "g", "g#1"), case("g1b", "g", "g#1")]


def test_behaviour_pass_rates_by_hand():
    # Every case should be called hate; the model says so for all but f#2's one case: f passes 3 of 4, g 2 of 2.
    predict = lambda texts: {"hate": np.array([0.1 if t == "f2a" else 0.9 for t in texts])}
    result = B.run_suite(tiny_suite(), predict)
    f, g = (result["functionalities"][n]["labels"]["hate"] for n in "fg")
    assert f["pass_rate"] == 0.75 and f["by_template"] == {"f#1": [3, 3], "f#2": [0, 1]} and g["by_template"] == {"g#1": [2, 2]}
    # f's two templates drawn with replacement: (f#1, f#1) passes all, (f#2, f#2) none, one of each 3 of 4, a
    # quarter, a quarter and half the time: its 95% interval is [0, 1]. g has one template: always drawn, [1, 1].
    assert (f["low"], f["high"]) == (0, 1) and (g["low"], g["high"]) == (1, 1)
    # The mean over f and g: (1 + 1) / 2, (0 + 1) / 2 or (0.75 + 1) / 2: from 0.5 to 1.
    s = result["summary"]["hate"]
    assert s["mean_pass_rate"] == 0.875 and (s["mean_low"], s["mean_high"]) == (0.5, 1)
    # Had the four cases of f been drawn one by one, no case of f#1 would have been drawn with probability
    # (1/4)^4 < 2.5%: the interval of cases starts above 0. Templates are what the suite repeats.
    cases = {"functionalities": {"f": {"labels": {"hate": {"by_template": {"f#1": [1, 1], "f#2": [1, 1], "f#3": [1, 1], "f#4": [0, 1]}}}}}}
    assert bootstrap.pass_rates([cases], "hate")["f"]["low"] > 0
    # Two seeds, the second failing everything in f: the mean over seeds, and both seeds inside the interval.
    worse = B.run_suite(tiny_suite(), lambda texts: {"hate": np.array([0.1 if t.startswith("f") else 0.9 for t in texts])})
    both = bootstrap.pass_rates([result, worse], "hate")
    assert both["f"]["value"] == 0.375 and both["f"]["low"] == 0 and both["f"]["high"] >= 0.75


# -----------------------------------------------------------------------------
# The decisions: a two-class run at its threshold chosen on validation


def test_decisions_at_a_threshold_and_by_argmax():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.55, 0.45]])
    assert metrics.decisions(probs).tolist() == [0, 1, 0]  # the most probable class
    assert metrics.decisions(probs, 0.4).tolist() == [0, 1, 1]  # class 1 from probability 0.4 on
    assert metrics.decisions(np.array([[0.2, 0.5, 0.3]]), 0.4).tolist() == [1]  # three classes: argmax whatever the threshold


def test_a_runs_decision_threshold_is_that_of_class_1():
    binary = {"id2label": {"0": "ok", "1": "toxic"}, "thresholds": {"toxic": 0.3}}
    assert runs_module.decision_threshold(binary) == 0.3
    assert runs_module.decision_threshold({"id2label": {"0": "ok", "1": "toxic"}}) is None  # an older run: argmax
    two_questions = {"id2label": {"0": "toxic", "1": "hate"}, "thresholds": {"toxic": 0.2, "hate": 0.4},
                     "problem_type": "multi_label_classification"}
    assert runs_module.decision_threshold(two_questions) is None  # each label its own threshold, elsewhere
    assert runs_module.decision_threshold({"id2label": ["hate", "offensive", "neither"]}) is None
