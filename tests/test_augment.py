"""
augment.py and suites/augment.toml: the training templates render, are labelled by the rules (hate is
toxic), are the same on every load, are the right size and mix, and stay apart from the test suite
(suites/behaviour.toml): no text of the suite, no sentence frame of it, no run of 4 literal words of
it, no slurs. Broken augmentation files are refused with the file and template named.
"""

import re
import tomllib
from collections import Counter

import numpy as np
import pytest

import augment as A
import behaviour as B
import templates as T

EXAMPLES = A.augment_examples()
AUGMENT = tomllib.loads(A.DEFAULT_AUGMENT.read_text(encoding="utf-8"))
SUITE = tomllib.loads(B.DEFAULT_SUITE.read_text(encoding="utf-8"))
RUN = 4  # words in a row that may not appear in both files


def words(text: str) -> tuple[str, ...]:
    """A template's frame: its text with the {placeholders} removed, lower case, punctuation stripped."""
    return tuple(re.sub(r"[^\w\s]", "", T.PLACEHOLDER.sub(" ", text)).lower().split())


def augment_templates() -> list[str]:
    return [t["text"] if isinstance(t, dict) else t for spec in AUGMENT["phenomenon"].values() for t in spec["templates"]]


def suite_templates() -> list[str]:
    """Every literal sentence of the suite: MFT templates, both halves of DIR pairs, appended sentences."""
    out = []
    for spec in SUITE["functionality"].values():
        templates = spec.get("templates", [])
        for t in [] if isinstance(templates, str) else templates:  # a str names another functionality's list
            t = t["text"] if isinstance(t, dict) else t
            out += t if isinstance(t, list) else [t]
        out += spec.get("append", [])
    return out


def runs(frame: tuple[str, ...]) -> set[tuple[str, ...]]:
    return {frame[i:i + RUN] for i in range(len(frame) - RUN + 1)}


def normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", "", text).lower().split())


# -----------------------------------------------------------------------------
# The examples


def test_every_example_is_filled_and_labelled():
    pairs = A.load_augment()
    assert [(e.text, [e.toxic, e.hate]) for e in EXAMPLES] == pairs
    for text, labels in pairs:
        assert isinstance(text, str) and not re.search(r"[{}]", text), text
        assert text == text.strip() and "  " not in text, text
        assert len(labels) == 2 and set(labels) <= {0, 1}, (text, labels)
        assert labels[0] >= labels[1], f"hate without toxic: {text}"


def test_every_template_renders():
    rendered = Counter(e.template for e in EXAMPLES)
    for name, spec in AUGMENT["phenomenon"].items():
        for i in range(1, len(spec["templates"]) + 1):
            assert rendered[f"{name}#{i}"] > 0, f"{name}#{i} gave no texts"


def test_loading_is_deterministic_and_seeded():
    assert A.load_augment() == A.load_augment(A.DEFAULT_AUGMENT, seed=0)
    other = A.load_augment(seed=1)
    assert other != A.load_augment() and abs(len(other) - len(EXAMPLES)) < 0.05 * len(EXAMPLES)


def test_size_and_mix():
    texts = [e.text for e in EXAMPLES]
    assert 1500 <= len(texts) <= 3000 and len(set(texts)) == len(texts)
    mix = Counter((e.toxic, e.hate) for e in EXAMPLES)
    assert set(mix) == {(0, 0), (1, 0), (1, 1)}
    for combo, count in mix.items():
        assert 0.2 <= count / len(texts) <= 0.5, (combo, count)
    assert mix[(0, 0)] + mix[(1, 0)] > mix[(1, 1)]  # hard negatives outnumber the hate
    assert len({e.phenomenon for e in EXAMPLES}) >= 20
    for name in ("negated_hate", "counter_quote", "counter_direct", "reclaimed_identity", "neutral_identity", "positive_identity"):
        assert {(e.toxic, e.hate) for e in EXAMPLES if e.phenomenon == name} == {(0, 0)}, name
    for name in ("profanity_positive", "abuse_object", "threat_individual", "insult_individual", "counter_profane"):
        assert {(e.toxic, e.hate) for e in EXAMPLES if e.phenomenon == name} == {(1, 0)}, name


def test_spelling_variants_are_misspelt():
    spelt = [e.text for e in EXAMPLES if e.phenomenon == "hate_spelling"]
    assert len(spelt) >= 50 and all(e.hate == 1 for e in EXAMPLES if e.phenomenon == "hate_spelling")
    plain = set(AUGMENT["fillers"]["hate_adj"] + AUGMENT["fillers"]["dehumanising_noun"] + AUGMENT["fillers"]["hate_verb"])
    spaced = [t for t in spelt if " " in t]  # remove_spaces runs the words together but leaves them as they are
    assert not any(re.search(rf"\b{re.escape(w)}\b", t) for t in spaced for w in plain - {"hate"})
    assert any(" " not in t for t in spelt) and any(re.search(r"[0-9*]", t) for t in spelt)


# -----------------------------------------------------------------------------
# Apart from the test suite


def test_no_text_of_the_suite():
    suite = {normal(t) for c in B.load_suite() for t in (c.text, c.original) if t}
    shared = [e.text for e in EXAMPLES if normal(e.text) in suite]
    assert not shared, shared[:5]


def test_no_sentence_frame_of_the_suite():
    theirs = {words(t) for t in suite_templates()}
    assert len(theirs) > 50
    shared = [t for t in augment_templates() if words(t) in theirs]
    assert not shared, shared


def test_no_run_of_four_words_of_the_suite():
    theirs = set().union(*(runs(words(t)) for t in suite_templates()))
    shared = {" ".join(r): t for t in augment_templates() for r in runs(words(t)) & theirs}
    assert not shared, shared


def test_the_frame_checks_catch_a_copied_template():
    copied = "Saying \"{Group} are {dehumanising_noun}\" is bigotry, plain and simple."
    assert words(copied) in {words(t) for t in suite_templates()}
    assert runs(words("Some say it " + copied)) & set().union(*(runs(words(t)) for t in suite_templates()))


def test_no_slurs():
    slurs = {s for values in SUITE["slurs"].values() for s in values}
    found = [e.text for e in EXAMPLES for s in slurs if re.search(rf"\b{s}\b", e.text, re.I)]
    assert not found, found[:5]


# -----------------------------------------------------------------------------
# Broken files

GOOD = """
[[groups]]
id = "women"
group = "women"
member = "a woman"

[[groups]]
id = "refugees"
group = "refugees"
member = "a refugee"

[fillers]
insult = ["prick"]

[phenomenon.p]
toxic = 1
hate = 1
n = 3
templates = ["Fine {group}.", TEMPLATE]
"""


@pytest.mark.parametrize("template, message", [
    ('"What {unknown}?"', r"template p#2: unknown placeholder \{unknown\}"),
    ('"Stray } brace"', r"template p#2: stray brace"),
    ('"Only {identity_adj} ones"', r"template p#2: no group has all of \['identity_adj'\]"),
    ('{ text = "x {group}", groups = ["men"] }', r"template p#2: groups: no group 'men'"),
    ('{ text = "no group here", groups = ["women", "refugees"] }', r"template p#2: groups lists 2 groups for a text without"),
    ('""', r"template p#2: '' is not a text"),
])
def test_bad_templates_are_refused_with_file_and_template(tmp_path, template, message):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("TEMPLATE", template), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as e:
        A.load_augment(path)
    assert str(path) in str(e.value)


def test_a_misspelling_that_changes_nothing_is_refused(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('n = 3', 'n = 3\nperturb = ["leet"]\nperturb_fields = ["insult"]')
                    .replace('"Fine {group}.", TEMPLATE', '"You {insult}.", "Fine {group}."'), encoding="utf-8")
    with pytest.raises(ValueError, match=r"template p#2: no perturbation changes 'Fine women.'") as e:
        A.load_augment(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("change, message", [
    (("hate = 1", "hate = 1\ntoxic_ = 1"), r"phenomenon p: unknown field 'toxic_'"),
    (("toxic = 1", "toxic = 0"), r"phenomenon p: hate = 1 with toxic = 0"),
    (("n = 3", "n = 0"), r"phenomenon p: n = 0"),
    (("n = 3", 'n = 3\nperturb = ["upside_down"]'), r"phenomenon p: perturb = \['upside_down'\]"),
    (('insult = ["prick"]', 'insult = ["prick", "prick"]'), r"filler 'insult': a value appears twice"),
    (('[fillers]', '[filers]'), r"unknown top-level table 'filers'"),
])
def test_bad_files_are_refused_with_the_file_named(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("TEMPLATE", '"Fine."').replace(*change), encoding="utf-8")
    with pytest.raises(ValueError, match=message) as e:
        A.load_augment(path)
    assert str(path) in str(e.value)


def test_same_text_with_two_labels_is_refused(tmp_path):
    text = GOOD.replace("TEMPLATE", '"Fine."') + '\n[phenomenon.q]\ntoxic = 0\nhate = 0\nn = 1\ntemplates = ["Fine."]\n'
    path = tmp_path / "clash.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"template q#1: 'Fine.' is also rendered by p#2 with other labels"):
        A.load_augment(path)
    with pytest.raises(FileNotFoundError, match="no such augmentation file"):
        A.load_augment(tmp_path / "missing.toml")


def test_real_texts_are_misspelt_at_the_rate_and_keep_their_labels():
    # "w17" has a digit: no word noise touches it, so each copy still says which text it was made from.
    texts = [f"w{i} those people are vermin and nothing else" for i in range(200)]
    labels = [[1, i % 2] for i in range(200)]
    copies, copy_labels = A.perturbed_copies(texts, labels, 0.25, seed=3)
    assert 45 <= len(copies) <= 50  # a quarter drawn; a copy the noise left unchanged is dropped
    assert all(t not in texts for t in copies)
    for t, y in zip(copies, copy_labels, strict=True):
        assert y == labels[int(re.match(r"[wW](\d+)", t).group(1))]  # the labels of the text it was made from
    assert (copies, copy_labels) == A.perturbed_copies(texts, labels, 0.25, seed=3)  # deterministic
    assert copies != A.perturbed_copies(texts, labels, 0.25, seed=4)[0]
    assert A.perturbed_copies(texts, labels, 0.0) == ([], [])
    rng = np.random.default_rng(0)
    seen = {A.misspell("you are vermin", rng) for _ in range(300)}
    assert {"YOU ARE VERMIN", "youarevermin", "you are v3rm1n", "you are v e r m i n"} <= seen
    # A word-level noise changes one word of three (a quarter, at least one).
    worded = [t.split(" ") for t in seen if len(t.split(" ")) == 3 and t.lower() != "you are vermin"]
    assert worded and all(sum(a != b for a, b in zip(w, ["you", "are", "vermin"], strict=True)) == 1 for w in worded)
