"""One split for every model of a comparison: a stratified train/validation/test split that keeps
every group on one side, saved as a manifest every model reuses, and a measure of how much an
older split leaks.

Read top to bottom: the manifest formats and hashes; how a split is drawn (text by text, or whole
groups dealt out so that every part keeps the label proportions); make_split; saving, loading and
checking a manifest; applying it; leakage; and get_split, which makes a split once and reuses it.

This module imports nothing from the rest of nanobert but the file plumbing (files.py) and the
Dataset of readers.py.
"""

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np

import files
from files import DataError
from readers import Dataset

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
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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


def cluster_words(grouping):
    """A dataset's groups in words, plural, for the captions of intervals that resample them: "authors",
    "near-duplicate groups", "groups of column 'thread'", each source's for a joined dataset; None: no groups."""
    if not grouping:
        return None
    words = lambda kind: f"groups of column {kind[7:]!r}" if kind.startswith("column:") else \
        {"author": "authors", "near-duplicate": "near-duplicate groups"}.get(kind, "groups")
    if "+" not in grouping or grouping.startswith("column:"):
        return words(grouping)
    return " and ".join(f"{words(kind)} ({source})" for source, kind in (part.split(":", 1) for part in grouping.split("+")))


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
