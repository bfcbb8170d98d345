"""
behaviour.py and suites/behaviour.toml: the suite renders, is large and varied enough, is the same on
every load; scoring separates an oracle from constant and case-sensitive models; broken suite
files are refused with the file and template named.
"""

import re
import tomllib
from collections import Counter

import numpy as np
import pytest

import behaviour as B

CASES = B.load_suite()
FUNCS = B.functionalities(CASES)
NEITHER = [name for name, f in FUNCS.items() if f["kind"] == "MFT" and f["toxic"] == 0]  # neutral, positive, counter-speech...
HATEFUL = [name for name, f in FUNCS.items() if f["kind"] == "MFT" and f["hate"] == 1]


def constant(value):
    return lambda texts: {label: np.full(len(texts), value) for label in B.LABELS}


def oracle(cases):
    expected = {c.text: c for c in cases if c.kind == "MFT"}
    # Texts that are not MFT cases (perturbed INV/DIR texts) get 0.5: the oracle is only judged on MFTs.
    return lambda texts: {label: np.array([getattr(expected[t], label) if t in expected else 0.5 for t in texts], dtype=float)
                          for label in B.LABELS}


def rate(result, name, label):
    return result["functionalities"][name]["labels"][label]["pass_rate"]


# -----------------------------------------------------------------------------
# The suite


def test_every_case_is_filled_and_labelled():
    for c in CASES:
        assert not re.search(r"[{}]", c.text), c
        assert c.text == c.text.strip() and "  " not in c.text, c
        assert c.kind in B.KINDS
        if c.kind == "MFT":
            assert c.toxic in (0, 1) and c.hate in (0, 1), c
            assert c.toxic >= c.hate, f"hate without toxic: {c}"
        else:
            assert c.original and c.original != c.text and c.group is not None, c
        if c.kind == "DIR":
            assert c.label in B.LABELS and c.direction in B.DIRECTIONS, c


def test_every_template_renders():
    raw = tomllib.loads(B.DEFAULT_SUITE.read_text(encoding="utf-8"))["functionality"]
    rendered = Counter(c.template for c in CASES if c.template.startswith(c.functionality + "#"))
    for name, spec in raw.items():
        templates = spec.get("templates")
        if isinstance(templates, str):
            templates = raw[templates]["templates"]
        for i in range(1, len(templates or []) + 1):
            assert rendered[f"{name}#{i}"] > 0, f"{name}#{i} gave no cases"


def test_size_and_coverage():
    assert len(FUNCS) >= 20
    assert len(CASES) >= 1000
    assert len({c.target for c in CASES if c.target}) >= 8
    assert {"MFT", "INV", "DIR"} == {f["kind"] for f in FUNCS.values()}
    # Every functionality about groups covers many of them, not one or two.
    for name in ("derogation_explicit", "dehumanisation", "threat_group", "neutral_identity", "counter_quote"):
        assert len({c.target for c in CASES if c.functionality == name}) >= 8, name


def test_loading_is_deterministic():
    assert B.load_suite() == CASES
    assert [c.text for c in B.load_suite(B.DEFAULT_SUITE)] == [c.text for c in CASES]


def test_spelling_variants_differ_from_the_plain_hate():
    plain = {c.text for c in CASES if c.functionality == "spelling_swap_chars"}
    for name in ("spelling_drop_char", "spelling_leet", "spelling_added_spaces", "spelling_removed_spaces"):
        texts = [c.text for c in CASES if c.functionality == name]
        assert texts and not set(texts) & plain
    assert "I h a t e Muslims." in {c.text for c in CASES}  # hate_verb has 4 values; "hate" is sampled for this template
    assert all(" " not in c.text for c in CASES if c.functionality == "spelling_removed_spaces")


def test_slurs_stay_in_their_functionality():
    slurs = {s for values in tomllib.loads(B.DEFAULT_SUITE.read_text(encoding="utf-8"))["slurs"].values() for s in values}
    for c in CASES:
        if c.functionality != "slur_attack" and c.kind == "MFT":
            assert not any(re.search(rf"\b{s}\b", c.text, re.I) for s in slurs), c


def test_individual_threats_are_toxic_but_not_hate():
    f = FUNCS["threat_individual"]
    assert (f["toxic"], f["hate"]) == (1, 0)
    assert (FUNCS["threat_group"]["toxic"], FUNCS["threat_group"]["hate"]) == (1, 1)


# -----------------------------------------------------------------------------
# Scoring


def test_constant_models_fail_what_they_should():
    ones = B.run_suite(CASES, constant(1.0))
    zeros = B.run_suite(CASES, constant(0.0))
    assert {"neutral_identity", "positive_identity", "reclaimed_identity", "counter_quote", "counter_direct"} <= set(NEITHER)
    for name in NEITHER:
        assert rate(ones, name, "toxic") == 0 and rate(ones, name, "hate") == 0, name
        assert rate(zeros, name, "toxic") == 1 and rate(zeros, name, "hate") == 1, name
    assert len(HATEFUL) >= 10
    for name in HATEFUL:
        assert rate(zeros, name, "toxic") == 0 and rate(zeros, name, "hate") == 0, name
        assert rate(ones, name, "hate") == 1, name
    # Toxic but not hate: "always hate" gets the toxic right and the hate wrong.
    assert rate(ones, "profanity_individual", "toxic") == 1 and rate(ones, "profanity_individual", "hate") == 0
    # A constant never changes its mind: every INV and DIR case passes.
    for name, f in FUNCS.items():
        if f["kind"] != "MFT":
            assert all(cell["pass_rate"] == 1 for cell in ones["functionalities"][name]["labels"].values()), name
    assert set(ones["summary"]["hate"]["below"]) == set(NEITHER) | {n for n, f in FUNCS.items() if f["hate"] == 0 and f["kind"] == "MFT"}
    assert ones["summary"]["hate"]["min_pass_rate"] == 0


def test_oracle_passes_every_mft():
    result = B.run_suite(CASES, oracle(CASES))
    for name, f in FUNCS.items():
        if f["kind"] == "MFT":
            assert rate(result, name, "toxic") == 1 and rate(result, name, "hate") == 1, name
    assert "derogation_explicit" not in result["failures"]


def test_failures_show_expected_and_got():
    result = B.run_suite(CASES, constant(0.2))
    shown = result["failures"]["derogation_explicit"]
    assert 0 < len(shown) <= 2 * B.MAX_EXAMPLES
    assert shown[0]["expected"] == 1 and shown[0]["got"] == 0.2 and shown[0]["label"] in B.LABELS
    assert shown[0]["text"] in {c.text for c in CASES if c.functionality == "derogation_explicit"}


def test_thresholds_and_missing_labels():
    only_hate = lambda texts: {"hate": np.full(len(texts), 0.7)}
    result = B.run_suite(CASES, only_hate)
    assert result["labels"] == ["hate"] and set(result["summary"]) == {"hate"}
    assert "toxic" not in result["functionalities"]["derogation_explicit"]["labels"]
    assert "dir_add_profanity" in result["functionalities"]  # a toxic DIR: listed, but nothing scored
    assert result["functionalities"]["dir_add_profanity"]["labels"] == {}
    assert rate(result, "derogation_explicit", "hate") == 1
    assert rate(B.run_suite(CASES, only_hate, thresholds={"hate": 0.8}), "derogation_explicit", "hate") == 0
    with pytest.raises(ValueError, match="expected at least one of toxic, hate"):
        B.run_suite(CASES, lambda texts: {"offensive": np.zeros(len(texts))})
    with pytest.raises(ValueError, match="expected one per text"):
        B.run_suite(CASES, lambda texts: {"toxic": np.zeros(3)})
    with pytest.raises(ValueError, match="not logits"):
        B.run_suite(CASES, lambda texts: {"toxic": np.full(len(texts), 3.0)})


def test_casing_invariance_catches_a_case_sensitive_model():
    shouty = lambda texts: {"toxic": np.array([float(t.isupper()) for t in texts])}  # toxic only when in capitals
    result = B.run_suite(CASES, shouty)
    casing = [c for c in CASES if c.functionality == "inv_casing"]
    upper = sum(c.perturbation == "upper" for c in casing)
    assert rate(result, "inv_casing", "toxic") == pytest.approx(1 - upper / len(casing))
    assert rate(result, "inv_casing", "toxic") < 1
    # The same model made case-blind passes.
    blind = lambda texts: shouty([t.upper() for t in texts])
    assert rate(B.run_suite(CASES, blind), "inv_casing", "toxic") == 1


def test_group_and_name_swaps_catch_a_biased_model():
    biased = lambda texts: {"hate": np.array([float("Muslim" in t or "Mohammed" in t) for t in texts])}
    result = B.run_suite(CASES, biased)
    assert 0 < rate(result, "inv_group_swap", "hate") < 1
    assert 0 < rate(result, "inv_name_swap", "hate") < 1
    fair = lambda texts: {"hate": np.array([float("vermin" in t) for t in texts])}
    result = B.run_suite(CASES, fair)
    assert rate(result, "inv_group_swap", "hate") == 1 and rate(result, "inv_name_swap", "hate") == 1


def test_directional_scoring_and_tolerance():
    changed = {c.text for c in CASES if c.kind == "DIR"}
    # Every changed text scores higher than its original: the "up" tests pass, the "down" tests fail.
    rises = lambda texts: {label: np.array([0.9 if t in changed else 0.1 for t in texts]) for label in B.LABELS}
    result = B.run_suite(CASES, rises)
    for name, f in FUNCS.items():
        if f["kind"] == "DIR":
            want = 1 if f["direction"] == "up" else 0
            assert rate(result, name, f["label"]) == want, name
            assert list(result["functionalities"][name]["labels"]) == [f["label"]]

    def pair(direction, p0, p1):
        case = B.Case("b", "d", "DIR", None, None, None, "d#1", group=0, original="a", direction=direction, label="hate")
        probs = lambda texts: {"hate": np.array([{"a": p0, "b": p1}[t] for t in texts])}
        return rate(B.run_suite([case], probs), "d", "hate")

    tol = B.DIR_TOLERANCE
    assert pair("up", 0.5, 0.5 - tol + 0.01) == 1 and pair("up", 0.5, 0.5 - tol - 0.01) == 0
    assert pair("down", 0.5, 0.5 + tol - 0.01) == 1 and pair("down", 0.5, 0.5 + tol + 0.01) == 0


def test_markdown_has_one_row_per_functionality():
    result = B.run_suite(CASES, constant(1.0))
    md = B.format_markdown(result)
    table = md.split("\n\n")[0].splitlines()
    assert table[0].startswith("| functionality | kind | cases | toxic | hate |")
    rows = table[2:]
    assert [r.split("|")[1].strip() for r in rows] == list(FUNCS)
    assert "| neutral_identity | MFT | " in md and "0.00" in md and "mean pass rate" in md


# -----------------------------------------------------------------------------
# Broken suite files

HEADER = """
[[groups]]
id = "g"
group = "goblins"
member = "a goblin"

[fillers]
adj = ["awful"]
"""


@pytest.mark.parametrize("body, message", [
    ('toxic = 1\nhate = 1\ntemplates = ["{Group} are {nasty}."]', r"template bad#1: unknown placeholder \{nasty\}"),
    ('toxic = 1\ntemplates = ["{Group} are {adj}."]', r"template bad#1: no expected 'hate'"),
    ('toxic = 1\nhate = 2\ntemplates = ["{Group} are {adj}."]', r"template bad#1: hate = 2 .*expected hate = 0 or 1"),
    ('toxic = 0\nhate = 1\ntemplates = ["{Group} are {adj}."]', r"template bad#1: hate = 1 with toxic = 0"),
    ('toxic = 1\nhate = 1\ntemplates = ["You {slur}."]', r"template bad#1: \{slur\} outside the slur functionality"),
    ('toxic = 1\nhate = 1\ntemplates = ["{Group} are {adj."]', r"template bad#1: stray brace"),
])
def test_broken_template_is_named(tmp_path, body, message):
    path = tmp_path / "broken.toml"
    path.write_text(HEADER + f'\n[functionality.bad]\nkind = "MFT"\ndescription = "d"\n{body}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=message) as e:
        B.load_suite(path)
    assert str(e.value).startswith(f"{path}: ")


def test_broken_functionality_is_named(tmp_path):
    path = tmp_path / "broken.toml"
    ok = '[functionality.ok]\nkind = "MFT"\ndescription = "d"\ntoxic = 0\nhate = 0\ntemplates = ["{Group} exist."]\n'
    path.write_text(HEADER + ok, encoding="utf-8")
    assert [c.text for c in B.load_suite(path)] == ["Goblins exist."]
    for extra, message in [
        ('[functionality.inv]\nkind = "INV"\ndescription = "d"\nsource = ["nope"]\nperturb = "lower"', "source 'nope' is not an MFT"),
        ('[functionality.dir]\nkind = "DIR"\ndescription = "d"\nlabel = "hate"\ndirection = "sideways"\nsource = ["ok"]\nappend = ["x"]',
         "direction = 'sideways'"),
        ('[functionality.ok2]\nkind = "MFT"\ndescription = "d"\ntoxix = 1\ntoxic = 1\nhate = 0\ntemplates = ["x"]', "unknown field 'toxix'"),
    ]:
        path.write_text(HEADER + ok + extra + "\n", encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            B.load_suite(path)
    path.write_text("not = [valid", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid TOML"):
        B.load_suite(path)
