"""Tests for beyond.py: paired differences only between runs scored on the same texts, and each
dataset's test texts the same for every run of one split seed."""

from pathlib import Path

import pytest

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
    assert pairs[0]["diff"] == pytest.approx(1 - b_f1) and pairs[0]["low"] <= pairs[0]["diff"] <= pairs[0]["high"]


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
