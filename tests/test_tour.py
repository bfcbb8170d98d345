"""The reading tour (docs/tour.md) runs: its python blocks are executed in order, in one namespace,
as a reader would paste them into a Python session at the repository root. So the tour cannot go
stale: a renamed function or a changed shape fails here."""

import re
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "tour.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(text: str) -> list[str]:
    return BLOCK.findall(text)


def test_blocks_are_found_as_a_reader_sees_them():
    text = "intro\n```python\nx = 1\n```\nmore\n```\nnot python\n```\n```python\ny = x + 1\n```\n"
    assert blocks(text) == ["x = 1\n", "y = x + 1\n"]


def test_every_stop_of_the_tour_has_code_to_run():
    text = TOUR.read_text(encoding="utf-8")
    stops = re.split(r"^## (?=\d+\. )", text, flags=re.M)[1:]  # "## 1. model.py: ...", not "## Where to go next"
    assert len(stops) >= 6
    for stop in (s.split("\n## ")[0] for s in stops):
        assert blocks(stop), f"tour stop {stop.splitlines()[0]!r} has no python block"


def test_the_tour_runs(tmp_path, monkeypatch):
    # A copy of the repository's top level by links, so that what the tour writes (runs/tour/...)
    # lands in a temporary folder and the relative paths it reads (tests/fixtures/...) still work.
    for entry in ROOT.iterdir():
        if entry.name not in ("runs", ".venv", ".git"):
            (tmp_path / entry.name).symlink_to(entry)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = {"__name__": "__tour__"}
    for i, code in enumerate(blocks(TOUR.read_text(encoding="utf-8")), 1):
        try:
            exec(compile(code, f"docs/tour.md block {i}", "exec"), namespace)
        except Exception:
            raise AssertionError(f"docs/tour.md block {i} failed:\n{code}\n{traceback.format_exc()}") from None
