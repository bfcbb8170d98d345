"""Tests for classifier.py's checks of its input: strings only, each wrong item named by its index, a
dict or a set refused whole, and blank texts given no prediction, as the command line gives none."""

import io
import math
from pathlib import Path

import numpy as np
import pytest

import pretrained
import runs
import wordpiece
from classifier import Classifier, check_texts

TINY = str(Path(__file__).resolve().parent / "fixtures" / "tiny-bert")


@pytest.fixture(scope="module")
def clf():
    return Classifier(pretrained.from_pretrained(TINY, verbose=False), wordpiece.load_tokenizer(TINY), runs.RunInfo({}, {}))


def test_strings_in_any_sequence_are_texts():
    assert check_texts("one text") == ["one text"]
    assert check_texts(("a", "b")) == ["a", "b"] and check_texts(iter(["a"])) == ["a"]
    assert check_texts(np.array(["a", "b"])) == ["a", "b"]  # numpy's str_ is a str
    assert check_texts([]) == []


@pytest.mark.parametrize("texts, message", [
    (["a", None], "texts[1]: None; expected a string"),
    (["a", "b", math.nan], "texts[2]: NaN (a missing value, as pandas reads an empty cell: drop or fill it first); expected a string"),
    ([b"abc"], "texts[0]: bytes (decode it first, e.g. text.decode('utf-8')); expected a string"),
    (["a", 3], "texts[1]: int 3; expected a string"),
    ({"a": 1}, "texts: a dict (its keys are not the texts to classify); expected a string or a list or tuple of strings"),
    ({"a", "b"}, "texts: a set (it has no order to give the results in); expected a string or a list or tuple of strings"),
    (b"abc", "texts: bytes (decode it first, e.g. text.decode('utf-8')); expected a string or a list or tuple of strings"),
    (None, "texts: None; expected a string or a list or tuple of strings"),
    (5, "texts: int 5; expected a string or a list or tuple of strings"),
])
def test_what_is_not_a_text_is_named_in_one_line(clf, texts, message):
    for call in (check_texts, clf.predict, clf.predict_proba):
        with pytest.raises(TypeError) as e:
            call(texts)
        assert str(e.value) == message


def test_a_pandas_column_with_an_empty_cell():
    pd = pytest.importorskip("pandas")
    column = pd.read_csv(io.StringIO("text\nyou are good\n\nok\n"), skip_blank_lines=False)["text"]
    with pytest.raises(TypeError, match=r"texts\[1\]: NaN"):
        check_texts(column)


def test_blank_texts_get_no_prediction(clf):
    texts = ["you are good", "", "  \n", "\u200f", "you are bad"]
    probs = clf.predict_proba(texts)
    assert probs.shape == (5, 2) and np.isnan(probs[1:4]).all() and not np.isnan(probs[[0, 4]]).any()
    assert np.allclose(probs[[0, 4]], clf.predict_proba(["you are good", "you are bad"]))  # the others as alone
    got = clf.predict(texts)
    assert [r["label"] for r in got[1:4]] == [None] * 3 and all(r["score"] is None and r["probabilities"] is None for r in got[1:4])
    assert got[0]["label"] in clf.labels and got[1]["text"] == ""
    assert clf.predict_proba([" "]).shape == (1, 2)


def test_a_model_of_an_unfinished_run_says_so_in_every_result(clf):
    clf.unfinished = "unfinished, epoch 1 of 3"
    try:
        assert [r["note"] for r in clf.predict(["a", " "])] == ["unfinished, epoch 1 of 3"] * 2
    finally:
        clf.unfinished = None
    assert "note" not in clf.predict(["a"])[0]


def test_a_two_class_run_decides_at_its_recorded_threshold():
    net, tok = pretrained.from_pretrained(TINY, verbose=False), wordpiece.load_tokenizer(TINY)
    names = [net.config.id2label[i] for i in range(2)]
    info = runs.RunInfo({"id2label": {"0": names[0], "1": names[1]}}, {"thresholds": {names[1]: 0.3}})
    at_threshold, by_argmax = Classifier(net, tok, info), Classifier(net, tok, runs.RunInfo({}, {}))
    assert at_threshold.threshold == 0.3 and by_argmax.threshold is None
    assert at_threshold.verdict([0.6, 0.4]) == (names[1], 0.4)  # class 1 at 0.4 >= 0.3
    assert by_argmax.verdict([0.6, 0.4]) == (names[0], 0.6)
    assert at_threshold.verdict([0.75, 0.25]) == (names[0], 0.75)


def test_probabilities_are_calibrated_at_the_runs_temperatures_and_an_older_run_keeps_its_own():
    import torch

    net, tok = pretrained.from_pretrained(TINY, verbose=False).eval(), wordpiece.load_tokenizer(TINY)
    names = [net.config.id2label[i] for i in range(2)]
    texts = ["you are terrible", "what a great day it was"]
    with torch.no_grad():
        logits = torch.cat([net(*(wordpiece.encode(tok, [t], 128)[k] for k in ("input_ids", "attention_mask", "token_type_ids")))
                            .logits for t in texts])
    older = Classifier(net, tok, runs.RunInfo({}, {"thresholds": {names[1]: 0.3}}))  # made before calibration
    assert older.temperatures is None
    assert np.allclose(older.predict_proba(texts), torch.softmax(logits, -1).numpy(), atol=1e-6)
    calibrated = Classifier(net, tok, runs.RunInfo({"id2label": {"0": names[0], "1": names[1]}},
                                                   {"thresholds": {names[1]: 0.3}, "temperatures": {names[1]: 2.5}}))
    assert calibrated.temperatures == [2.5, 2.5]  # one T for the whole softmax
    probs = calibrated.predict_proba(texts)
    assert np.allclose(probs, torch.softmax(logits / 2.5, -1).numpy(), atol=1e-6)
    assert not np.allclose(probs, older.predict_proba(texts), atol=1e-3)
    # The verdict and the decisions are at the recorded threshold, on the calibrated probabilities.
    assert [r["probabilities"][names[1]] for r in calibrated.predict(texts)] == pytest.approx(probs[:, 1].tolist())
    assert [r["label"] for r in calibrated.predict(texts)] == [names[int(p >= 0.3)] for p in probs[:, 1]]


def test_batches_of_few_shapes_change_no_probability(clf):
    import torch

    # predict_proba pads its batches to a few shapes (batching.py, few_shapes): a text's probabilities are
    # what the model gives it alone, unpadded.
    texts = [" ".join(["you are", "terrible", "what a day", "it was great"][: i % 4 + 1] * (i % 7 + 1)) for i in range(40)]
    with torch.no_grad():
        alone = torch.cat([torch.softmax(clf.net(*(wordpiece.encode(clf.tokenizer, [t], 128)[k]
                                                   for k in ("input_ids", "attention_mask", "token_type_ids"))).logits, -1)
                           for t in texts]).numpy()
    assert np.allclose(clf.predict_proba(texts), alone, atol=1e-6)
