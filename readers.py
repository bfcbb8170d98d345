"""The datasets as plain lists: Davidson et al. 2017, hate_speech18, any CSV/JSONL file.

Each reader gives a Dataset: the texts, their labels, notes saying what loading changed, and the
group each text must stay with in a split (its author, or its near-duplicate tweets). Then each
text once (drop_duplicates, by majority vote), and the two-label dataset (toxic, hate) that joins
both sources (join_sources). corpus.py finds the files; splits.py splits what these return.

This module imports nothing from the rest of nanobert but the file plumbing (files.py) and the
tweet clean-up (tweets.py).
"""

import contextlib
import csv
import io
import json
import re
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from files import DataError
from tweets import near_duplicate_groups, normalize_tweet


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


def _decode(raw):
    """UTF-8 text and how many invalid byte sequences were replaced by U+FFFD."""
    # Real-world dumps contain the odd stray byte; losing one character beats refusing the file.
    # "utf-8-sig" also drops the byte-order mark that spreadsheet programs like to add.
    text = raw.decode("utf-8-sig", errors="replace")
    return text, text.count("\ufffd") - raw.count("\ufffd".encode())


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
def hate_speech18_files(path):
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
    with hate_speech18_files(path) as read:
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
