"""Tests for beyond.py: paired differences only between runs scored on the same texts, resampled by the
dataset's clusters, and each dataset's test texts the same for every run of one split seed."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_bootstrap import tiny_suite

import behaviour as B
import beyond
import corpus
import runs as runs_module
import splits

ROOT = Path(__file__).resolve().parents[1]


def test_cross_comparisons_pair_only_runs_scored_on_the_same_texts():
    y = [1, 0, 1, 0, -1, 1]
    def entry(decisions, sha="same"):
        return {"cross": {"davidson": {"seen": True, "texts_sha256": sha,
                                       "hate": {"labels": y, "decisions": decisions, "macro_f1": 0.5, "f1": 0.5}}}}
    extras = {"a": entry([1, 0, 1, 0, 0, 1]), "b": entry([0, 0, 0, 0, 0, 0]), "c": entry([1, 1, 1, 1, 1, 1], sha="other")}
    groups = [{"label": n, "names": [n], "method": "teacher"} for n in "abc"]
    pairs = beyond.cross_comparisons(extras, groups, resamples=200)
    assert [(p["a"], p["b"]) for p in pairs] == [("a", "b")]  # c was scored on other texts: never paired
    # a is right on all five annotated texts (macro-F1 1), b calls everything no (macro-F1 of 3 "no" wrong).
    b_f1 = (0 + 2 * 2 / (2 * 2 + 3)) / 2
    assert pairs[0]["diff"] == pytest.approx(1 - b_f1) and pairs[0]["low"] < pairs[0]["diff"] < pairs[0]["high"]
    assert "p" in pairs[0] and pairs[0]["clusters"] == 5 and pairs[0]["conclusion"].startswith(("a is better", "no difference"))
    # The dataset's clusters are what is resampled: all six texts one cluster, every resample is the test set as it is.
    for e in extras.values():
        e["cross"]["davidson"]["clusters"] = [0] * 6
    (one,) = beyond.cross_comparisons(extras, groups, resamples=200)
    assert one["low"] == one["diff"] == one["high"] and one["clusters"] == 1


def test_behaviour_comparisons_resample_the_templates_of_both_models_together():
    # The tiny suite of test_bootstrap: a passes everything, b fails f#2's one case. Mean pass rates 1 and
    # (3/4 + 1) / 2 = 0.875. With the same draws of f's two templates, a - b is 0 (f#1 twice), 0.5 (f#2 twice)
    # or 0.125: the interval reaches from 0 to about 0.5, so no difference is detected.
    extras = {"a": {"behaviour": B.run_suite(tiny_suite(), lambda texts: {"hate": np.full(len(texts), 0.9)})},
              "b": {"behaviour": B.run_suite(tiny_suite(), lambda texts: {"hate": np.array([0.1 if t == "f2a" else 0.9 for t in texts])})}}
    groups = [{"label": n, "names": [n], "method": "teacher"} for n in "ab"]
    (row,) = beyond.behaviour_comparisons(extras, groups)
    assert row["label"] == "hate" and row["diff"] == pytest.approx(0.125)
    assert row["low"] <= 0 < 0.45 < row["high"] and row["conclusion"].startswith("no difference detected between a and b")


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir(), reason="no ../shared/data mirror here")
def test_each_datasets_test_texts_are_the_same_for_every_run():
    mirror = str(ROOT.parent / "shared" / "data")
    cache, texts = {}, {}
    for data_name in ("davidson", "hate_speech18", "davidson+hate_speech18"):
        both = corpus.load_dataset(data_name, mirror=mirror)
        manifest = splits.make_split(both, seed=0)
        folder = ROOT / "runs-test-tmp"  # never written: load_test_split reads only the manifest path
        info = runs_module.RunInfo({"data": data_name, "data_mirror": mirror, "split": "x", "split_seed": 0},
                                   {"split_sha256": manifest["manifest_sha256"]})
        real = runs_module.load_test_split
        try:
            runs_module.load_test_split = lambda d, i, b=both, m=manifest: (splits.apply_split(b, m)["test"], None, m)
            for name in beyond.CROSS_DATASETS:
                texts[(data_name, name)] = beyond.dataset_test_texts(folder, info, name, cache)[0]
        finally:
            runs_module.load_test_split = real
    for name in beyond.CROSS_DATASETS:
        assert texts[("davidson", name)] == texts[("hate_speech18", name)] == texts[("davidson+hate_speech18", name)]


def test_the_suite_decides_at_the_models_own_thresholds():
    two_labels = SimpleNamespace(multilabel=True, thresholds={"toxic": 0.6, "hate": 0.41})
    assert beyond.suite_thresholds(two_labels) == {"toxic": 0.6, "hate": 0.41}
    binary = SimpleNamespace(multilabel=False, info=runs_module.RunInfo({"id2label": {"0": "no", "1": "hate"}}, {"thresholds": {"hate": 0.3}}))
    assert beyond.suite_thresholds(binary) == {"toxic": 0.3, "hate": 0.3}
    older = SimpleNamespace(multilabel=False, info=runs_module.RunInfo({"id2label": {"0": "no", "1": "hate"}}, {}))
    assert beyond.suite_thresholds(older) == {"toxic": 0.5, "hate": 0.5}


def test_leave_one_source_out_scores_hate_where_the_model_never_trained():
    y = [1, 1, 1, 0, 0, -1]
    def entry(decisions, seen=False):
        hate = {"labels": y, "decisions": decisions, "precision": 0.5, "ece": 0.1, "ece_uncalibrated": 0.2, "average_precision": 0.7}
        return {"cross": {"davidson": {"seen": not seen, "texts_sha256": "d"},
                          "hate_speech18": {"seen": seen, "texts_sha256": "h", "clusters": [0, 1, 2, 3, 4, 5], "hate": hate}}}
    extras = {"a": entry([1, 0, 0, 0, 1, 1]), "a-s1": entry([1, 1, 0, 0, 0, 1]), "both": entry([1, 1, 1, 0, 0, 0], seen=True)}
    groups = [{"label": "a", "names": ["a", "a-s1"], "method": "teacher"}, {"label": "both", "names": ["both"], "method": "teacher"}]
    (row,) = beyond.unseen_sources(extras, groups, resamples=400)  # "both" trained on hate_speech18: not unseen
    assert (row["model"], row["trained_on"], row["scored_on"], row["n"], row["hate"], row["seeds"]) == \
        ("a", "davidson", "hate_speech18", 5, 3, 2)
    # Seed 0 finds 1 of 3 hateful texts, seed 1 finds 2: recall (1/3 + 2/3) / 2. Macro-F1: seed 0 has hate F1
    # 2/(2+3) = 0.4 and no-hate F1 2/(3+2) = 0.4; seed 1: 4/(2+3) = 0.8 and 4/(3+2) = 0.8.
    assert row["recall"]["value"] == pytest.approx(0.5)
    assert row["macro_f1"]["value"] == pytest.approx((0.4 + 0.8) / 2)
    assert row["recall"]["low"] <= 1 / 3 and row["recall"]["high"] >= 2 / 3 - 1e-9  # the two seeds' spread inside
    assert row["ece"] == 0.1 and "hate_speech18" in beyond.unseen_markdown([row])
    # One cluster for all: every resample is the test set as it is, so only the seeds move the interval.
    for e in extras.values():
        e["cross"]["hate_speech18"]["clusters"] = [0] * 6
    (row,) = beyond.unseen_sources(extras, groups, resamples=400)
    assert row["recall"]["low"] == pytest.approx(1 / 3) and row["recall"]["high"] == pytest.approx(2 / 3)


def test_the_models_own_probability_is_recovered_from_the_calibrated_one():
    z = np.array([-3.0, -0.5, 0.0, 1.2, 4.0])
    calibrated = 1 / (1 + np.exp(-z / 2.5))
    clf = SimpleNamespace(temperatures=[1.0, 2.5])
    assert np.allclose(beyond.uncalibrated(calibrated, clf, 1), 1 / (1 + np.exp(-z)))
    assert beyond.uncalibrated(calibrated, SimpleNamespace(temperatures=None), 1) is calibrated
