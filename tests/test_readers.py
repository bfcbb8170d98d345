"""Tests of readers.py: the Davidson, hate_speech18 and CSV/JSONL readers, the groups they give,
duplicates removed by vote, and one-line errors for files that cannot be read.

Fixtures: tests/fixtures/data (made by make_data_fixtures.py, and make_group_fixtures.py for the
near-duplicate tweets and the authors).
"""

import zipfile

import pytest
from conftest import DATA, DAVIDSON_NEAR_DUPS, DAVIDSON_TINY, HATE18_AUTHORS, HATE18_TINY, one_line_error

import corpus
import files
import readers
import splits

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

# ----------------------------------------------------------------------------------------------
# Groups: what a split keeps on one side


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


def test_drop_duplicates_votes_label_by_label():
    ds = readers.Dataset("m", ["a", "a", "a", "b", "b"], [[1, -1], [0, -1], [1, 0], [-1, -1], [-1, 1]], ["toxic", "hate"],
                         groups=[None, "g1", "g2", "g3", "g3"], sources=["x", "y", "y", "x", "x"])
    unique = readers.drop_duplicates(ds)
    assert unique.texts == ["a", "b"] and unique.labels == [[1, 0], [-1, 1]]
    assert unique.groups == ["g1", "g3"] and unique.sources == ["x", "x"]  # the first group a copy has
    assert unique.notes == ["removed 3 duplicate text(s) (1 with conflicting labels: majority label kept)"]

# ----------------------------------------------------------------------------------------------
# Bad input: one-line errors that name the file, the row and what was expected


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
