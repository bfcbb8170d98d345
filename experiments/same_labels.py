"""
Do two reports of the same runs give the same labels? For every run scored in both report folders
(its predictions-<name>.json in each, written by `eval.py report`), the share of test texts given the
same label, each report deciding at the run's threshold, and the largest difference in a probability.
What it is for: one set of models scored two ways, in bf16 and in fp32 (`--precision`), or on two
machines.

    python experiments/same_labels.py runs/precision-bf16-report runs/precision-report

Prints a markdown table on stdout. The two reports must have scored the same test texts. A report of
two-question runs keeps each label's predictions in a folder of its own (report/toxic, report/hate):
compare those.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import metrics  # noqa: E402
from tables import markdown_table  # noqa: E402


def read(path):
    """(test indices, probabilities (N, C), threshold or None) of one predictions file."""
    d = json.loads(path.read_text())
    if not d["test_indices"]:
        raise SystemExit(f"{path}: no test texts (expected the predictions of a report)")
    return d["test_indices"], np.asarray(d["probabilities"], dtype=np.float64), d.get("threshold")


def compare(a_path, b_path):
    """(texts, texts given the same label, largest probability difference) of one run in two reports."""
    ia, pa, ta = read(a_path)
    ib, pb, tb = read(b_path)
    if ia != ib:
        raise SystemExit(f"{a_path} and {b_path}: not the same test texts (test_indices differ)")
    same, max_diff = metrics.same_decisions(pa, ta, pb, tb)
    return len(ia), int(same.sum()), max_diff


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    p.add_argument("a", type=Path, help="a report folder (eval.py report --out)")
    p.add_argument("b", type=Path, help="another report folder of the same runs")
    args = p.parse_args(argv)
    for d in (args.a, args.b):
        if not d.is_dir():
            raise SystemExit(f"{d}: not a folder (expected a report folder written by eval.py report)")
    names = sorted(f.name for f in args.a.glob("predictions-*.json") if (args.b / f.name).is_file())
    if not names:
        raise SystemExit(f"{args.a} and {args.b}: no predictions-<run>.json in both (expected two reports of the same runs)")
    rows = []
    for name in names:
        n, same, diff = compare(args.a / name, args.b / name)
        rows.append([name[len("predictions-"):-len(".json")], str(n), f"{same / n:.2%}", str(n - same), f"{diff:.4f}"])
    print(markdown_table(["run", "test texts", "same label", "labels changed", "largest probability difference"], rows))


if __name__ == "__main__":
    main()
