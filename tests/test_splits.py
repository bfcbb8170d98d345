"""Tests of splits.py: stratified splits by text and by group, the manifest (both formats) and its
checks, get_split's make-once-then-reuse, and leakage.

Fixtures: tests/fixtures/data (split_v1.json is a format-1 manifest, made by make_group_fixtures.py).
Checks against the real datasets run only where the offline mirror ../shared exists beside the
repository.
"""

import json
import os
import shutil

import numpy as np
import pytest
from conftest import DAVIDSON_NEAR_DUPS, DAVIDSON_TINY, HATE18_AUTHORS, SHARED, SPLIT_V1, needs_shared, one_line_error

import corpus
import files
import readers
import splits

pytestmark = pytest.mark.usefixtures("isolated_env")



def toy_dataset(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = [int(x) for x in rng.choice(3, size=n, p=[0.6, 0.3, 0.1])]
    return readers.Dataset("toy", [f"text number {i}" for i in range(n)], labels, ["a", "b", "c"], options={"k": 1})


def test_make_split_is_stratified_disjoint_and_deterministic():
    ds = toy_dataset()
    counts = ds.class_counts()
    assert counts == [110, 60, 30]
    split = splits.make_split(ds, seed=3)
    indices = splits.split_indices(split)
    assert list(indices) == ["train", "validation", "test"]
    parts = [set(indices[p]) for p in splits.PARTS]
    assert sum(map(len, parts)) == 200 and set.union(*parts) == set(range(200))
    assert split["class_counts"] == {"train": [88, 48, 24], "validation": [11, 6, 3], "test": [11, 6, 3]}
    assert splits.make_split(ds, seed=3) == split
    assert splits.make_split(ds, seed=4)["indices"] != split["indices"]
    parts = splits.apply_split(ds, split)
    assert [len(parts[p]) for p in splits.PARTS] == [160, 20, 20]
    assert parts["test"].texts[0] == ds.texts[split["indices"]["test"][0]]
    assert parts["train"].labels == [ds.labels[i] for i in indices["train"]]
    with pytest.raises(ValueError):
        splits.make_split(ds, fractions=(0.8, 0.1, 0.2))


def test_split_refuses_duplicates():
    ds = readers.Dataset("dup", ["a", "b", "a"], [0, 1, 0], ["n", "y"])
    with pytest.raises(files.DataError) as e:
        splits.make_split(ds)
    one_line_error(e, "dup", "duplicate")


def test_manifest_round_trip_and_checks(tmp_path):
    ds = toy_dataset()
    split = splits.make_split(ds)
    path = tmp_path / "split.json"
    splits.save_manifest(split, path)
    assert os.listdir(tmp_path) == ["split.json"]  # no temp file left behind
    loaded = splits.load_manifest(path, ds)
    assert loaded == split and splits.same_split(loaded, split)
    assert loaded["data_sha256"] == splits.dataset_hash(ds.texts, ds.labels)
    assert loaded["options"] == {"k": 1} and loaded["fractions"] == [0.8, 0.1, 0.1]

    changed = readers.Dataset("toy", ds.texts, [(ds.labels[0] + 1) % 3] + ds.labels[1:], ds.label_names)
    with pytest.raises(files.DataError) as e:
        splits.load_manifest(path, changed)
    one_line_error(e, str(path), split["data_sha256"][:12], "200 texts")

    edited = json.loads(path.read_text())
    edited["indices"]["test"][0] = edited["indices"]["validation"][0]
    path.write_text(json.dumps(edited))
    with pytest.raises(files.DataError) as e:
        splits.load_manifest(path)
    one_line_error(e, "manifest_sha256")

    with pytest.raises(files.DataError) as e:
        splits.same_split(split, splits.make_split(ds, seed=1))
    one_line_error(e, "seed: 0 vs 1")


def test_get_split_makes_once_then_reuses(tmp_path):
    ds = toy_dataset()
    path = tmp_path / "runs" / "split.json"
    first = splits.get_split(ds, path, seed=7)
    mtime = path.stat().st_mtime_ns
    again = splits.get_split(ds, path, seed=7)
    assert path.stat().st_mtime_ns == mtime
    assert again["test"].texts == first["test"].texts
    with pytest.raises(files.DataError) as e:
        splits.get_split(ds, path, seed=8)
    one_line_error(e, str(path), "seed 7")

# ----------------------------------------------------------------------------------------------
# Grouped splits: every group on one side


def users_by_part(dataset, manifest):
    return {part: {dataset.groups[i] for i in indices} for part, indices in splits.split_indices(manifest).items()}


def test_author_split_puts_no_user_on_both_sides():
    ds = readers.drop_duplicates(readers.read_hate_speech18(HATE18_AUTHORS))
    leaky = 0
    for seed in range(5):
        split = splits.make_split(ds, fractions=(0.5, 0.25, 0.25), seed=seed)
        users = users_by_part(ds, split)
        assert not users["train"] & users["validation"] and not users["train"] & users["test"]
        assert not users["validation"] & users["test"] and all(users.values())
        assert splits.leakage(ds, split) == 0.0 and splits.leakage(ds, split, keys=ds.posts) == 0.0
        assert (split["format"], split["grouping"], split["groups"]) == ("nanobert-split-2", "author", 8)
        random = splits.make_split(ds, fractions=(0.5, 0.25, 0.25), seed=seed, grouping="none")
        assert random["grouping"] == "none" and random["groups"] == len(ds)
        leaky += splits.leakage(ds, random) > 0
    assert leaky == 5  # by text, 8 authors cannot stay apart
    assert splits.split_kind(split) == "grouped by author"
    assert splits.split_kind(random) == "random by text (may leak: near-duplicates/authors can be on both sides)"


def test_grouped_split_keeps_near_duplicates_together():
    ds = readers.drop_duplicates(readers.read_davidson(DAVIDSON_NEAR_DUPS))
    for seed in range(5):
        split = splits.make_split(ds, fractions=(0.5, 0.25, 0.25), seed=seed)
        part_of = {i: part for part, indices in splits.split_indices(split).items() for i in indices}
        for members in splits._units(ds.groups):
            assert len({part_of[i] for i in members}) == 1, [ds.texts[i] for i in members]
        assert splits.leakage(ds, split) == 0.0 and split["grouping"] == "near-duplicate"
    assert splits.split_kind(split) == "grouped by near-duplicate tweet"


def grouped_toy(n=600, seed=0):
    """Texts in groups of 1 to 6; a group's texts mostly share its label."""
    rng = np.random.default_rng(seed)
    texts, labels, groups = [], [], []
    while len(texts) < n:
        g, size, label = len(set(groups)), int(rng.integers(1, 7)), int(rng.choice(3, p=[0.6, 0.3, 0.1]))
        for _ in range(size):
            labels.append(label if rng.random() < 0.8 else int(rng.integers(3)))
            texts.append(f"text number {len(texts)}")
            groups.append(f"g{g}")
    return readers.Dataset("grouped", texts, labels, ["a", "b", "c"], groups=groups, grouping="column:who")


def test_grouped_split_is_stratified_whole_and_deterministic():
    ds = grouped_toy()
    total = np.array(ds.class_counts())
    split = splits.make_split(ds, seed=3)
    assert splits.make_split(ds, seed=3) == split and splits.make_split(ds, seed=4)["indices"] != split["indices"]
    indices = splits.split_indices(split)
    assert sorted(sum(indices.values(), [])) == list(range(len(ds)))
    assert splits.leakage(ds, split) == 0.0 and splits.leakage(ds, split, part="validation") == 0.0
    for part, fraction in zip(splits.PARTS, (0.8, 0.1, 0.1)):
        # Whole groups of up to 6 texts: each class within a few texts of its share.
        assert np.abs(np.array(split["class_counts"][part]) - fraction * total).max() <= 3, (part, split["class_counts"])
    assert split["groups"] == len(set(ds.groups)) and splits.split_kind(split) == "grouped by column 'who'"
    empty_validation = splits.make_split(ds, fractions=(0.9, 0.0, 0.1), seed=3)
    assert empty_validation["indices"]["validation"] == []


def test_grouping_choices():
    ds = grouped_toy(60)
    assert splits.make_split(ds, grouping="column:who") == splits.make_split(ds)
    with pytest.raises(ValueError) as e:
        splits.make_split(ds, grouping="author")
    one_line_error(e, "'author'", "'column:who'")
    with pytest.raises(files.DataError) as e:
        splits.make_split(toy_dataset(), grouping="author")
    one_line_error(e, "toy", "no groups")
    assert splits.make_split(toy_dataset())["grouping"] == "none"  # no groups: by text, as before
    unnamed = readers.Dataset("u", ds.texts, ds.labels, ds.label_names, groups=ds.groups)
    assert splits.make_split(unnamed)["grouping"] == "groups"


def test_old_manifest_loads_applies_and_says_it_may_leak(tmp_path):
    ds = readers.drop_duplicates(readers.read_davidson(DAVIDSON_TINY))  # what load_dataset("davidson") gives
    old = splits.load_manifest(SPLIT_V1, ds)
    assert old["format"] == "nanobert-split-1" and "grouping" not in old
    assert splits.split_kind(old) == "random by text (may leak: near-duplicates/authors can be on both sides)"
    parts = splits.apply_split(ds, old)
    assert [len(parts[p]) for p in splits.PARTS] == [4, 2, 2]
    assert parts["test"].texts == [ds.texts[i] for i in old["indices"]["test"]]
    # grouping="none" is format 1's method: the same parts, now in a format-2 manifest.
    again = splits.make_split(ds, fractions=(0.5, 0.25, 0.25), seed=0, grouping="none")
    assert again["indices"] == old["indices"] and again["class_counts"] == old["class_counts"]
    assert splits.same_split(old, again)
    # get_split keeps using a saved format-1 split, even though the dataset now has groups.
    path = tmp_path / "split.json"
    shutil.copy(SPLIT_V1, path)
    assert splits.get_split(ds, path, fractions=(0.5, 0.25, 0.25))["test"].texts == parts["test"].texts
    assert path.read_bytes() == SPLIT_V1.read_bytes()
    with pytest.raises(files.DataError) as e:
        splits.get_split(ds, path, fractions=(0.5, 0.25, 0.25), grouping="near-duplicate")
    one_line_error(e, str(path), "random by text", "'near-duplicate'")
    edited = json.loads(SPLIT_V1.read_text())
    edited["indices"]["test"] = [4, 5]
    with pytest.raises(files.DataError) as e:
        splits.check_manifest(edited, ds)
    one_line_error(e, "manifest_sha256")


def test_new_manifest_round_trip_and_edits_fail(tmp_path):
    ds = readers.drop_duplicates(readers.read_hate_speech18(HATE18_AUTHORS))
    path = tmp_path / "split.json"
    parts = splits.get_split(ds, path, fractions=(0.5, 0.25, 0.25), seed=1)
    split = splits.load_manifest(path, ds)
    assert split == splits.make_split(ds, fractions=(0.5, 0.25, 0.25), seed=1) and split["format"] == splits.MANIFEST_FORMAT
    assert parts["test"].groups == [ds.groups[i] for i in split["indices"]["test"]]
    assert splits.get_split(ds, path, fractions=(0.5, 0.25, 0.25), seed=1, grouping="author")["test"].texts == parts["test"].texts
    for key, value in (("grouping", "none"), ("groups", 7), ("format", "nanobert-split-1")):
        edited = dict(split, **{key: value})
        with pytest.raises(files.DataError) as e:
            splits.check_manifest(edited, ds)
        one_line_error(e, "manifest_sha256")
    with pytest.raises(files.DataError) as e:
        splits.check_manifest(dict(split, format="nanobert-split-9"), ds)
    one_line_error(e, "'nanobert-split-9'", "nanobert-split-2", "nanobert-split-1")


def test_leakage_counts_test_texts_whose_group_is_in_train():
    ds = readers.Dataset("d", list("abcdefgh"), [0, 1, 0, 1, 0, 1, 0, 1], ["n", "y"],
                         groups=["u1", "u1", None, "u3", "u3", None, "u4", "u2"], posts=list("pqprrsst"))
    manifest = {"format": splits.MANIFEST_FORMAT, "size": 8, "data_sha256": splits.dataset_hash(ds.texts, ds.labels),
                "indices": {"validation": [6], "test": [1, 4, 5, 7]}}
    manifest["manifest_sha256"] = splits._manifest_hash(manifest)
    # train: a c d (u1 None u3); test: b (u1: yes) e (u3: yes) f (None, alone: no) h (u2: no)
    assert splits.leakage(ds, manifest) == 2 / 4
    assert splits.leakage(ds, manifest, keys=ds.posts) == 1 / 4  # train posts p p r; test q r s t: only e's r
    assert splits.leakage(ds, manifest, part="validation") == 0.0
    with pytest.raises(files.DataError) as e:
        splits.leakage(readers.Dataset("d", ds.texts, ds.labels, ds.label_names), manifest)
    one_line_error(e, "no groups")

# ----------------------------------------------------------------------------------------------
# The two-label dataset: one manifest, each source split as its own


def test_one_manifest_covers_the_two_label_dataset(tiny_mirror, tmp_path):
    both = corpus.load_dataset("davidson+hate_speech18", mirror=tiny_mirror)
    split = splits.make_split(both, fractions=(0.6, 0.2, 0.2), seed=2)
    assert split["grouping"] == both.grouping and split["groups"] == len(splits._units(both.groups))
    assert splits.split_kind(split) == "grouped by near-duplicate tweet (davidson) and author (hate_speech18)"
    assert split["class_counts"]["train"].keys() == {"toxic", "hate"}
    assert sum(split["source_counts"][p]["hate_speech18"] for p in splits.PARTS) == 37
    splits.save_manifest(split, tmp_path / "split.json")
    parts = splits.apply_split(both, splits.load_manifest(tmp_path / "split.json", both))
    assert sum(len(parts[p]) for p in splits.PARTS) == len(both)
    for part, indices in splits.split_indices(split).items():
        assert parts[part].sources == [both.sources[i] for i in indices]
        assert parts[part].labels == [both.labels[i] for i in indices] and parts[part].multilabel
        assert split["class_counts"][part] == parts[part].class_counts()
        assert all(parts[part].sources) and parts[part].grouping == both.grouping
    users = {p: {g for g in parts[p].groups if g and g.startswith("hate_speech18:")} for p in splits.PARTS}
    assert not users["train"] & users["test"] and not users["train"] & users["validation"]
    assert not users["validation"] & users["test"] and splits.leakage(both, split) == 0.0
    assert users["test"] and {s for p in splits.PARTS for s in parts[p].sources} == {"davidson", "hate_speech18"}

# ----------------------------------------------------------------------------------------------
# The real datasets, where the offline mirror is present


@pytest.fixture(scope="module")
def real():
    """The real datasets as load_dataset gives them, loaded once for the tests below."""
    mirror = SHARED / "data"
    return {name: corpus.load_dataset(name, mirror=mirror) for name in ("davidson", "hate_speech18", "davidson+hate_speech18")}


def as_format1(manifest):
    """The format-1 manifest that format 1's make_split wrote for the same split (grouping="none")."""
    old = {k: v for k, v in manifest.items() if k not in ("grouping", "groups", "manifest_sha256")}
    old["format"] = "nanobert-split-1"
    return dict(old, manifest_sha256=splits._manifest_hash(old))


@needs_shared
def test_real_davidson_split_leaks_no_near_duplicates(real):
    ds = real["davidson"]
    # The binary dataset of the earlier runs, text for text and label for label ...
    assert splits.dataset_hash(ds.texts, ds.labels) == "a2f29c1bc375300625e82403f9067a7114f63d4f3669bb4563c7d28570623ee4"
    assert len(splits._units(ds.groups)) == 23819 and ds.groups.count(None) == 2
    # ... so their split (docs/results: split.json c7afdec1739a…) is grouping="none" at seed 0,
    old = splits.make_split(ds, seed=0, grouping="none")
    assert as_format1(old)["manifest_sha256"].startswith("c7afdec1739a")
    assert splits.leakage(ds, old) > 0.03  # about 100 test tweets had a near-copy in training
    new = splits.make_split(ds, seed=0)
    assert splits.leakage(ds, new) == 0.0 and splits.leakage(ds, new, part="validation") == 0.0
    assert new["class_counts"] == {"train": [3292, 16371], "validation": [411, 2046], "test": [411, 2046]}


@needs_shared
def test_real_hate_speech18_split_puts_no_user_on_both_sides(real):
    ds = real["hate_speech18"]
    assert splits.dataset_hash(ds.texts, ds.labels) == "bcdd35e770e3de676681e6d8e74efbaa1067655255d346e4bcf4de38e439d523"
    assert len(set(ds.groups)) == 2778
    old = splits.make_split(ds, seed=0, grouping="none")
    assert as_format1(old)["manifest_sha256"].startswith("7f7f1d6de5ed")  # the split of docs/results
    assert splits.leakage(ds, old) > 0.5 and splits.leakage(ds, old, keys=ds.posts) > 0.5
    new = splits.make_split(ds, seed=0)
    users = users_by_part(ds, new)
    assert not users["train"] & users["validation"] and not users["train"] & users["test"]
    assert not users["validation"] & users["test"]
    assert splits.leakage(ds, new) == 0.0 and splits.leakage(ds, new, keys=ds.posts) == 0.0
    for part, fraction in zip(splits.PARTS, (0.8, 0.1, 0.1)):
        assert np.abs(np.array(new["class_counts"][part]) - fraction * np.array([9342, 1192])).max() < 10


@needs_shared
def test_real_two_label_dataset(real):
    both = real["davidson+hate_speech18"]
    assert len(both) == 24577 + 10534 and both.sources.count("hate_speech18") == 10534
    assert both.class_counts() == {"toxic": [4114, 21655, 9342], "hate": [32503, 2608, 0]}
    split = splits.make_split(both, seed=0)
    assert splits.leakage(both, split) == 0.0 and splits.leakage(both, split, keys=both.posts) == 0.0
    assert split["source_counts"]["test"] == {"davidson": 2457, "hate_speech18": 1052}  # each source as its own split


@needs_shared
def test_the_joined_split_is_each_sources_own_split():
    # A binary Davidson teacher and the two-label model must meet on the same test tweets: the joined
    # dataset's parts, source by source, are exactly the parts of that source's own split.
    mirror = SHARED / "data"
    both = corpus.load_dataset("davidson+hate_speech18", mirror=mirror)
    parts = splits.split_indices(splits.make_split(both, seed=3))
    for name in ("davidson", "hate_speech18"):
        alone = corpus.load_dataset(name, mirror=mirror)
        own = splits.split_indices(splits.make_split(alone, seed=3))
        for part in ("train", "validation", "test"):
            assert {both.texts[i] for i in parts[part] if both.sources[i] == name} == {alone.texts[i] for i in own[part]}
