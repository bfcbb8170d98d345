"""
Labelling a file: a .csv or .jsonl file in, the same rows out with a label, a score and every
label's probability, streamed a window of rows at a time, so that memory stays the same however
long the file is.

    label_file(clf, "comments.csv", "labelled.csv", text_column="body")   # eval.py predict --input

Read top to bottom:
  1. reading: rows one at a time, checked as the training reader checks them (one header with each
     column once, every row as many fields as the header, an object per JSON line, fields of any
     length); a first pass finds every such mistake before the first text is labelled;
  2. the columns added: label, score, p_<label>, or with a prefix where the file has such a column
     already, so that no input column is overwritten;
  3. labelling: a window of rows sorted by length for batching, labelled, and written back in input
     order to <output stem>.partial<suffix>, renamed to the output only when the last row is done.
     Stopped before (Ctrl-C, a full disk), it keeps the rows done so far under that partial name,
     or nothing, and says which.
"""

import codecs
import csv
import io
import json
import os
import sys
from pathlib import Path

import classifier
import files
from files import DataError

WINDOW_ROWS = 1024  # rows labelled at a time: sorted by length within, written back in input order
WINDOW_CHARS = 4_000_000  # and at most this many characters of text, whatever the rows hold
FIELD_LIMIT = 2**31 - 1  # csv's own limit is 131,072 characters a field; a long comment is cut to max_length anyway

# -----------------------------------------------------------------------------
# 1. Reading, row by row


class Replaced:
    """How many byte sequences that are not UTF-8 the reader replaced by U+FFFD (a codecs error handler)."""

    count = 0

    @classmethod
    def handler(cls, error):
        cls.count += 1
        return "\ufffd", error.end


codecs.register_error("nanobert-count", Replaced.handler)


def open_text(path):
    # utf-8-sig drops the byte-order mark spreadsheet programs write; newline="" hands line ends to csv.
    return open(path, encoding="utf-8-sig", errors="nanobert-count", newline="")


class Table:
    """A .csv or .jsonl file read one row at a time, as (line number, row as a dict)."""

    def __init__(self, path, text_column):
        self.path, self.text_column = Path(path), text_column
        self.jsonl = self.path.suffix.lower() == ".jsonl"
        if self.path.suffix.lower() not in (".csv", ".jsonl"):
            raise ValueError(f"--input {path}: expected a .csv or .jsonl file")
        if not self.path.is_file():
            raise FileNotFoundError(f"--input {path}: file not found")
        self.columns = []

    def rows(self):
        yield from self.jsonl_rows() if self.jsonl else self.csv_rows()

    def csv_rows(self):
        csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
        with open_text(self.path) as f:
            reader = csv.reader(f)
            try:
                header = next(reader, [])
                doubled = sorted({c for c in header if header.count(c) > 1})
                if doubled:
                    raise DataError(f"--input {self.path}: column(s) {doubled} appear more than once in the header; "
                                    "expected each column once")
                self.columns = header
                for row in reader:
                    if not row:
                        continue  # a blank line
                    if len(row) != len(header):
                        raise DataError(f"--input {self.path} line {reader.line_num}: {len(row)} fields, expected "
                                        f"{len(header)} ({header})")
                    yield reader.line_num, dict(zip(header, row, strict=True))
            except csv.Error as e:  # a NUL byte, a quote left open at the end
                raise DataError(f"--input {self.path} line {reader.line_num}: {e}; expected well-formed CSV") from None

    def jsonl_rows(self):
        seen = dict.fromkeys(self.columns)
        with open_text(self.path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"--input {self.path} line {number}: not valid JSON ({e.msg}); expected an object "
                                    "per line") from None
                if not isinstance(row, dict):
                    raise DataError(f"--input {self.path} line {number}: a JSON {type(row).__name__}; expected an object")
                seen.update(dict.fromkeys(row))
                yield number, row
        self.columns = list(seen)  # every key of every row, in the order met

    def check(self) -> int:
        """Read the whole file once, refusing what cannot be labelled as it is; returns the number of rows."""
        Replaced.count = 0
        count = sum(1 for _ in self.rows())
        if Replaced.count:  # a file in another encoding (latin-1, say): labelled all the same, but say so
            print(f"note: --input {self.path}: {Replaced.count} byte sequence(s) that are not UTF-8 replaced by U+FFFD",
                  file=sys.stderr)
        if self.text_column not in self.columns:
            raise ValueError(f"--text-column {self.text_column!r}: not a column of {self.path}; expected one of {self.columns}")
        return count


# -----------------------------------------------------------------------------
# 2. The columns added


def added_columns(labels, columns, unfinished=None):
    """(prefix, names) of the columns the labels go in: label, score, p_<label> (and note, for a model
    of an unfinished run), each with the first prefix ("", "predicted_", "predicted2_", ...) that no
    input column has, so that nothing of the input is overwritten."""
    names = ["label", "score"] + [f"p_{name}" for name in labels] + (["note"] if unfinished else [])
    taken, n = set(columns), 1
    prefix = ""
    while any(prefix + name in taken for name in names):
        n += 1
        prefix = "predicted_" if n == 2 else f"predicted{n - 1}_"
    return prefix, [prefix + name for name in names]


# -----------------------------------------------------------------------------
# 3. Labelling, window by window


def windows(rows):
    """Lists of (line, row) of at most WINDOW_ROWS rows and about WINDOW_CHARS characters."""
    window, chars = [], 0
    for item in rows:
        window.append(item)
        chars += sum(len(v) for v in item[1].values() if isinstance(v, str))
        if len(window) == WINDOW_ROWS or chars >= WINDOW_CHARS:
            yield window
            window, chars = [], 0
    if window:
        yield window


def partial_path(output) -> Path:
    output = Path(output)
    return output.with_name(f"{output.stem}.partial{output.suffix}")


def label_window(clf, window, text_column, added):
    """The rows of one window with their added columns; the texts labelled shortest first (batches of
    like lengths pad little), the rows kept in input order. Returns (rows, labelled, (cut, unknown))."""
    texts = [row.get(text_column) for _, row in window]
    keep = [i for i, t in enumerate(texts) if isinstance(t, str) and not classifier.is_blank(t)]
    order = sorted(keep, key=lambda i: len(texts[i]))
    probs = clf.predict_proba([texts[i] for i in order])
    out = [dict(row) for _, row in window]
    for i, p in zip(order, probs.tolist(), strict=True):
        label, score = clf.verdict(p)
        values = [label, round(score, 6)] + [round(v, 6) for v in p] + ([clf.unfinished] if clf.unfinished else [])
        out[i].update(zip(added, values, strict=True))
    return out, len(keep), clf.note_counts([texts[i] for i in keep])


def encode_rows(rows, fields, jsonl, header=False):
    """The bytes of rows in the output's format (CSV: in the order of fields, with the header first if asked)."""
    if jsonl:
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


class Stopped(ValueError):
    """Labelling that stopped before the last row; the message says what was kept."""


def label_file(clf, input_path, output, *, text_column="text", progress=True):
    """Label every row of input_path into output: the rows as they were, plus the added columns; blank
    texts stay unlabelled and are counted. Prints what it did, and its notes, on stderr."""
    output = Path(output)
    if output.suffix.lower() not in (".csv", ".jsonl"):
        raise ValueError(f"--output {output}: expected a .csv or .jsonl file")
    partial = partial_path(output)
    for path, what in ((output, f"--output {output}: the same file as --input"),
                       (partial, f"--output {output}: its partial file {partial} would be --input")):
        if path.resolve() == Path(input_path).resolve():
            raise ValueError(f"{what}; expected another file")
    files.check_writable(output.parent, "--output")
    table = Table(input_path, text_column)
    jsonl_out = output.suffix.lower() == ".jsonl"
    out, written, done, labelled, counts, bar = None, 0, 0, 0, [0, 0], files.NoBar()
    try:
        total = table.check()  # every mistake of the file, before the first text is labelled
        prefix, added = added_columns(clf.labels, table.columns, clf.unfinished)
        if prefix:
            clash = [c for c in table.columns if c in {a[len(prefix):] for a in added}]
            print(f"note: --input {input_path} has column(s) {clash} already: the predictions go in "
                  f"{', '.join(added[:2])}, {prefix}p_* (no input column is overwritten)", file=sys.stderr)
        if clf.unfinished:
            print(f"note: the model is {clf.unfinished}: column {added[-1]} says so in every labelled row", file=sys.stderr)
        fields = table.columns + added
        bar = files.progress_bar(total, "labelling", progress, unit="rows")
        out = open(partial, "wb")
        out.write(b"" if jsonl_out else encode_rows([], fields, False, header=True))
        written = out.tell()  # bytes of whole windows: what is kept if labelling stops
        for window in windows(table.rows()):
            rows, n, (cut, unknown) = label_window(clf, window, text_column, added)
            out.write(encode_rows(rows, fields, jsonl_out))
            out.flush()
            written, done, labelled = out.tell(), done + len(rows), labelled + n
            counts = [counts[0] + cut, counts[1] + unknown]
            bar.update(len(rows))
        bar.close()
        out.close()
        os.replace(partial, output)
    except BaseException as e:
        bar.close()
        raise stopped(e, out, partial, written, done, output) from None
    for note in clf.notes([], counts=counts):
        print(f"note: {note}", file=sys.stderr)
    blank = total - labelled
    print(f"labelled {labelled} of {total} rows into {output}" + (f"; {blank} blank row(s) left without a label" if blank else ""),
          file=sys.stderr)


def stopped(e, out, partial, written, done, output):
    """What to raise when labelling stops before the end (Ctrl-C, a full disk, a file that changed): the
    partial file cut back to its whole windows (half a window is no row at all), or removed when no row
    was done, and one line that says which, and that the output was not written. A mistake found by the
    first pass, before anything was written, is raised as it is."""
    if out is None:
        if isinstance(e, KeyboardInterrupt):
            return KeyboardInterrupt(f"no row was labelled; {output} was not written")
        return e
    try:
        if done:
            out.truncate(written)
        out.close()
        if not done:
            partial.unlink(missing_ok=True)
    except (OSError, ValueError):  # ValueError: the file was closed already
        pass  # what the partial file holds is whole, or it is gone: the message says what is known
    kept = f"the {done} row(s) labelled so far are in {partial}" if done and partial.exists() else "no row was kept"
    left = f"{output} was left as it was" if output.exists() else f"{output} was not written"
    if isinstance(e, KeyboardInterrupt):
        return KeyboardInterrupt(f"{kept}; {left}")
    if isinstance(e, OSError):
        return Stopped(f"{files.os_error_message(files.write_error(e, partial) or e)}; {kept}; {left}")
    if isinstance(e, ValueError):
        return Stopped(f"{e}; {kept}; {left}")
    return e
