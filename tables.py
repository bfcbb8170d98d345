"""
Numbers as the reports show them: one format per kind of number, a table cell that is a value or
mean ± std over seeds and says why a score is undefined, markdown tables, and JSON without NaN.

    cell(rows, "precision", fmt_num)    '0.8500 ± 0.0707', or 'n/a (never predicts toxic)'
    markdown_table(header, lines)       a GitHub markdown table
    json_safe(x)                        NaN written as null (the tables say why)

The comparison report, the tables beyond the test split, the int8 measurement and the model card
all write their numbers through these.
"""

import math

import metrics


def fmt_num(x, spec=".4f"):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def fmt_bytes(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def fmt_seconds(s):
    return "n/a" if s is None else f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def why_undefined(row, key):
    """Why a score is undefined (NaN), in words."""
    positive = row["label_names"][1] if len(row["label_names"]) > 1 else "1"
    return {"precision": f"never predicts {positive}", "recall": f"no {positive} in the test set",
            "f1": f"no {positive} in the test set, none predicted", "roc_auc": "one class in the test set"}.get(key, "undefined")


def cell(rows, key, show, spread=True):
    """One table cell: the value, or mean ± std over the rows (seeds), saying what is undefined."""
    values = [r.get(key) for r in rows]
    defined = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not defined:
        return f"n/a ({why_undefined(rows[0], key)})"
    if len(defined) == 1 or not spread and len(set(defined)) == 1:
        text = show(defined[0])
    else:
        mean, std = metrics.mean_std(defined)
        text = f"{show(mean)} ± {show(std)}"
    if len(defined) < len(values):
        text += f" (n/a in {len(values) - len(defined)} of {len(values)} seeds: {why_undefined(rows[0], key)})"
    return text


def markdown_table(header, lines):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(out + ["| " + " | ".join(str(x) for x in line) + " |" for line in lines])


def json_safe(x):
    """NaN is not JSON: write null (the tables say why)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x
