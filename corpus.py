"""Getting the datasets: an offline mirror, then a local cache, then a checked download; and
load_dataset, which turns a name ('davidson', 'hate_speech18', both joined by '+') or the path of a
CSV/JSONL file into a dataset ready to split, duplicates removed.

This module imports the file plumbing (files.py) and the readers (readers.py).
"""

import hashlib
import os
import urllib.error
from pathlib import Path

import files
from files import DataError
from readers import HATE18_META, TWO_LABELS, drop_duplicates, hate_speech18_files, join_sources, read_davidson, read_hate_speech18, read_table


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


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
        with hate_speech18_files(path) as read:
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
