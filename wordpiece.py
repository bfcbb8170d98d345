"""The BERT tokenizer, rebuilt from vocab.txt exactly like the reference BertTokenizer, and encode():
texts to the (B, T) tensors input_ids, attention_mask, token_type_ids that the model takes.

encode is three steps, kept apart for batching.py: token_ids (the ids of each text, cut to length),
pad (one padded array of them) and tensors (a batch's tensors from rows of that array). A Loader
tokenizes and pads a whole dataset once, then makes each batch with tensors.

This module imports nothing from the rest of nanobert but the file plumbing (files.py, for DataError).
"""

import json
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from files import DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def load_tokenizer(model_dir):
    """A BERT WordPiece tokenizer built from `model_dir`/vocab.txt (+ tokenizer_config.json if present)."""
    # We build it from vocab.txt rather than tokenizer.json so that every step is visible here,
    # and so that old checkpoints that ship only a vocabulary work too.
    model_dir = Path(model_dir)
    vocab_path = model_dir / "vocab.txt"
    if not vocab_path.is_file():
        raise FileNotFoundError(f"{vocab_path}: not found; expected a BERT model folder with a WordPiece vocab.txt")
    # As in the reference implementation: one token per line, a repeated token keeps its last id.
    with open(vocab_path, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise DataError(f"{vocab_path}: special token(s) {missing} missing; expected all of {SPECIAL_TOKENS}")

    config = {}
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{config_path}: not valid JSON ({e})") from None

    tokenizer = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    # BertNormalizer: drop control characters, space out CJK ideographs (each becomes one word),
    # strip accents (None = do it exactly when lower-casing, as the original BERT did), lower-case.
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"),
        lowercase=config.get("do_lower_case", True),
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # split on whitespace and punctuation
    tokenizer.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    tokenizer.decoder = decoders.WordPiece()
    # The reference tokenizer maps a literal "[SEP]" typed in the text to the special token; so do we.
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def token_ids(tokenizer, texts, max_length):
    """Token ids per text, [CLS] ... [SEP], cut to at most max_length tokens."""
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: expected at least 2 (room for [CLS] and [SEP])")
    # Cut here rather than with the tokenizer's own truncation setting: that setting lives on the
    # shared tokenizer object, and changing it would race with another thread encoding at once.
    # Keeping [CLS] + the first max_length - 2 pieces + [SEP] is exactly what truncation does.
    sep = tokenizer.token_to_id("[SEP]")
    ids = [e.ids for e in tokenizer.encode_batch(list(texts))]
    return [seq if len(seq) <= max_length else seq[: max_length - 1] + [sep] for seq in ids]


def pad(ids, tokenizer):
    """(len(ids), longest) int32 array of the id lists, padded on the right with [PAD], and the lengths."""
    lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
    array = np.full((len(ids), lengths.max(initial=0)), tokenizer.token_to_id("[PAD]"), dtype=np.int32)
    for row, seq in enumerate(ids):
        array[row, : len(seq)] = seq
    return array, lengths


def tensors(ids, lengths, multiple=1):
    # Dynamic padding: a batch is only as wide as its longest text (rounded up to a multiple of
    # `multiple`, within ids' own width); the mask marks the real tokens.
    # One text per row, so every token is of segment 0.
    width = min(ids.shape[1], -(-int(lengths.max(initial=0)) // multiple) * multiple)
    input_ids = torch.from_numpy(ids[:, :width]).long()
    attention_mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def encode(tokenizer, texts, max_length):
    """Tensors input_ids, attention_mask, token_type_ids of shape (B, T), T = longest text here."""
    return tensors(*pad(token_ids(tokenizer, texts, max_length), tokenizer))
