"""
Where the time of `eval.py predict --input` goes: the same labelling (labelling.label_file) with a
clock around each of its parts, in one process.

    python experiments/label_profile.py RUN FILE.csv [--text-column text] [--threads N]

The parts, each timed where the code does it (nothing is changed, only wrapped):
  start-up   importing torch and the project, loading the run (Classifier.from_run)
  check      the first pass over the file (labelling.Table.check: every row read and checked)
  read       reading the rows again, window by window (labelling.windows over Table.rows)
  tokenise   the texts to token ids (wordpiece.token_ids, inside batching.Loader)
  notes      counting cut and unknown-only texts (Classifier.note_counts, which tokenises again)
  batch      padding and masks (batching.Loader.collate)
  model      the forward passes and the softmax / sigmoid (classifier.predict_probs, less its batches)
  write      encoding and writing the output rows (labelling.encode_rows and the file writes)
What is left of the wall time (sorting, dicts of rows, Python's loop) is "other".
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

t_start = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import batching  # noqa: E402
import classifier  # noqa: E402
import labelling  # noqa: E402
import machine  # noqa: E402
import precision  # noqa: E402
import wordpiece  # noqa: E402

spent = {}


def clocked(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
    return wrapper


def clocked_generator(name, fn):
    """A generator function whose time between items (producing each one) is counted as `name`."""
    def wrapper(*args, **kwargs):
        it = fn(*args, **kwargs)
        while True:
            t = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
                return
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            yield item
    return wrapper


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("input")
    p.add_argument("--text-column", default="text")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precision.keep_freed_memory()  # as eval.py does
    clf = classifier.Classifier.from_run(args.run)
    startup = time.perf_counter() - t_start

    wordpiece_token_ids = wordpiece.token_ids
    batching.token_ids = clocked("tokenise", wordpiece_token_ids)  # the name batching.Loader calls
    batching.Loader.collate = clocked("batch", batching.Loader.collate)
    classifier.predict_probs = clocked("model+batch", classifier.predict_probs)
    clf.note_counts = clocked("notes", clf.note_counts)
    labelling.Table.check = clocked("check", labelling.Table.check)
    labelling.windows = clocked_generator("read", labelling.windows)
    labelling.encode_rows = clocked("write", labelling.encode_rows)

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        labelling.label_file(clf, args.input, Path(tmp) / "out.csv", text_column=args.text_column, progress=False)
        wall = time.perf_counter() - t
    spent["model"] = spent.pop("model+batch") - spent.get("batch", 0.0)
    rows = sum(1 for _ in labelling.Table(args.input, args.text_column).rows())
    print(f"{machine.describe()}; batch {clf.batch_size} texts, at most {classifier.BATCH_TOKENS} tokens; "
          f"computing in {precision.computed_in(clf.net, precision.choose('auto', torch.device('cpu'), config=clf.net.config))}")
    print(f"{rows} rows: {rows / (wall + startup):.0f} rows/s with start-up, {rows / wall:.0f} without")
    print(f"{'part':10} {'seconds':>8} {'share':>6}")
    print(f"{'start-up':10} {startup:8.2f} {startup / (wall + startup):6.1%}")
    for name in ("check", "read", "tokenise", "notes", "batch", "model", "write"):
        s = spent.get(name, 0.0)
        print(f"{name:10} {s:8.2f} {s / (wall + startup):6.1%}")
    other = wall - sum(spent.values())
    print(f"{'other':10} {other:8.2f} {other / (wall + startup):6.1%}")


if __name__ == "__main__":
    main()
