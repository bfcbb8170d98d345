"""Data for nanobert: the BERT tokenizer, the toxic-comment datasets, one fixed split, and batches.

Read top to bottom:
  1. the tokenizer, rebuilt from vocab.txt exactly like the reference BertTokenizer;
  2. the datasets (Davidson et al. 2017, hate_speech18, any CSV/JSONL) as plain lists, each text
     with the group it must stay with (its author, or its near-duplicate tweets), and the two-label
     dataset (toxic, hate) that joins both sources;
  3. getting the files: an offline mirror, then a local cache, then a checked download;
  4. one stratified train/validation/test split that keeps every group on one side, saved as a
     manifest every model reuses, and a measure of how much an older split leaks;
  5. batches: pre-tokenized once, bucketed by length so little compute goes to padding.

This module imports nothing from the rest of nanobert but the file plumbing (files.py), so it can be read
and tested alone.
"""

import contextlib
import csv
import hashlib
import html
import io
import json
import os
import re
import urllib.error
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

import files


class DataError(ValueError):
    """Input that cannot be used as it is; the message names the file, the row and what was expected."""


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _decode(raw):
    """UTF-8 text and how many invalid byte sequences were replaced by U+FFFD."""
    # Real-world dumps contain the odd stray byte; losing one character beats refusing the file.
    # "utf-8-sig" also drops the byte-order mark that spreadsheet programs like to add.
    text = raw.decode("utf-8-sig", errors="replace")
    return text, text.count("\ufffd") - raw.count("\ufffd".encode())


# ----------------------------------------------------------------------------------------------
# 1. Tokenizer

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


def _token_ids(tokenizer, texts, max_length):
    """Token ids per text, [CLS] ... [SEP], cut to at most max_length tokens."""
    if max_length < 2:
        raise ValueError(f"max_length={max_length}: expected at least 2 (room for [CLS] and [SEP])")
    # Cut here rather than with the tokenizer's own truncation setting: that setting lives on the
    # shared tokenizer object, and changing it would race with another thread encoding at once.
    # Keeping [CLS] + the first max_length - 2 pieces + [SEP] is exactly what truncation does.
    sep = tokenizer.token_to_id("[SEP]")
    ids = [e.ids for e in tokenizer.encode_batch(list(texts))]
    return [seq if len(seq) <= max_length else seq[: max_length - 1] + [sep] for seq in ids]


def _pad(ids, tokenizer):
    """(len(ids), longest) int32 array of the id lists, padded on the right with [PAD], and the lengths."""
    lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
    array = np.full((len(ids), lengths.max(initial=0)), tokenizer.token_to_id("[PAD]"), dtype=np.int32)
    for row, seq in enumerate(ids):
        array[row, : len(seq)] = seq
    return array, lengths


def _tensors(ids, lengths):
    # Dynamic padding: a batch is only as wide as its longest text; the mask marks the real tokens.
    # One text per row, so every token is of segment 0.
    width = int(lengths.max(initial=0))
    input_ids = torch.from_numpy(ids[:, :width]).long()
    attention_mask = (torch.arange(width)[None, :] < torch.from_numpy(lengths)[:, None]).long()
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": torch.zeros_like(input_ids)}


def encode(tokenizer, texts, max_length):
    """Tensors input_ids, attention_mask, token_type_ids of shape (B, T), T = longest text here."""
    return _tensors(*_pad(_token_ids(tokenizer, texts, max_length), tokenizer))


# ----------------------------------------------------------------------------------------------
# 2. Datasets


@dataclass
class Dataset:
    """Texts with labels, and notes saying what loading changed.

    A label is an integer 0..len(label_names)-1 (one class per text), or in a multi-label dataset a
    list with one entry per label name: 1 yes, 0 no, -1 not annotated by the source of the text.
    The per-text lists groups, sources and posts are None where the data has no such thing:
      groups   the key of the group a text must stay with in a split (its author, its near-duplicate
               tweets, a column of the file); None for a text that is a group of its own;
      sources  the dataset each text comes from, in a dataset that joins several;
      posts    the post a sentence was taken from (hate_speech18), to measure leakage by post.
    """

    name: str
    texts: list
    labels: list
    label_names: list
    notes: list = field(default_factory=list)
    options: dict = field(default_factory=dict)  # how it was loaded; recorded in split manifests
    groups: list | None = None
    grouping: str | None = None  # what the groups are: "author", "near-duplicate", "column:<name>"; None: unnamed
    sources: list | None = None
    posts: list | None = None

    PER_TEXT = ("texts", "labels", "groups", "sources", "posts")

    def __post_init__(self):
        for key in self.PER_TEXT[1:]:
            values = getattr(self, key)
            if values is not None and len(values) != len(self.texts):
                raise ValueError(f"{self.name}: {len(values)} {key} for {len(self.texts)} texts; expected one per text")

    def __len__(self):
        return len(self.texts)

    @property
    def multilabel(self):
        return bool(self.labels) and isinstance(self.labels[0], (list, tuple))

    def _with(self, per_text, name=None, notes=None):
        """A dataset like this one holding other texts: per_text maps PER_TEXT keys to new lists."""
        return Dataset(name or self.name, per_text["texts"], per_text["labels"], self.label_names,
                       [] if notes is None else notes, self.options, per_text.get("groups"), self.grouping,
                       per_text.get("sources"), per_text.get("posts"))

    def subset(self, indices, name=None):
        picked = {key: [getattr(self, key)[i] for i in indices] for key in self.PER_TEXT if getattr(self, key) is not None}
        return self._with(picked, name)

    def class_counts(self):
        """Texts per class; multi-label: {label name: [no, yes, not annotated]}."""
        if self.multilabel:
            return {name: [sum(y[j] == v for y in self.labels) for v in (0, 1, -1)] for j, name in enumerate(self.label_names)}
        counts = Counter(self.labels)
        return [counts[i] for i in range(len(self.label_names))]


_URL = re.compile(r"(?:https?://|www\.)\S+")
_MENTION = re.compile(r"(?<!\w)@\w+")
_RETWEET = re.compile(r"(?<!\w)RT(?!\w):?")
_SPACES = re.compile(r"\s+")


def normalize_tweet(text, *, html_entities=True, mentions=True, urls=True, retweets=True):
    """Tweet clean-up as is usual for this data: &amp;->&, @someone->@user, links->http, RT dropped."""
    # The scraped tweets still carry HTML escapes (&amp; &#8220;); a model should see the characters.
    if html_entities:
        text = html.unescape(text)
    # Handles and links are near-unique strings: they teach a model nothing general, but let it
    # memorise individual users. Links first, since a URL can contain an @.
    if urls:
        text = _URL.sub("http", text)
    if mentions:
        text = _MENTION.sub("@user", text)
    if retweets:
        text = _RETWEET.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


_HTTP = re.compile(r"(?<!\w)http(?!\w)")  # the placeholder normalize_tweet leaves for a link
_NOT_WORD = re.compile(r"[\W_]+")  # punctuation, symbols, emoji, spaces


def near_duplicate_key(tweet):
    """What is left of a tweet without mentions, links, RT, HTML escapes, case, punctuation, emoji and spaces.

    Tweets with the same key are one group in a split: retweets of one tweet by other users, with
    other @mentions, or with the punctuation changed, must not be on both sides of it. None if
    nothing is left (a tweet of only mentions and links): such a tweet is a group of its own, since
    tweets that share nothing must not be lumped together.
    """
    # The key removes everything normalize_tweet replaces (links, @user, RT), so a normalised text
    # keeps the key of its raw tweet, and near-copies keep one key whether normalised or not.
    text = html.unescape(tweet)
    for pattern in (_URL, _MENTION, _RETWEET, _HTTP):
        text = pattern.sub(" ", text)
    return _NOT_WORD.sub("", text.lower()) or None


def near_duplicate_groups(texts, min_length=20):
    """Per text, the group of its near-duplicates: same near_duplicate_key, or a key that begins or
    ends another one and has at least min_length characters; None for a text alone.

    The second rule catches a retweet cut short with "…" (the start of the whole tweet) and a quote
    that adds a comment ("@user: <the tweet>" and more, or "Photo: <the tweet>"). Below min_length
    a shared start is more often a common phrase than a copy. A group is named by its first key in
    sorted order, so the names depend on the texts only, not on their order.
    """
    keys = [near_duplicate_key(text) for text in texts]
    unique = sorted({k for k in keys if k is not None})
    parent = {k: k for k in unique}

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    # In sorted order, the keys that begin with k follow k directly; reversed, those that end with it.
    for flip in (False, True):
        view = sorted((k[::-1] if flip else k, k) for k in unique)
        for j, (v, k) in enumerate(view):
            after = j + 1
            while len(k) >= min_length and after < len(view) and view[after][0].startswith(v):
                a, b = root(k), root(view[after][1])
                parent[max(a, b)] = min(a, b)
                after += 1
    return [None if k is None else root(k) for k in keys]


def _csv_records(text, where, columns):
    """(line number, row as dict) for each row of a CSV text with a header, after checking columns."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise DataError(f"{where}: empty file; expected a CSV header with columns {columns}")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; expected {columns}, found {header}")
    records = []
    try:
        for row in reader:
            if not row:
                continue  # blank line
            if len(row) != len(header):
                raise DataError(f"{where} line {reader.line_num}: {len(row)} fields, expected {len(header)} ({header})")
            records.append((reader.line_num, dict(zip(header, row))))
    except csv.Error as e:  # e.g. a field over csv.field_size_limit(), or a NUL byte
        raise DataError(f"{where} line {reader.line_num}: {e}; expected well-formed CSV") from None
    return records


def _jsonl_records(text, where, columns):
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where} line {number}: not valid JSON ({e.msg}); expected an object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{where} line {number}: found {type(row).__name__}, expected a JSON object")
        missing = [c for c in columns if c not in row]
        if missing:
            raise DataError(f"{where} line {number}: missing key(s) {missing}; expected {columns}, found {list(row)}")
        records.append((number, row))
    return records


def _read_records(path, columns):
    """Rows of a .csv or .jsonl file, and notes on anything repaired while reading."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    text, replaced = _decode(path.read_bytes())
    notes = [f"{replaced} invalid UTF-8 byte sequence(s) replaced by U+FFFD"] if replaced else []
    if path.suffix.lower() == ".jsonl":
        return _jsonl_records(text, path, columns), notes
    return _csv_records(text, path, columns), notes


def _note_empty(notes, empty):
    if empty:
        notes.append(f"dropped {empty} empty or whitespace-only text(s)")


TWO_LABELS = ["toxic", "hate"]  # the two questions of the multi-label model; -1: not annotated


def read_davidson(path, *, three_class=False, normalize=True, multilabel=False):
    """Davidson et al. 2017 labeled_data.csv: toxic (hate or offensive) vs not, or the 3 classes,
    or (multilabel) the pair [toxic, hate]. Each tweet is grouped with its near-duplicates."""
    if three_class and multilabel:
        raise ValueError("three_class=True, multilabel=True: expected one of them")
    records, notes = _read_records(path, ["class", "tweet"])
    # The paper's classes: 0 hate speech, 1 offensive, 2 neither. Binary toxicity merges 0 and 1;
    # the two labels say both: hate speech is toxic and hateful, offensive only toxic.
    mapping = {"0": 0, "1": 1, "2": 2} if three_class else {"0": 1, "1": 1, "2": 0}
    if multilabel:
        mapping = {"0": [1, 1], "1": [1, 0], "2": [0, 0]}
    options = normalize if isinstance(normalize, dict) else {}
    texts, labels, empty = [], [], 0
    for line, row in records:
        if row["class"].strip() not in mapping:
            raise DataError(f"{path} line {line}: class is {row['class']!r}, expected 0, 1 or 2")
        text = normalize_tweet(row["tweet"], **options) if normalize is not False else row["tweet"].strip()
        if not text:
            empty += 1
            continue
        texts.append(text)
        labels.append(mapping[row["class"].strip()])
    _note_empty(notes, empty)
    names = ["hate", "offensive", "neither"] if three_class else ["not toxic", "toxic"]
    # Keyed on the text as loaded, so that copies drop_duplicates merges are always of one group.
    groups = near_duplicate_groups(texts)
    return Dataset("davidson", texts, labels, TWO_LABELS if multilabel else names,
                   [f"read {len(records)} tweets from {path}"] + notes,
                   {"three_class": three_class, "normalize": normalize, **({"multilabel": True} if multilabel else {})},
                   groups, "near-duplicate")


HATE18_META = "annotations_metadata.csv"


@contextlib.contextmanager
def _hate_speech18_files(path):
    """Yield read(name) -> bytes for files of the hate-speech-dataset repository, from its zip or a folder."""
    # GitHub's archive puts everything under one top folder (hate-speech-dataset-master/); find it
    # by where annotations_metadata.csv is instead of trusting the name.
    path = Path(path)
    if path.is_dir():
        roots = [path] if (path / HATE18_META).is_file() else [p.parent for p in path.glob("*/" + HATE18_META)]
        if not roots:
            raise FileNotFoundError(f"{path}: no {HATE18_META} in this folder or one below it")
        yield lambda name: (roots[0] / name).read_bytes()
        return
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: not a valid zip archive ({e}); expected the hate-speech-dataset zip") from None
    with archive:
        metas = sorted((n for n in archive.namelist() if n.rsplit("/", 1)[-1] == HATE18_META), key=len)
        if not metas:
            raise DataError(f"{path}: no {HATE18_META} inside; expected the hate-speech-dataset repository zip")
        prefix = metas[0][: -len(HATE18_META)]

        def read(name):
            try:
                return archive.read(prefix + name)
            except KeyError:
                raise FileNotFoundError(f"{path}: member {prefix + name} not found in the archive") from None
            except (zipfile.BadZipFile, zlib.error) as e:  # damaged bytes: bad CRC or bad deflate stream
                raise DataError(f"{path}: member {prefix + name} is corrupt ({e}); the zip is damaged") from None

        yield read


def read_hate_speech18(path, *, drop=("relation", "idk/skip"), multilabel=False):
    """de Gibert et al. 2018 sentences: hate (1) vs noHate (0), or (multilabel) the pair [toxic, hate];
    labels in `drop` are left out. Each sentence is grouped with its author's, and knows its post."""
    # "relation" sentences are hateful only together with their neighbours and "idk/skip" ones the
    # annotators could not decide: neither has a label of its own, hence dropped by default.
    names = ["noHate", "hate"] + [name for name in ("relation", "idk/skip") if name not in drop]
    if multilabel and names != ["noHate", "hate"]:
        raise ValueError(f"drop={drop}: multilabel needs 'relation' and 'idk/skip' dropped; expected the default")
    texts, labels, notes, dropped, empty, replaced = [], [], [], Counter(), 0, 0
    users, posts = [], []
    with _hate_speech18_files(path) as read:
        meta, bad = _decode(read(HATE18_META))
        records = _csv_records(meta, f"{path}:{HATE18_META}", ["file_id", "user_id", "label"])
        for line, row in records:
            if row["label"] in drop:
                dropped[row["label"]] += 1
                continue
            if row["label"] not in names:
                raise DataError(f"{path}:{HATE18_META} line {line}: label {row['label']!r}, "
                                f"expected one of {names + list(drop)}")
            text, bad_here = _decode(read(f"all_files/{row['file_id']}.txt"))
            replaced += bad_here
            if not text.strip():
                empty += 1
                continue
            texts.append(text.strip())
            labels.append(names.index(row["label"]))
            # file_id is <post id>_<sentence number>: sentences of one post, and all posts of one
            # author, share words, topics and style; a split keeps an author on one side.
            users.append(row["user_id"].strip() or None)
            posts.append(row["file_id"].rsplit("_", 1)[0])
    if multilabel:
        # hate is offensive too; noHate says nothing of toxicity (the forum's annotators were
        # asked about hate only), so toxic is not annotated there.
        labels = [[1, 1] if label == 1 else [-1, 0] for label in labels]
    notes.append(f"read {len(records)} annotated sentences from {path}")
    if dropped:
        notes.append("dropped " + ", ".join(f"{n} {label!r}" for label, n in sorted(dropped.items())) + " sentences")
    if replaced + bad:
        notes.append(f"{replaced + bad} invalid UTF-8 byte sequence(s) replaced by U+FFFD")
    _note_empty(notes, empty)
    options = {"drop": list(drop), **({"multilabel": True} if multilabel else {})}
    return Dataset("hate_speech18", texts, labels, TWO_LABELS if multilabel else names, notes, options,
                   users, "author", posts=posts)


def _cell(value):
    """A CSV/JSON value as a stripped string: JSON 1 -> "1", null -> "null"."""
    return value.strip() if isinstance(value, str) else json.dumps(value)


def read_table(path, *, text_column="text", label_column="label", label_map=None, group_column=None):
    """Any .csv or .jsonl file with a text and a label column: bring your own toxic-comment data.

    Without label_map the labels must be the integers 0..K-1. With it, label_map maps the label as
    written in the file (e.g. "toxic", or "1" for a JSON 1) to an id; an id of None drops the row.
    group_column (e.g. an author or thread id) keeps the texts of one value on one side of a split;
    a row with an empty value (or JSON null) is a group of its own.
    label_column "toxic,hate" (several columns): a multi-label dataset, one yes/no question per column,
    each cell 1, 0, or empty (or null) where the row does not annotate that question.
    """
    label_columns = [c.strip() for c in label_column.split(",")]
    records, notes = _read_records(path, [text_column, *label_columns] + ([group_column] if group_column else []))
    multilabel = len(label_columns) > 1
    if multilabel and label_map is not None:
        raise DataError(f"{path}: label_map with several label columns {label_columns}; expected 0/1 cells, no label_map")
    texts, labels, groups, bad, empty, dropped = [], [], [], [], 0, 0
    for line, row in records:
        key = _cell(row[label_column]) if not multilabel else None
        if multilabel:
            cells = [_cell(row[c]) for c in label_columns]
            if any(c not in ("0", "1", "") for c in cells):
                bad.append(f"line {line}: {cells}")
                continue
            label = [int(c) if c else -1 for c in cells]
        elif label_map is not None:
            if key not in label_map:
                bad.append(f"line {line}: {key!r}")
                continue
            label = label_map[key]
            if label is None:
                dropped += 1
                continue
        elif re.fullmatch(r"\d+", key):
            label = int(key)
        else:
            bad.append(f"line {line}: {key!r}")
            continue
        text = row[text_column] or ""  # JSON null counts as empty
        if not isinstance(text, str):
            raise DataError(f"{path} line {line}: {text_column!r} is {type(text).__name__} {text!r}, expected a string")
        if not text.strip():
            empty += 1
            continue
        texts.append(text.strip())
        labels.append(label)
        if group_column:
            value = row[group_column]
            groups.append(None if value is None else _cell(value) or None)
    if bad:
        expected = f"one of {sorted(label_map)}" if label_map is not None else "an integer 0..K-1 (or pass label_map)"
        if multilabel:
            expected = "1, 0 or empty in each label column"
        raise DataError(f"{path}: {len(bad)} label(s) in column {label_column!r} not usable, e.g. "
                        f"{', '.join(bad[:3])}; expected {expected}")
    if dropped:
        notes.append(f"dropped {dropped} row(s) whose label maps to None")
    _note_empty(notes, empty)
    if multilabel:
        names = label_columns
    elif label_map is not None:
        # Several file labels may share an id (e.g. hate and offensive -> toxic): name it after all of them.
        ids = sorted({v for v in label_map.values() if v is not None})
        if ids != list(range(len(ids))):
            raise DataError(f"{path}: label_map ids {ids}, expected 0..K-1 without gaps")
        names = ["/".join(k for k, v in label_map.items() if v == i) for i in ids]
    else:
        names = [str(i) for i in range(max(labels, default=-1) + 1)]
    options = {"text_column": text_column, "label_column": label_column, "label_map": label_map}
    if group_column:
        options["group_column"] = group_column  # only then: the options of older manifests stay as they were
    if multilabel:
        options["multilabel"] = True
    return Dataset(Path(path).name, texts, labels, names, [f"read {len(records)} rows from {path}"] + notes, options,
                   groups if group_column else None, f"column:{group_column}" if group_column else None)


def _majority(copies):
    """The most common of the copies' labels (ties: the first seen), and whether they disagreed."""
    if not isinstance(copies[0], (list, tuple)):
        counts = Counter(copies)
        return counts.most_common(1)[0][0], len(counts) > 1  # ties are ordered by first appearance
    # Multi-label: a vote per label among the copies that annotate it; -1 only if none does.
    label, conflict = [], False
    for votes in zip(*copies):
        counts = Counter(v for v in votes if v != -1)
        label.append(counts.most_common(1)[0][0] if counts else -1)
        conflict |= len(counts) > 1
    return label, conflict


def drop_duplicates(dataset):
    """The dataset with each text once, so that no test text can also be in training."""
    # Where copies disagree on the label we keep the majority label (ties: the first one seen):
    # the crowd's vote is the better guess, and the text keeps the place of its first copy.
    seen = {}
    for i, text in enumerate(dataset.texts):
        seen.setdefault(text, []).append(i)
    labels, conflicts = [], 0
    for copies in seen.values():
        label, conflict = _majority([dataset.labels[i] for i in copies])
        labels.append(label)
        conflicts += conflict
    kept = {"texts": list(seen), "labels": labels}
    # The rest (source, post) is the first copy's; so is the group, or the first one that a copy has.
    # Near-duplicate keys are computed from the text, so merged copies never join two groups.
    for key in ("sources", "posts"):
        if getattr(dataset, key) is not None:
            kept[key] = [getattr(dataset, key)[copies[0]] for copies in seen.values()]
    if dataset.groups is not None:
        kept["groups"] = [next((dataset.groups[i] for i in copies if dataset.groups[i] is not None), None)
                          for copies in seen.values()]
    removed = len(dataset) - len(seen)
    note = f"removed {removed} duplicate text(s) ({conflicts} with conflicting labels: majority label kept)" \
        if removed else "no duplicate texts"
    return dataset._with(kept, notes=dataset.notes + [note])


# ----------------------------------------------------------------------------------------------
# 3. Getting the files: mirror folder, then local cache, then download

# Where each file lives in a mirror or the cache, where it comes from, and how we know it is the
# right one. hate_speech18 is checked by one member: zip bytes differ between archivers.
FILES = {"davidson": "davidson/labeled_data.csv", "hate_speech18": "hate_speech18/hate-speech-dataset-master.zip"}
URLS = {
    "davidson": "https://raw.githubusercontent.com/t-davidson/hate-speech-and-offensive-language/master/data/"
    "labeled_data.csv",
    "hate_speech18": "https://github.com/Vicomtech/hate-speech-dataset/archive/refs/heads/master.zip",
}
SHA256 = {
    "davidson": "fcb8bc7c68120ae4af04a5b9acd58585513ede11e1548ebf36a5c2040b6f6281",
    "hate_speech18": "306bfaab400e1542529d1791b9ec68d70bed579c52fc7e255b0626ab7bc5c7c9",  # of annotations_metadata.csv
}


def verify(name, path):
    """Raise DataError unless `path` holds the known content of dataset `name`."""
    if name == "hate_speech18":
        with _hate_speech18_files(path) as read:
            actual, what = _sha256(read(HATE18_META)), f"sha256 of {HATE18_META}"
    else:
        actual, what = _sha256(Path(path).read_bytes()), "sha256"
    if actual != SHA256[name]:
        raise DataError(f"{path}: {what} is {actual}, expected {SHA256[name]}; "
                        f"a different or damaged copy of {URLS[name]}")


def fetch(name, *, mirror=None, cache_dir=None, url=None, progress=True):
    """Path to the checked file of dataset `name`: from the mirror, the cache, or downloaded into the cache."""
    if name not in FILES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(FILES)}")
    mirror = mirror or os.environ.get("NANOBERT_DATA")
    candidates = [Path(mirror) / FILES[name]] if mirror else []
    cached = Path(cache_dir or files.cache_root()) / "data" / FILES[name]
    for path in candidates + [cached]:
        if path.is_file():
            verify(name, path)
            return path
    url = url or URLS[name]
    try:
        return files.download(url, cached, check=lambda p: verify(name, p), progress=progress)
    except files.DownloadError as e:
        raise DataError(str(e)) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:  # offline, refused, HTTP error
        raise DataError(f"could not download {url} ({e}); offline? set NANOBERT_DATA (or pass mirror=) "
                        f"to a folder holding {FILES[name]}") from None


def join_sources(datasets):
    """One multi-label dataset of several (already without duplicates): sources kept, groups prefixed by source.

    A text in more than one source is kept once, as the first source named has it (its place, source
    and group); its labels are voted label by label as drop_duplicates does, so an annotation of one
    source fills in a label the other leaves out (-1), and where both annotate it and disagree, the
    first source's label stands (a tie of two copies).
    """
    names = [d.name for d in datasets]
    if len(set(names)) != len(names) or any(d.label_names != datasets[0].label_names for d in datasets):
        raise ValueError(f"{names}: expected distinct datasets with the same label names")
    per_text = {key: [] for key in Dataset.PER_TEXT}
    for d in datasets:
        per_text["texts"] += d.texts
        per_text["labels"] += d.labels
        per_text["sources"] += d.sources or [d.name] * len(d)
        # Prefixed, an author of one source never meets a near-duplicate key of the other.
        for key in ("groups", "posts"):
            per_text[key] += [None if v is None else f"{d.name}:{v}" for v in getattr(d, key) or [None] * len(d)]
    for key in ("groups", "posts"):
        if all(getattr(d, key) is None for d in datasets):
            per_text[key] = None
    grouping = datasets[0].grouping if len(datasets) == 1 else "+".join(f"{d.name}:{d.grouping or 'groups'}" for d in datasets)
    joined = Dataset("+".join(names), per_text["texts"], per_text["labels"], datasets[0].label_names,
                     [n for d in datasets for n in d.notes], {"multilabel": True, "sources": {d.name: d.options for d in datasets}},
                     per_text["groups"], grouping, per_text["sources"], per_text["posts"])
    if len(datasets) == 1:
        return joined
    merged = drop_duplicates(joined)
    merged.notes[-1] = "across sources: " + merged.notes[-1]
    return merged


def load_dataset(name_or_path, *, mirror=None, cache_dir=None, three_class=False, normalize=True,
                 text_column="text", label_column="label", label_map=None, group_column=None, multilabel=False):
    """'davidson', 'hate_speech18' or a path to a .csv/.jsonl file, ready to split: duplicates removed.

    normalize (Davidson only): True, False, or a dict of normalize_tweet switches.
    'davidson+hate_speech18' (either order; the first wins a text both have), or one of them with
    multilabel=True: the two-label dataset, labels [toxic, hate] with -1 where the source is silent.
    group_column (CSV/JSONL only): the column of an author or thread id to keep together in a split.
    """
    table = Path(name_or_path).suffix.lower() in (".csv", ".jsonl")
    names = [name_or_path] if table else str(name_or_path).split("+")
    if len(names) > 1 or multilabel and name_or_path in FILES:
        unknown = [n for n in names if n not in FILES]
        if unknown or len(set(names)) != len(names) or three_class:
            raise ValueError(f"{name_or_path!r}{', three_class' if three_class else ''}: expected distinct names "
                             f"of {sorted(FILES)} joined by '+', for the two labels {TWO_LABELS}")
        parts = []
        for name in names:
            path = fetch(name, mirror=mirror, cache_dir=cache_dir)
            parts.append(drop_duplicates(read_davidson(path, normalize=normalize, multilabel=True) if name == "davidson"
                                         else read_hate_speech18(path, multilabel=True)))
        return join_sources(parts)
    if multilabel:
        raise ValueError(f"{name_or_path!r}, multilabel=True: expected 'davidson', 'hate_speech18' or both joined by '+'")
    if name_or_path in FILES:
        path = fetch(name_or_path, mirror=mirror, cache_dir=cache_dir)
        dataset = read_davidson(path, three_class=three_class, normalize=normalize) if name_or_path == "davidson" \
            else read_hate_speech18(path)
    elif table:
        dataset = read_table(name_or_path, text_column=text_column, label_column=label_column, label_map=label_map,
                             group_column=group_column)
    else:
        raise ValueError(f"{name_or_path!r}: expected 'davidson', 'hate_speech18' or a path to a .csv or .jsonl file")
    return drop_duplicates(dataset)


# ----------------------------------------------------------------------------------------------
# 4. One split for every model of a comparison

# Format 1 split text by text, so near-copies of a tweet or sentences of one author could be on
# both sides; format 2 keeps each group on one side and says which grouping it used. Both load,
# apply and verify, so that runs made on a format-1 split stay reproducible.
MANIFEST_FORMAT = "nanobert-split-2"
OLD_FORMATS = ("nanobert-split-1",)
PARTS = ("train", "validation", "test")


def dataset_hash(texts, labels):
    """sha256 of the (text, label) pairs in order: changes if any text, label or the order changes."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        h.update(json.dumps([text, label], ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def _manifest_hash(manifest):
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def _strata(dataset):
    """Per text, what every part keeps in proportion: the label, or in a multi-label dataset source and labels."""
    if not dataset.multilabel:
        return list(dataset.labels)
    sources = dataset.sources or [dataset.name] * len(dataset)
    return [f"{source}:{','.join(map(str, label))}" for source, label in zip(sources, dataset.labels)]


def _units(groups):
    """Lists of the positions that go to one part together, in order of first appearance; None: alone."""
    units = {}
    for i, group in enumerate(groups):
        units.setdefault((i,) if group is None else group, []).append(i)  # a tuple is never a group key
    return list(units.values())


def _random_split(dataset, fractions, rng):
    """Text by text, stratum by stratum: format 1's method, so grouping="none" gives its very splits."""
    strata = np.asarray(_strata(dataset))
    keys = sorted(set(strata.tolist())) if dataset.multilabel else range(len(dataset.label_names))
    parts = {part: [] for part in PARTS}
    for key in keys:
        members = rng.permutation(np.flatnonzero(strata == key))
        n_test, n_val = round(len(members) * fractions[2]), round(len(members) * fractions[1])
        parts["test"] += members[:n_test].tolist()
        parts["validation"] += members[n_test : n_test + n_val].tolist()
        parts["train"] += members[n_test + n_val :].tolist()
    return parts


def _grouped_split(dataset, fractions, rng):
    """Whole groups, one part each, so that every stratum stays near its share in every part.

    The groups are shuffled (seed), then each joins the part where it least increases the distance
    sum over parts p and strata s of (n[p, s] - target[p, s])^2 / target[p, s] (Pearson's chi-square)
    of the counts so far from the targets fraction[p] * (texts of s). Dividing by the target keeps
    rare classes in proportion as well as common ones, and sends a large group to the large part.
    """
    units, strata = _units(dataset.groups), _strata(dataset)
    column = {key: j for j, key in enumerate(sorted(set(strata), key=str))}
    counts = np.zeros((len(units), len(column)))
    for u, members in enumerate(units):
        for i in members:
            counts[u, column[strata[i]]] += 1
    target = np.outer(fractions, counts.sum(axis=0))
    safe = np.where(target > 0, target, 1.0)  # a zero target meets only zero counts
    n, parts = np.zeros_like(target), {part: [] for part in PARTS}
    for u in rng.permutation(len(units)):
        c = counts[u]
        growth = ((2 * (n - target) + c) * c / safe).sum(axis=1)  # the change of the distance, per part
        growth[np.asarray(fractions) == 0] = np.inf
        p = int(np.argmin(growth))  # ties: the first part, train
        n[p] += c
        parts[PARTS[p]] += units[u]
    return parts


def _grouping(dataset, grouping):
    """The grouping a split of `dataset` uses: 'none' (text by text) or the name of the dataset's groups."""
    if grouping == "none" or grouping == "auto" and dataset.groups is None:
        return "none"
    if dataset.groups is None:
        raise DataError(f"{dataset.name}: has no groups for grouping={grouping!r}; expected 'auto' or 'none' "
                        "(or a dataset loaded with groups, e.g. group_column=)")
    name = dataset.grouping or "groups"
    if grouping not in ("auto", name):
        raise ValueError(f"grouping={grouping!r}: expected 'auto', 'none' or {name!r} (the groups {dataset.name} has)")
    return name


def _part_counts(dataset, indices):
    """Texts per class in a part; multi-label: per label [no, yes, not annotated]."""
    if dataset.multilabel:
        return dataset.subset(indices).class_counts()
    return np.bincount(np.asarray(dataset.labels, dtype=np.int64)[indices], minlength=len(dataset.label_names)).tolist()


def _split_parts(dataset, fractions, seed, grouping):
    """{part: positions}. A dataset of several sources is split source by source, each exactly as its
    own single-label split would be (same seed, same groups, stratified by its own label): a text is in
    the test part of the joined dataset exactly when it is in the test part of its source's split, so
    a model trained on one source and one trained on all can be compared on the same test texts."""
    def split(d):
        rng = np.random.default_rng(seed)
        return _random_split(d, fractions, rng) if grouping == "none" else _grouped_split(d, fractions, rng)

    if not dataset.multilabel or dataset.sources is None or len(set(dataset.sources)) == 1 and dataset.sources[0] == dataset.name:
        return split(dataset)
    parts = {part: [] for part in PARTS}
    for source in dict.fromkeys(dataset.sources):
        where = [i for i, s in enumerate(dataset.sources) if s == source]
        labels = [dataset.labels[i] for i in where]
        # The source's own label: the first one it annotates for every text (Davidson: toxic; hate_speech18: hate).
        column = next(j for j in range(len(dataset.label_names)) if all(y[j] >= 0 for y in labels))
        names = [f"not {dataset.label_names[column]}", dataset.label_names[column]]
        groups = None if dataset.groups is None else [dataset.groups[i] for i in where]
        own = Dataset(source, [dataset.texts[i] for i in where], [y[column] for y in labels], names, groups=groups)
        for part, positions in split(own).items():
            parts[part] += [where[k] for k in positions]
    return parts


def make_split(dataset, *, fractions=(0.8, 0.1, 0.1), seed=0, grouping="auto"):
    """A stratified train/validation/test split of `dataset`, as a manifest dict (see save_manifest).

    grouping="auto": if the dataset has groups (authors, near-duplicate tweets, a group column),
    each group goes whole to one part, and the parts keep the label (and source) proportions about
    right; without groups, and with grouping="none", text by text with exact proportions.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions={fractions}: expected three non-negative numbers that sum to 1")
    if len(set(dataset.texts)) != len(dataset):
        raise DataError(f"{dataset.name}: has duplicate texts; expected them removed (load_dataset or drop_duplicates) "
                        "so no test text is also in training")
    grouping = _grouping(dataset, grouping)
    parts = _split_parts(dataset, fractions, seed, grouping)
    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset.name,
        "options": dataset.options,
        "label_names": dataset.label_names,
        "data_sha256": dataset_hash(dataset.texts, dataset.labels),
        "size": len(dataset),
        "seed": seed,
        "fractions": list(fractions),
        "grouping": grouping,
        "groups": len(dataset) if grouping == "none" else len(_units(dataset.groups)),  # what was dealt out
        "class_counts": {p: _part_counts(dataset, parts[p]) for p in PARTS},
    }
    if dataset.sources is not None:
        manifest["source_counts"] = {p: dict(Counter(dataset.sources[i] for i in parts[p])) for p in PARTS}
    # The training part is everything else: listing it too would triple the file for nothing.
    manifest["indices"] = {p: sorted(parts[p]) for p in ("validation", "test")}
    manifest["manifest_sha256"] = _manifest_hash(manifest)
    return manifest


def split_kind(manifest):
    """How a manifest's parts were drawn, in words (for reports): random by text, or grouped by what."""
    grouping = manifest.get("grouping", "none")  # format 1 had no groups
    if grouping == "none":
        return "random by text (may leak: near-duplicates/authors can be on both sides)"
    words = lambda kind: f"column {kind[7:]!r}" if kind.startswith("column:") else \
        {"near-duplicate": "near-duplicate tweet", "groups": "the dataset's groups"}.get(kind, kind)
    if "+" not in grouping or grouping.startswith("column:"):
        return f"grouped by {words(grouping)}"
    # Joined sources, e.g. davidson:near-duplicate+hate_speech18:author.
    return "grouped by " + " and ".join(f"{words(kind)} ({source})" for source, kind in
                                        (part.split(":", 1) for part in grouping.split("+")))


def save_manifest(manifest, path):
    # One key per line, each list on a single line: diff-able and small.
    lines = [f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in manifest.items()]
    files.write_text(path, "{\n" + ",\n".join(lines) + "\n}\n")


def check_manifest(manifest, dataset, where="split manifest"):
    """Raise DataError unless `manifest` is intact and was made from exactly this dataset."""
    if manifest.get("format") not in (MANIFEST_FORMAT, *OLD_FORMATS):
        raise DataError(f"{where}: format {manifest.get('format')!r}, expected one of {[MANIFEST_FORMAT, *OLD_FORMATS]}")
    if manifest.get("manifest_sha256") != _manifest_hash(manifest):
        raise DataError(f"{where}: manifest_sha256 does not match its content; expected an unedited manifest")
    if dataset is not None:
        actual = dataset_hash(dataset.texts, dataset.labels)
        if actual != manifest["data_sha256"]:
            raise DataError(f"{where}: made for data with sha256 {manifest['data_sha256'][:12]}… "
                            f"({manifest['dataset']}, {manifest['size']} texts, options {manifest['options']}), "
                            f"but this data ({dataset.name}, {len(dataset)} texts) hashes to {actual[:12]}…")
    return manifest


def load_manifest(path, dataset=None):
    """The manifest saved at `path`, checked intact and (if given) made from `dataset`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected a split manifest") from None
    return check_manifest(manifest, dataset, where=str(path))


def same_split(a, b):
    """True if manifests a and b split the same data the same way; raise DataError saying how they differ."""
    for key in ("data_sha256", "seed", "fractions", "indices"):
        if a.get(key) != b.get(key):
            shown = "" if key == "indices" else f": {a.get(key)} vs {b.get(key)}"
            raise DataError(f"the two splits differ in {key}{shown}; expected every model to use one split")
    return True


def split_indices(manifest):
    """{'train': [...], 'validation': [...], 'test': [...]}: the dataset positions of each part."""
    held_out = set(manifest["indices"]["validation"]) | set(manifest["indices"]["test"])
    return {"train": [i for i in range(manifest["size"]) if i not in held_out], **manifest["indices"]}


def apply_split(dataset, manifest):
    """{'train': Dataset, 'validation': Dataset, 'test': Dataset} as the manifest says."""
    check_manifest(manifest, dataset)
    parts = split_indices(manifest)
    return {part: dataset.subset(indices, f"{dataset.name}/{part}") for part, indices in parts.items()}


def leakage(dataset, manifest, *, keys=None, part="test"):
    """Share of the texts of `part` whose group also has a text in training (0.0: no leak).

    keys: per text, what to compare instead of dataset.groups, e.g. dataset.posts; None never matches.
    Any manifest of this dataset can be measured, so also how much an older random split leaked.
    """
    check_manifest(manifest, dataset)
    keys = dataset.groups if keys is None else keys
    if keys is None or len(keys) != len(dataset):
        raise DataError(f"{dataset.name}: {'no groups' if keys is None else f'{len(keys)} keys'} for {len(dataset)} texts; "
                        "expected a dataset with groups, or one key per text")
    indices = split_indices(manifest)
    seen = {keys[i] for i in indices["train"]} - {None}
    held = indices[part]
    return sum(keys[i] in seen for i in held) / len(held) if held else 0.0


def get_split(dataset, manifest_path, *, fractions=(0.8, 0.1, 0.1), seed=0, grouping="auto"):
    """Load the split at manifest_path (checking it fits dataset), or make and save it there; then apply it.

    A new split keeps the dataset's groups whole (see make_split); a saved one is used as it is,
    of whatever kind (split_kind), unless `grouping` asks for another kind.
    """
    if Path(manifest_path).exists():
        manifest = load_manifest(manifest_path, dataset)
        if manifest["seed"] != seed or manifest["fractions"] != list(fractions):
            raise DataError(f"{manifest_path}: seed {manifest['seed']}, fractions {manifest['fractions']}, expected "
                            f"{seed}, {list(fractions)}; use another path for another split")
        if grouping != "auto" and manifest.get("grouping", "none") != _grouping(dataset, grouping):
            raise DataError(f"{manifest_path}: {split_kind(manifest)}, expected grouping {grouping!r}; "
                            "use another path for another split")
    else:
        manifest = make_split(dataset, fractions=fractions, seed=seed, grouping=grouping)
        save_manifest(manifest, manifest_path)
    return apply_split(dataset, manifest)


# ----------------------------------------------------------------------------------------------
# 5. Batches


class BucketBatchSampler:
    """Batches of indices, similar lengths together; deterministic from (seed, epoch), resumable, shardable.

    shuffle=True: shuffle, sort by length within chunks of `bucket_batches` batches, cut into batches,
    shuffle the batches. A batch then holds texts of similar length (little padding), yet which texts
    meet and the order of batches still change every epoch. shuffle=False: batches in dataset order.

    With num_replicas > 1 (distributed training) batch_size is the global batch: every rank computes
    the same global batches and takes its share of each, rows rank, rank + num_replicas, ... So one
    optimizer step sees the same examples however many processes share the work. A last global
    batch smaller than num_replicas is left out, so that every rank has a part of every batch.

    A full pass moves on to the next epoch by itself. To resume, load_state_dict() and iterate:
    the batches already done in that epoch are skipped (do not call set_epoch, which restarts it).
    """

    def __init__(self, lengths, batch_size, *, shuffle=True, seed=0, bucket_batches=50, drop_last=False,
                 num_replicas=1, rank=0):
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size={batch_size}, bucket_batches={bucket_batches}: expected both >= 1")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank}, num_replicas={num_replicas}: expected 0 <= rank < num_replicas")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_batches, self.drop_last = bucket_batches, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch, self.batches_done = 0, 0

    def set_epoch(self, epoch):
        self.epoch, self.batches_done = epoch, 0

    def global_batches(self, epoch=None):
        """All batches of an epoch, for all ranks, in order."""
        n, size = len(self.lengths), self.batch_size
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch if epoch is None else epoch])
            order, chunk, batches = rng.permutation(n), size * self.bucket_batches, []
            for start in range(0, n, chunk):
                piece = order[start : start + chunk]
                piece = piece[np.argsort(self.lengths[piece], kind="stable")]
                batches += [piece[i : i + size] for i in range(0, len(piece), size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        else:
            batches = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == size]
        return [b for b in batches if len(b) >= self.num_replicas]

    def __len__(self):
        n, size = len(self.lengths), self.batch_size
        full, rest = divmod(n, size)
        return full + (0 < rest and not self.drop_last and rest >= self.num_replicas)

    def __iter__(self):
        # Counting the batches handed out is what makes a mid-epoch resume possible: a restored
        # sampler recomputes the same order and skips what was done.
        batches = self.global_batches()
        for i in range(self.batches_done, len(batches)):
            self.batches_done = i + 1
            yield batches[i][self.rank :: self.num_replicas].tolist()
        self.epoch, self.batches_done = self.epoch + 1, 0  # the next pass is the next epoch

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state):
        self.seed, self.epoch, self.batches_done = state["seed"], state["epoch"], state["batches_done"]


def padding_fraction(lengths, batches):
    """Share of the token positions in padded batches that are padding."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[b].sum()) for b in batches)
    total = sum(int(lengths[b].max()) * len(b) for b in batches if len(b))
    return 1 - real / total if total else 0.0


def class_weights(labels, num_classes=None):
    """Inverse-frequency class weights normalised so that the weighted count equals the plain count."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes or 0)
    if (counts == 0).any():
        empty = np.flatnonzero(counts == 0).tolist()
        raise DataError(f"class(es) {empty} have no examples; expected every class at least once for inverse frequency")
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


def pos_weights(labels):
    """Per label of a multi-label dataset, negatives / positives among the texts that annotate it (-1 does not).

    The pos_weight of a binary cross-entropy: a label's positives then weigh as much as its negatives.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 2:
        raise DataError(f"labels of shape {labels.shape}: expected (texts, labels), one 0/1/-1 list per text")
    positives, negatives = (labels == 1).sum(axis=0), (labels == 0).sum(axis=0)
    if (positives == 0).any() or (negatives == 0).any():
        empty = np.flatnonzero((positives == 0) | (negatives == 0)).tolist()
        raise DataError(f"label(s) {empty} lack positive or negative examples; expected both for negatives/positives")
    return torch.tensor(negatives / positives, dtype=torch.float32)


class Loader:
    """Batches of tensors from texts: tokenized once up front, then padded per batch.

    Yields dicts with input_ids, attention_mask, token_type_ids (B, T), labels if labels were given
    ((B,) of class ids, or (B, L) of 1/0/-1 for multi-label lists), and index (B,): each row's
    position in `texts`, to put predictions back in order.
    """

    def __init__(self, texts, labels, tokenizer, max_length, batch_size, *, shuffle=False, seed=0,
                 bucket_batches=50, drop_last=False, num_replicas=1, rank=0):
        ids = _token_ids(tokenizer, texts, max_length)  # once: bucketing needs the lengths anyway
        self.ids, self.lengths = _pad(ids, tokenizer)
        # One tensor either way: a list of ints is (N,), a list of [toxic, hate] pairs is (N, 2).
        self.labels = None if labels is None else torch.tensor(labels, dtype=torch.long)
        if self.labels is not None and len(self.labels) != len(ids):
            raise ValueError(f"{len(ids)} texts but {len(self.labels)} labels; expected one label per text")
        self.sampler = BucketBatchSampler(self.lengths, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last,
                                          bucket_batches=bucket_batches, num_replicas=num_replicas, rank=rank)

    def __len__(self):
        return len(self.sampler)

    def __iter__(self):
        for indices in self.sampler:
            yield self.collate(indices)

    def collate(self, indices):
        batch = _tensors(self.ids[indices], self.lengths[indices])
        batch["index"] = torch.tensor(indices, dtype=torch.long)
        if self.labels is not None:
            batch["labels"] = self.labels[batch["index"]]
        return batch

    def padding_fraction(self, epoch=None):
        return padding_fraction(self.lengths, self.sampler.global_batches(epoch))

    def state_dict(self):
        return self.sampler.state_dict()

    def load_state_dict(self, state):
        self.sampler.load_state_dict(state)
