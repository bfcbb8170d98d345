"""experiments/same_labels.py: two reports of the same runs compared label by label, by hand."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "same_labels.py"


def write(folder, name, probs, threshold, indices=None):
    folder.mkdir(exist_ok=True)
    d = {"name": name, "test_indices": indices or list(range(len(probs))), "probabilities": probs, "threshold": threshold}
    (folder / f"predictions-{name}.json").write_text(json.dumps(d))


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_counts_the_labels_each_report_gives_at_the_runs_threshold(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # text 2 crosses the threshold 0.5 between the reports; text 0 moves by 0.25 without crossing it
    write(a, "m", [[0.9, 0.1], [0.2, 0.8], [0.51, 0.49]], 0.5)
    write(b, "m", [[0.65, 0.35], [0.2, 0.8], [0.49, 0.51]], 0.5)
    # at the run's threshold 0.3 the text changes label (0.35 → 0.25), though the most probable class does not
    write(a, "t", [[0.65, 0.35]], 0.3)
    write(b, "t", [[0.75, 0.25]], 0.3)
    write(a, "only-in-a", [[0.5, 0.5]], None)
    out = run(a, b)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| m ")]
    assert rows == ["| m | 3 | 66.67% | 1 | 0.2500 |"]
    assert "| t | 1 | 0.00% | 1 | 0.1000 |" in out.stdout
    assert "only-in-a" not in out.stdout


def test_without_a_threshold_the_most_probable_class_decides(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    # two classes: at any threshold up to 0.45 both would be toxic; the most probable class differs
    write(a, "m", [[0.55, 0.45]], None)
    write(b, "m", [[0.45, 0.55]], None)
    # three classes: the most probable one
    write(a, "c", [[0.2, 0.3, 0.5]], None)
    write(b, "c", [[0.2, 0.5, 0.3]], None)
    out = run(a, b).stdout
    assert "| m | 1 | 0.00% | 1 | 0.1000 |" in out and "| c | 1 | 0.00% | 1 | 0.2000 |" in out


@pytest.mark.parametrize("case", ["other texts", "no common run", "not a folder"])
def test_refuses_in_one_line(tmp_path, case):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "m", [[0.9, 0.1]], 0.5)
    if case == "other texts":
        write(b, "m", [[0.9, 0.1]], 0.5, indices=[7])
    elif case == "no common run":
        write(b, "n", [[0.9, 0.1]], 0.5)
    else:
        b = tmp_path / "missing"
    out = run(a, b)
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1
    assert {"other texts": "test_indices differ", "no common run": "no predictions", "not a folder": "not a folder"}[case] in out.stderr
