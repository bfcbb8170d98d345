"""
The template engine shared by the behaviour suite (behaviour.py, suites/behaviour.toml) and the
training templates (augment.py, suites/augment.toml). A template is a hand-written sentence with
{placeholders}, filled in from hand-written lists:

    {group} {member} {identity_adj}  one identity group at a time, from [[groups]]: "Muslims", "a Muslim", "Muslim"
    {slur}                           a slur of that group, from [slurs] (the suite uses them in one functionality only)
    {name} {insult} ...              from [fillers]
    {Group}                          the same filler with its first letter capitalised, for the start of a sentence

Read top to bottom:
  1. the placeholder syntax: finding placeholders and filling them in;
  2. the vocabulary (groups, fillers, slurs) and template entries, read from a TOML file, every
     mistake an error naming the file and the template;
  3. rendering: which fillings of a template are made. Some choices are swept (every group, every
     name: the suite compares renders that differ only in the group), the others are sampled,
     distinct combinations drawn with a seed derived from a key string (crc32, not hash(): that
     one changes between runs), so that the same file always renders the same texts;
  4. perturbations: filler words misspelt the way people get past filters, and whole-text changes
     (casing, punctuation, an emoji).

This file imports nothing from the project; it needs the standard library only.
"""

import itertools
import math
import random
import re
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path

# -----------------------------------------------------------------------------
# 1. The placeholder syntax

PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
GROUP_FIELDS = ("group", "member", "identity_adj")  # placeholders bound to one identity group
SLUR = "slur"  # bound to the group too: one of its slurs


def placeholders(text: str) -> list[str]:
    """The placeholders of a text as written ({Group} gives "Group"), each once, in order."""
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def base(placeholder: str) -> str:
    # {Group} is {group} with its first letter capitalised, for the start of a sentence.
    return placeholder[:1].lower() + placeholder[1:]


def bases(texts) -> list[str]:
    """The fillers a template (or a pair of them) needs: the placeholders without their capitals, each once."""
    return list(dict.fromkeys(base(p) for t in texts for p in placeholders(t)))


def fill(text: str, values: dict) -> str:
    """The text with every placeholder replaced by its value: values maps a base ("group") to its value."""
    def one(m):
        value = values[base(m.group(1))]
        return value[:1].upper() + value[1:] if m.group(1)[:1].isupper() else value
    return PLACEHOLDER.sub(one, text)


# -----------------------------------------------------------------------------
# 2. The vocabulary and the template entries


class TemplateError(ValueError):
    """A mistake in a template file; load adds the file name in front."""


@dataclass
class Vocab:
    groups: list  # [{"id", "group", "member", "identity_adj"?}] in file order
    fillers: dict  # placeholder -> list of values
    slurs: dict  # group id -> list of slurs


def load(path, build, what: str, like: Path):
    """build(the parsed TOML) of a template file. A mistake is a ValueError naming the file (and the template)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such {what}; expected a TOML file like {like}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    try:
        return build(raw)
    except TemplateError as e:
        raise ValueError(f"{path}: {e}") from None


def read_vocab(raw: dict) -> Vocab:
    """The [[groups]], [fillers] and [slurs] tables of a template file, checked."""
    groups = read_groups(raw.get("groups"))
    return Vocab(groups, read_fillers(raw.get("fillers", {})), read_slurs(raw.get("slurs", {}), groups))


def read_groups(groups) -> list[dict]:
    if not isinstance(groups, list) or not groups:
        raise TemplateError("no [[groups]]; expected a list of identity groups with id, group and member")
    seen = set()
    for i, g in enumerate(groups, 1):
        where = f"group {g.get('id', i)!r}" if isinstance(g, dict) else f"group #{i}"
        if not isinstance(g, dict):
            raise TemplateError(f"{where}: not a table; expected id, group, member and optionally identity_adj")
        for key in ("id", "group", "member"):
            if not isinstance(g.get(key), str) or not g[key].strip():
                raise TemplateError(f"{where}: missing {key}; expected a non-empty string")
        extra = sorted(set(g) - {"id", *GROUP_FIELDS})
        if extra:
            raise TemplateError(f"{where}: unknown field {extra[0]!r}; expected id, group, member, identity_adj")
        if g["id"] in seen:
            raise TemplateError(f"{where}: id used twice; expected unique group ids")
        seen.add(g["id"])
    return groups


def read_fillers(fillers) -> dict:
    if not isinstance(fillers, dict):
        raise TemplateError("[fillers] is not a table; expected placeholder = [\"value\", ...]")
    for key, values in fillers.items():
        if key in GROUP_FIELDS or key == SLUR:
            raise TemplateError(f"filler {key!r}: taken by the groups; expected another name")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise TemplateError(f"filler {key!r}: bad name; expected lower-case letters, digits and _")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise TemplateError(f"filler {key!r}: expected a non-empty list of non-empty strings")
        if len(set(values)) != len(values):
            raise TemplateError(f"filler {key!r}: a value appears twice; expected distinct values")
    return fillers


def read_slurs(slurs, groups) -> dict:
    ids = {g["id"] for g in groups}
    for key, values in slurs.items():
        if key not in ids:
            raise TemplateError(f"slurs for {key!r}: no such group; expected one of the [[groups]] ids")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise TemplateError(f"slurs for {key!r}: expected a non-empty list of strings")
    return slurs


def parse_entry(tid: str, entry, pair: bool = False) -> tuple[tuple[str, ...], list | None]:
    """A template entry -> (texts, groups). An entry is a text, an [original, perturbed] pair (pair=True),
    or a table {text = ..., groups = [ids]} that restricts the groups (or names the target of a text without one)."""
    groups = None
    if isinstance(entry, dict):
        extra = sorted(set(entry) - {"text", "groups"})
        if extra:
            raise TemplateError(f"template {tid}: unknown field {extra[0]!r}; expected text and groups")
        groups = entry.get("groups")
        if not isinstance(groups, list) or not groups:
            raise TemplateError(f"template {tid}: groups is {groups!r}; expected a non-empty list of group ids")
        entry = entry.get("text")
    texts = (entry,) if isinstance(entry, str) else tuple(entry) if isinstance(entry, list) else ()
    want = 2 if pair else 1
    if len(texts) != want or not all(isinstance(t, str) and t.strip() for t in texts):
        expected = "a pair [\"original\", \"perturbed\"]" if pair else "a text"
        raise TemplateError(f"template {tid}: {entry!r} is not {expected}; expected {expected}")
    return texts, groups


# -----------------------------------------------------------------------------
# 3. Rendering


def check(tid: str, texts, vocab: Vocab) -> list[str]:
    """The bases of a template's placeholders, after refusing a stray brace or an unknown placeholder."""
    for t in texts:
        if "{" in PLACEHOLDER.sub("", t) or "}" in PLACEHOLDER.sub("", t):
            raise TemplateError(f"template {tid}: stray brace in {t!r}; expected placeholders like {{group}}")
    known = {*GROUP_FIELDS, SLUR, *vocab.fillers}
    for p in dict.fromkeys(p for t in texts for p in placeholders(t)):
        if base(p) not in known:
            raise TemplateError(f"template {tid}: unknown placeholder {{{p}}} in {texts[-1]!r}; "
                                f"expected one of {', '.join('{' + k + '}' for k in sorted(known))}")
    return bases(texts)


def bindings(tid: str, needed: list[str], only: list | None, vocab: Vocab) -> list[tuple[dict | None, str | None]]:
    """The (group, slur) pairs that can fill a template: every group (of `only`, if given) that has the
    fields it needs, once per slur of the group if it has {slur}. A text without group placeholders
    binds no group, or the one group `only` names (the group it is about)."""
    by_id = {g["id"]: g for g in vocab.groups}
    if only is not None:
        bad = [g for g in only if g not in by_id]
        if bad:
            raise TemplateError(f"template {tid}: groups: no group {bad[0]!r}; expected ids from [[groups]]")
    chosen = [by_id[g] for g in only] if only is not None else vocab.groups
    needs = [b for b in needed if b in GROUP_FIELDS]
    if needs or SLUR in needed:
        chosen = [g for g in chosen if all(g.get(f) for f in needs)]
        out = [(g, s) for g in chosen for s in (vocab.slurs.get(g["id"], []) if SLUR in needed else [None])]
        if not out:
            raise TemplateError(f"template {tid}: no group has all of {needs + ([SLUR] if SLUR in needed else [])}; "
                                "expected at least one")
        return out
    if only is not None:
        if len(chosen) != 1:
            raise TemplateError(f"template {tid}: groups lists {len(chosen)} groups for a text without a group placeholder; "
                                "expected one, the group the text is about")
        return [(chosen[0], None)]
    return [(None, None)]


def sample(sizes: list[int], n: int, key: str) -> list[tuple[int, ...]]:
    """n distinct index tuples into the product of choices of these sizes (all of them if there are fewer),
    in order, drawn with a seed derived from key. Drawn by number into the product: it is never listed."""
    rng = random.Random(zlib.crc32(key.encode()))
    out = []
    for pick in sorted(rng.sample(range(math.prod(sizes)), min(n, math.prod(sizes)))):
        digits = []
        for size in reversed(sizes):  # the number written in the mixed base of the sizes, last choice fastest
            pick, j = divmod(pick, size)
            digits.append(j)
        out.append(tuple(reversed(digits)))
    return out


def render(tid: str, texts, only: list | None, vocab: Vocab, n: int, key: str, sweep=()):
    """Yield (values, group) for the fillings of a template (or of an [original, perturbed] pair, filled alike):
    values maps every base to its value (fill(text, values) renders it), group is the group bound, or None.

    The choices are the group (with its slur) and each filler of [fillers] the template has. Those named in
    `sweep` ("group", "name") are taken in full; the others take n sampled combinations, seeded by key,
    the same for every swept choice, so that renders differing only in a swept choice can be compared."""
    needed = check(tid, texts, vocab)
    choices = {"group": bindings(tid, needed, only, vocab), **{b: vocab.fillers[b] for b in needed if b in vocab.fillers}}
    swept = [c for c in sweep if c in choices]
    sampled = [c for c in choices if c not in swept]
    for pick in sample([len(choices[c]) for c in sampled], n, key):
        for rest in itertools.product(*(range(len(choices[c])) for c in swept)):
            chosen = {c: choices[c][j] for c, j in zip(sampled + swept, pick + rest)}
            group, slur = chosen.pop("group")
            values = dict(chosen)
            if group is not None:
                values.update({f: group[f] for f in GROUP_FIELDS if f in group})
            if slur is not None:
                values[SLUR] = slur
            yield values, group


# -----------------------------------------------------------------------------
# 4. Perturbations

# Word-level perturbations change the filler words of a hateful sentence into the misspellings
# people use to get past filters. Each changes every word of 3+ letters of the filler.

def swap_chars(word: str) -> str:
    """Two neighbouring letters in the middle swapped: vermin -> vemrin."""
    for i in range(max(1, len(word) // 2 - 1), len(word) - 2):
        if word[i] != word[i + 1]:
            return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word


def drop_char(word: str) -> str:
    """The last vowel inside the word dropped (vermin -> vermn), else the middle letter."""
    inner = [i for i in range(1, len(word) - 1) if word[i] in "aeiou"]
    i = inner[-1] if inner else len(word) // 2
    return word[:i] + word[i + 1:]


LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0"})


def leet(word: str) -> str:
    return word.translate(LEET)


def add_spaces(word: str) -> str:
    return " ".join(word)


def mask_vowel(word: str) -> str:
    """The first vowel after the first letter masked: revolting -> r*volting."""
    i = next((i for i in range(1, len(word)) if word[i] in "aeiou"), None)
    return word if i is None else word[:i] + "*" + word[i + 1:]


def stretch_vowel(word: str) -> str:
    """The last vowel tripled: vermin -> vermiiin."""
    i = next((i for i in range(len(word) - 1, -1, -1) if word[i] in "aeiou"), None)
    return word if i is None else word[:i] + word[i] * 3 + word[i + 1:]


# Text-level perturbations act on the whole rendered sentence.

EMOJI = ("😂", "🙄", "👀", "🤷", "🙂", "🔥")


def remove_spaces(text: str) -> str:
    return text.replace(" ", "")


def strip_punct(text: str) -> str:
    return re.sub(r"[^\w\s]", "", text).strip()


def exclaim(text: str) -> str:
    return text.rstrip(".!?") + "!!!"


def add_emoji(text: str) -> str:
    # The emoji depends on the text only (crc32, not hash(): that one changes between runs).
    return f"{text} {EMOJI[zlib.crc32(text.encode()) % len(EMOJI)]}"


WORD_PERTURBATIONS = {"swap_chars": swap_chars, "drop_char": drop_char, "leet": leet, "add_spaces": add_spaces,
                      "mask_vowel": mask_vowel, "stretch_vowel": stretch_vowel}
TEXT_PERTURBATIONS = {"remove_spaces": remove_spaces, "lower": str.lower, "upper": str.upper,
                      "strip_punct": strip_punct, "exclaim": exclaim, "emoji": add_emoji}


def perturb_filler(fn, value: str) -> str:
    return " ".join(fn(w) if len(w) >= 3 else w for w in value.split(" "))


def perturb(text: str, values: dict, name: str, fields=()) -> str:
    """The template rendered with perturbation `name`: a word-level one misspells the values of `fields`
    (placeholders), a text-level one changes the rendered text."""
    if name in TEXT_PERTURBATIONS:
        return TEXT_PERTURBATIONS[name](fill(text, values))
    fn = WORD_PERTURBATIONS[name]
    return fill(text, {**values, **{f: perturb_filler(fn, values[f]) for f in fields if f in values}})
