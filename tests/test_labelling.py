"""Tests for labelling.py: a file labelled window by window, rows back in input order, no input column
overwritten, and what is left when labelling stops halfway. A stand-in classifier keeps them fast; the
real model labels files in tests/test_eval.py and tests/test_bad_inputs.py."""

import csv
import json

import numpy as np
import pytest

import labelling as L
from files import DataError


class Lengths:
    """A stand-in for classifier.Classifier: P(toxic) grows with a text's length; it records every call,
    and can be told to be interrupted at its n-th call."""

    labels = ["ok", "toxic"]
    unfinished = None

    def __init__(self, stop_at=None, error=KeyboardInterrupt):
        self.calls, self.stop_at, self.error = [], stop_at, error

    def predict_proba(self, texts):
        self.calls.append(list(texts))
        if len(self.calls) == self.stop_at:
            raise self.error()
        p = np.array([min(len(t) / 100, 1.0) for t in texts])
        return np.stack([1 - p, p], axis=1) if len(texts) else np.zeros((0, 2))

    def verdict(self, p):
        return ("toxic", p[1]) if p[1] >= 0.5 else ("ok", p[0])

    def note_counts(self, texts):
        return 0, 0

    def notes(self, texts, counts=None):
        return []


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def small_windows(monkeypatch):
    monkeypatch.setattr(L, "WINDOW_ROWS", 7)


def test_rows_come_back_in_input_order_though_each_window_is_labelled_shortest_first(tmp_path, small_windows):
    texts = ["x" * n for n in (90, 3, 50, 7, 1, 66, 20, 99, 2, 40, 5, 80, 30, 60, 10, 70)]
    write_csv(tmp_path / "in.csv", ["id", "text"], [[i, t] for i, t in enumerate(texts)])
    clf = Lengths()
    L.label_file(clf, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    out = read_csv(tmp_path / "out.csv")
    assert [r["id"] for r in out] == [str(i) for i in range(len(texts))] and [r["text"] for r in out] == texts
    assert [r["label"] for r in out] == ["toxic" if len(t) >= 50 else "ok" for t in texts]
    assert float(out[0]["p_toxic"]) == 0.9 and float(out[0]["score"]) == 0.9
    # Bounded windows of 7 rows, each sorted by length: never the whole file at once.
    assert [len(c) for c in clf.calls] == [7, 7, 2]
    assert all([len(t) for t in c] == sorted(len(t) for t in c) for c in clf.calls)
    assert not (tmp_path / "out.partial.csv").exists()


def test_windows_are_read_lazily_and_bounded_in_characters(monkeypatch):
    def rows():
        for i in range(25):
            yield i, {"text": "x" * 10}
        raise AssertionError("read past what the first windows needed")

    monkeypatch.setattr(L, "WINDOW_CHARS", 35)
    first = next(L.windows(rows()))
    assert len(first) == 4  # 4 x 10 characters reach 35; the file is not read beyond


def test_no_input_column_is_overwritten():
    assert L.added_columns(["ok", "toxic"], ["id", "text"]) == ("", ["label", "score", "p_ok", "p_toxic"])
    prefix, names = L.added_columns(["ok", "toxic"], ["text", "label"])
    assert prefix == "predicted_" and names == ["predicted_label", "predicted_score", "predicted_p_ok", "predicted_p_toxic"]
    assert L.added_columns(["ok"], ["p_ok", "predicted_score"])[0] == "predicted2_"
    assert L.added_columns(["ok"], ["text"], "unfinished, epoch 1 of 3")[1][-1] == "note"


def test_a_file_in_the_training_format_keeps_its_gold_labels(tmp_path, capsys):
    write_csv(tmp_path / "in.csv", ["text", "label"], [["x" * 80, "0"], ["  ", "1"], ["x", "1"]])
    L.label_file(Lengths(), tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    out = read_csv(tmp_path / "out.csv")
    assert [r["label"] for r in out] == ["0", "1", "1"]  # the gold labels, all of them
    assert [r["predicted_label"] for r in out] == ["toxic", "", "ok"]  # the blank row: no prediction, no old value
    assert "the predictions go in predicted_label" in capsys.readouterr().err


def test_jsonl_to_csv_takes_every_key_of_every_row(tmp_path):
    rows = [{"text": "x" * 60, "id": 1}, {"text": "x", "lang": "en"}, {"id": 3}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    L.label_file(Lengths(), tmp_path / "in.jsonl", tmp_path / "out.csv", progress=False)
    out = read_csv(tmp_path / "out.csv")
    assert list(out[0]) == ["text", "id", "lang", "label", "score", "p_ok", "p_toxic"]
    assert [r["label"] for r in out] == ["toxic", "ok", ""] and out[1]["lang"] == "en" and out[2]["id"] == "3"
    L.label_file(Lengths(), tmp_path / "in.jsonl", tmp_path / "out.jsonl", progress=False)
    got = [json.loads(line) for line in open(tmp_path / "out.jsonl")]
    assert got[0]["id"] == 1 and got[0]["label"] == "toxic" and "label" not in got[2]


@pytest.mark.parametrize("header, rows, message", [
    (["text", "id", "text"], [["a", "1", "b"]], "column(s) ['text'] appear more than once in the header"),
    (["text", "id"], [["a", "1"], ["b", "2", "3"]], "line 3: 3 fields, expected 2"),
    (["text", "id"], [["a", "1"], ["b"]], "line 3: 1 fields, expected 2"),
])
def test_what_the_training_reader_refuses_is_refused_before_anything_is_written(tmp_path, header, rows, message):
    write_csv(tmp_path / "in.csv", header, rows)
    clf = Lengths()
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        L.label_file(clf, tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    assert clf.calls == [] and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_field_longer_than_csvs_own_limit(tmp_path):
    write_csv(tmp_path / "in.csv", ["text"], [["x" * 200_000], ["y"]])
    L.label_file(Lengths(), tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    assert [r["label"] for r in read_csv(tmp_path / "out.csv")] == ["toxic", "ok"]


def test_bytes_that_are_not_utf8_are_replaced_and_counted(tmp_path, capsys):
    (tmp_path / "in.csv").write_bytes("text\ncafé\nnaïve\n".encode("latin-1"))
    L.label_file(Lengths(), tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    assert "2 byte sequence(s) that are not UTF-8 replaced by U+FFFD" in capsys.readouterr().err
    assert [r["text"] for r in read_csv(tmp_path / "out.csv")] == ["caf\ufffd", "na\ufffdve"]


def test_ctrl_c_keeps_the_whole_windows_done_under_a_partial_name(tmp_path, small_windows):
    write_csv(tmp_path / "in.csv", ["id", "text"], [[i, "x" * i] for i in range(30)])
    with pytest.raises(KeyboardInterrupt) as e:
        L.label_file(Lengths(stop_at=3), tmp_path / "in.csv", tmp_path / "out.csv", progress=False)
    partial = tmp_path / "out.partial.csv"
    assert str(e.value) == f"the 14 row(s) labelled so far are in {partial}; {tmp_path / 'out.csv'} was not written"
    assert [r["id"] for r in read_csv(partial)] == [str(i) for i in range(14)] and not (tmp_path / "out.csv").exists()


def test_a_stop_in_the_first_window_keeps_nothing_and_an_earlier_output_stays(tmp_path):
    write_csv(tmp_path / "in.csv", ["text"], [["a"], ["b"]])
    (tmp_path / "out.csv").write_text("mine\n")
    with pytest.raises(L.Stopped) as e:
        L.label_file(Lengths(stop_at=1, error=lambda: OSError(28, "No space left on device")), tmp_path / "in.csv",
                     tmp_path / "out.csv", progress=False)
    assert str(e.value) == (f"{tmp_path / 'out.partial.csv'}: no space left on device; no row was kept; "
                            f"{tmp_path / 'out.csv'} was left as it was")
    assert (tmp_path / "out.csv").read_text() == "mine\n" and not (tmp_path / "out.partial.csv").exists()
