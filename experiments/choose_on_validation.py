"""
A lever's setting chosen on validation alone: of the candidate runs given (the same model trained with
one thing changed: a perturbation rate, a learning rate, a schedule), the one whose macro-F1 on a label
is the best on its own validation split, at the temperature and threshold it chose there (what a user
of the run gets). The test splits, and the other dataset's texts, choose nothing.

    python experiments/choose_on_validation.py --label hate --table choices.md --lever perturb RUN...

Prints the run folder chosen on stdout, and appends a table of every candidate to --table. The runs
must share a split: their validation texts are then the same.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import metrics  # noqa: E402
import runs  # noqa: E402
from classifier import Classifier  # noqa: E402
from naming import EXECUTION_SETTINGS  # noqa: E402


def score(run_dir, label):
    """(macro-F1, precision, recall, texts, run info) of `label` on the run's validation split (whole:
    --max-val only limited what training watched), at the run's own threshold."""
    clf = Classifier.from_run(run_dir)
    if not clf.multilabel or label not in clf.labels:
        sys.exit(f"error: {run_dir}: answers {clf.labels}; expected a multi-label run with the label {label!r}")
    part, _, _ = runs.load_split_part(run_dir, clf.info, "validation")
    j = clf.labels.index(label)
    m = metrics.label_metrics(np.asarray(part.labels)[:, j], clf.predict_proba(part.texts)[:, j], clf.thresholds[label])
    return m["macro_f1"], m["precision"], m["recall"], len(part), clf.info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("runs", nargs="+", help="the candidate run folders (the first: the baseline)")
    p.add_argument("--label", default="hate", help="the label whose validation macro-F1 chooses")
    p.add_argument("--lever", default="lever", help="what the candidates vary, for the table")
    p.add_argument("--table", help="a markdown file to append the table of candidates to")
    a = p.parse_args(argv)
    rows, shas = [], set()
    for run_dir in a.runs:
        f1, precision, recall, n, info = score(run_dir, a.label)
        shas.add(info["split_sha256"])
        rows.append((run_dir, f1, precision, recall, info))
    if len(shas) > 1:
        sys.exit(f"error: {', '.join(a.runs)}: trained on {len(shas)} different splits; expected one")
    best = max(rows, key=lambda r: r[1])  # the first of equals: the baseline wins a tie
    base = rows[0][4].settings
    lines = [f"{a.lever}, chosen on {a.label} macro-F1 of the validation split ({n:,} "
             f"texts) — {Path(a.runs[0]).parent.name}:", "",
             f"| run | differs from the baseline | validation {a.label} macro-F1 | precision | recall | chosen |",
             "| --- | --- | --- | --- | --- | --- |"]
    for run_dir, f1, precision, recall, info in rows:
        differs = ", ".join(f"{k} {v}" for k, v in info.settings.items()
                            if base.get(k) != v and k not in EXECUTION_SETTINGS) or "(the baseline)"
        lines.append(f"| {Path(run_dir).name} | {differs} | {f1:.4f} | {precision:.3f} | {recall:.3f} | "
                     f"{'**yes**' if run_dir == best[0] else ''} |")
    text = "\n".join(lines) + "\n\n"
    print(text, file=sys.stderr, end="")
    if a.table:
        with open(a.table, "a", encoding="utf-8") as f:
            f.write(text)
    print(best[0])


if __name__ == "__main__":
    main()
