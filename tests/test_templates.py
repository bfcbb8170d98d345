"""
templates.py, the engine of the behaviour suite and the training templates: placeholders are found and
filled (capitals kept), the vocabulary is checked, sampling is deterministic and draws distinct
combinations, swept choices are taken in full for every sampled one, groups are bound by the fields a
template needs, and the perturbations change what they say they change. Broken files are refused with
the file named.
"""

import itertools

import pytest

import templates as T

VOCAB = T.read_vocab({
    "groups": [{"id": "women", "group": "women", "member": "a woman"},
               {"id": "muslims", "group": "Muslims", "member": "a Muslim", "identity_adj": "Muslim"},
               {"id": "jews", "group": "Jews", "member": "a Jewish person", "identity_adj": "Jewish"}],
    "fillers": {"name": ["Ann", "Bob", "Cem"], "insult": ["idiot", "clown"], "thing": ["pizza", "printer", "bus", "day"]},
    "slurs": {"jews": ["s1", "s2"]},
})


# -----------------------------------------------------------------------------
# Placeholders


def test_placeholders_and_fill_keep_capitals():
    assert T.placeholders("{Group} and {group}, {name}!") == ["Group", "group", "name"]
    assert T.bases(["{Group} and {group}", "{Name} {thing}"]) == ["group", "name", "thing"]
    text = T.fill("{Group} met {name}; {group} liked {Thing}.", {"group": "women", "name": "Ann", "thing": "pizza"})
    assert text == "Women met Ann; women liked Pizza."


# -----------------------------------------------------------------------------
# Sampling and rendering


def test_sample_is_deterministic_distinct_and_in_order():
    sizes = [3, 4, 5]
    picks = T.sample(sizes, 7, "t#1")
    assert picks == T.sample(sizes, 7, "t#1") and picks != T.sample(sizes, 7, "t#2")
    assert len(set(picks)) == 7 and picks == sorted(picks)
    assert all(0 <= j < size for pick in picks for j, size in zip(pick, sizes, strict=True))
    # Asking for more than there are gives every combination once: the numbering covers the product exactly.
    assert T.sample(sizes, 1000, "t#1") == list(itertools.product(*map(range, sizes)))
    assert T.sample([], 3, "t#1") == [()]  # no choices: one filling


def test_render_samples_n_distinct_fillings():
    texts = ("{Member} called {name} a {insult}.",)
    got = [T.fill(texts[0], v) for v, _ in T.render("t#1", texts, None, VOCAB, 5, "0:t#1")]
    assert len(got) == len(set(got)) == 5
    assert got == [T.fill(texts[0], v) for v, _ in T.render("t#1", texts, None, VOCAB, 5, "0:t#1")]
    assert got != [T.fill(texts[0], v) for v, _ in T.render("t#1", texts, None, VOCAB, 5, "1:t#1")]
    everything = list(T.render("t#1", texts, None, VOCAB, 1000, "0:t#1"))
    assert len(everything) == 3 * 3 * 2  # groups x names x insults


def test_swept_choices_are_taken_in_full_for_every_sample():
    texts = ("{Group} and {name} broke the {thing} again, the {insult}.",)
    out = list(T.render("t#1", texts, None, VOCAB, 2, "t#1", sweep=("name", "group")))
    assert len(out) == 2 * 3 * 3  # 2 sampled (thing, insult) combinations x every name x every group
    sampled = {(v["thing"], v["insult"]) for v, _ in out}
    assert len(sampled) == 2
    for combo in sampled:
        swept = [(v["name"], g["id"]) for v, g in out if (v["thing"], v["insult"]) == combo]
        assert swept == list(itertools.product(["Ann", "Bob", "Cem"], ["women", "muslims", "jews"]))  # name outer, group inner


def test_groups_are_bound_by_the_fields_a_template_needs():
    adj = [g["id"] for _, g in T.render("t#1", ("The {identity_adj} ones.",), None, VOCAB, 9, "k")]
    assert adj == ["muslims", "jews"]  # women have no identity_adj
    slurs = [(v["slur"], g["id"]) for v, g in T.render("t#1", ("You {slur}.",), None, VOCAB, 9, "k")]
    assert slurs == [("s1", "jews"), ("s2", "jews")]
    only = [g["id"] for _, g in T.render("t#1", ("{Group} exist.",), ["jews", "women"], VOCAB, 9, "k")]
    assert only == ["jews", "women"]  # restricted, in the order given
    (values, g), = T.render("t#1", ("Nothing here.",), ["women"], VOCAB, 9, "k")  # a text about one group
    assert g["id"] == "women" and T.fill("Nothing here.", values) == "Nothing here."
    assert [g for _, g in T.render("t#1", ("Nothing here.",), None, VOCAB, 9, "k")] == [None]


@pytest.mark.parametrize("texts, only, message", [
    (("What {unknown}?",), None, r"template t#1: unknown placeholder \{unknown\}"),
    (("Only {adj} ones",), None, r"template t#1: unknown placeholder \{adj\}"),  # the field is identity_adj
    (("Stray } brace",), None, r"template t#1: stray brace"),
    (("{Group} and {identity_adj}",), ["women"], r"template t#1: no group has all of \['group', 'identity_adj'\]"),
    (("{Group}",), ["men"], r"template t#1: groups: no group 'men'"),
    (("No group",), ["women", "jews"], r"template t#1: groups lists 2 groups for a text without a group placeholder"),
])
def test_bad_templates_are_refused(texts, only, message):
    with pytest.raises(T.TemplateError, match=message):
        list(T.render("t#1", texts, only, VOCAB, 2, "k"))


@pytest.mark.parametrize("entry, pair, message", [
    ({"text": "x", "group": ["women"]}, False, r"unknown field 'group'"),
    ({"text": "x", "groups": []}, False, r"groups is \[\]; expected a non-empty list"),
    (["a", "b"], False, r"is not a text"),
    ("a", True, r"is not a pair"),
])
def test_bad_entries_are_refused(entry, pair, message):
    assert T.parse_entry("t#1", {"text": "x", "groups": ["women"]}) == (("x",), ["women"])
    assert T.parse_entry("t#1", ["a", "b"], pair=True) == (("a", "b"), None)
    with pytest.raises(T.TemplateError, match=message):
        T.parse_entry("t#1", entry, pair=pair)


# -----------------------------------------------------------------------------
# Perturbations


def test_word_perturbations():
    assert T.swap_chars("vermin") == "vemrin" and T.drop_char("vermin") == "vermn" and T.leet("vermin") == "v3rm1n"
    assert T.add_spaces("hate") == "h a t e"
    assert T.mask_vowel("revolting") == "r*volting" and T.stretch_vowel("vermin") == "vermiiin"
    assert T.perturb_filler(T.leet, "an evil rat") == "an 3v1l r4t"  # words under 3 letters are left alone
    for name, fn in T.WORD_PERTURBATIONS.items():
        assert fn.__name__ == name


def test_text_perturbations():
    assert T.remove_spaces("a b c") == "abc" and T.strip_punct("Hi, you!") == "Hi you" and T.exclaim("Go.") == "Go!!!"
    assert T.add_emoji("hello") == T.add_emoji("hello") and T.add_emoji("hello")[-1] in T.EMOJI
    assert T.TEXT_PERTURBATIONS["upper"]("ab") == "AB"
    assert not set(T.WORD_PERTURBATIONS) & set(T.TEXT_PERTURBATIONS)


def test_perturb_changes_only_its_fields_or_the_whole_text():
    text, values = "{Group} are {insult}s, {name}.", {"group": "women", "insult": "idiot", "name": "Ann"}
    assert T.perturb(text, values, "leet", ["insult"]) == "Women are 1d10ts, Ann."
    assert T.perturb(text, values, "leet") == "Women are idiots, Ann."  # no fields: nothing to misspell
    assert T.perturb(text, values, "remove_spaces", ["insult"]) == "Womenareidiots,Ann."


# -----------------------------------------------------------------------------
# The vocabulary and the file


@pytest.mark.parametrize("raw, message", [
    ({}, r"no \[\[groups\]\]"),
    ({"groups": [{"id": "g", "group": "gs", "member": "a g", "adj": "g"}]}, r"group 'g': unknown field 'adj'"),
    ({"groups": [{"id": "g", "group": "gs"}]}, r"group 'g': missing member"),
    ({"groups": [{"id": "g", "group": "gs", "member": "a g"}] * 2}, r"group 'g': id used twice"),
    ({"groups": [{"id": "g", "group": "gs", "member": "a g"}], "fillers": {"identity_adj": ["x"]}}, r"filler 'identity_adj': taken by the groups"),
    ({"groups": [{"id": "g", "group": "gs", "member": "a g"}], "fillers": {"slur": ["x"]}}, r"filler 'slur': taken by the groups"),
    ({"groups": [{"id": "g", "group": "gs", "member": "a g"}], "fillers": {"Bad": ["x"]}}, r"filler 'Bad': bad name"),
    ({"groups": [{"id": "g", "group": "gs", "member": "a g"}], "slurs": {"h": ["x"]}}, r"slurs for 'h': no such group"),
])
def test_bad_vocabularies_are_refused(raw, message):
    with pytest.raises(T.TemplateError, match=message):
        T.read_vocab(raw)


def test_load_names_the_file(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[[groups]]\nid = "g"\ngroup = "gs"\nmember = "a g"\n', encoding="utf-8")
    assert T.load(path, lambda raw: len(T.read_vocab(raw).groups), "template file", path) == 1
    with pytest.raises(ValueError, match=rf"^{path}: no \[\[groups\]\]"):
        T.load(path, lambda raw: T.read_vocab({}), "template file", path)
    path.write_text("[groups", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"^{path}: not valid TOML"):
        T.load(path, T.read_vocab, "template file", path)
    with pytest.raises(FileNotFoundError, match="no such template file; expected a TOML file like"):
        T.load(tmp_path / "missing.toml", T.read_vocab, "template file", path)
