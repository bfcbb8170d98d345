"""Tests of corpus.py: load_dataset by name or path, the two-label dataset of both sources, and
getting the files (mirror, cache, a checked download from a local HTTP server).

Fixtures: tests/fixtures/data. Checks against the real datasets run only where the offline mirror
../shared exists beside the repository.
"""

import hashlib
import http.server
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import DATA, DAVIDSON_TINY, HATE18_TINY, SHARED, needs_shared, one_line_error

import corpus
import files
import readers

pytestmark = pytest.mark.usefixtures("isolated_env")



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
# The two-label dataset: toxic and hate, -1 where a source does not say


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
# The real datasets, where the offline mirror is present


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
