"""Tests for tables.py: the cells of the report's tables, which show a value or mean ± std over seeds
and say why a score is undefined; markdown tables; JSON without NaN."""

import json

import metrics
from tables import cell, fmt_bytes, fmt_num, fmt_seconds, json_safe, markdown_table

nan = float("nan")


def test_cells_say_why_a_score_is_undefined():
    labels = [0, 0, 0, 1, 1]
    row = {"label_names": ["not toxic", "toxic"], **metrics.metrics(labels, [0] * 5, 2, [0.3] * 5)}  # never toxic
    assert cell([row], "precision", fmt_num) == "n/a (never predicts toxic)"
    assert cell([row], "recall", fmt_num) == "0.0000"
    row = {"label_names": ["not toxic", "toxic"], **metrics.metrics([0, 0], [0, 0], 2, [0.1, 0.2])}  # no toxic text
    assert cell([row], "recall", fmt_num) == "n/a (no toxic in the test set)"
    assert cell([row], "roc_auc", fmt_num) == "n/a (one class in the test set)"


def test_cells_show_mean_and_sample_std_over_seeds():
    rows = [{"label_names": ["ok", "toxic"], "precision": 0.8}, {"label_names": ["ok", "toxic"], "precision": 0.9}]
    assert cell(rows, "precision", fmt_num) == "0.8500 ± 0.0707"  # std with n - 1: sqrt(0.005)
    rows[1]["precision"] = nan
    assert cell(rows, "precision", fmt_num) == "0.8000 (n/a in 1 of 2 seeds: never predicts toxic)"
    same = [{"params_total": 1000}, {"params_total": 1000}]
    assert cell(same, "params_total", lambda v: f"{v:,}", spread=False) == "1,000"


def test_formats_tables_and_json_without_nan():
    assert (fmt_num(None), fmt_num(nan), fmt_num(0.5), fmt_num(0.5, ".3g")) == ("n/a", "n/a", "0.5000", "0.5")
    assert (fmt_bytes(246_416), fmt_bytes(438_000_000)) == ("246.4 kB", "438.0 MB")
    assert [fmt_seconds(s) for s in (None, 1.26, 600, 9000)] == ["n/a", "1.3 s", "10.0 min", "2.5 h"]
    assert markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"
    assert json.dumps(json_safe({"f1": nan, "cm": [[1, nan]], "pair": (0.5, nan)})) == '{"f1": null, "cm": [[1, null]], "pair": [0.5, null]}'
