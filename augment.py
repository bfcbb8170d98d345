"""
Training augmentation for the toxic / hate detector: hand-written templates in suites/augment.toml,
filled in with hand-written fillers, giving (text, [toxic, hate]) pairs for the TRAINING split only.

Why: the real datasets (Davidson tweets, hate_speech18 forum sentences) teach "swearing = toxic" well,
but little about the hard cases: counter-speech, negated hate, reclaimed identity terms, neutral and
positive mentions of a group, profanity that attacks nobody's identity, hate put as a question or an
opinion, misspelt hate. These templates add examples of each, labelled by the rules of the test suite.

Why a separate file: suites/behaviour.toml is the evaluation suite, and a model trained on its sentence
frames would pass it without having learnt anything. So augment.toml shares no sentence frame with it
and no run of 4 literal words (tests/test_augment.py checks both), uses other names, other objects and
other profanity contexts, leaves some of its identity groups out, and has no slurs at all.

Rendering is deterministic: each template gives up to `n` texts (n of its phenomenon), distinct
combinations of group, name and fillers sampled with a seed derived from `seed` and the template id.
Hate spelling variants misspell filler words with behaviour.py's perturbations and two more.
A text rendered twice is kept once; the same text with two different labels is an error.

    python augment.py    # counts per phenomenon and per (toxic, hate)
"""

import math
import random
import re
import tomllib
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from behaviour import WORD_PERTURBATIONS, perturb_filler, remove_spaces

DEFAULT_AUGMENT = Path(__file__).parent / "suites" / "augment.toml"
GROUP_FIELDS = ("group", "member", "adj")  # placeholders bound to one identity group
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PHENOMENON_KEYS = {"description", "toxic", "hate", "n", "templates", "perturb", "perturb_fields"}


def mask_vowel(word: str) -> str:
    """The first vowel after the first letter masked: revolting -> r*volting."""
    i = next((i for i in range(1, len(word)) if word[i] in "aeiou"), None)
    return word if i is None else word[:i] + "*" + word[i + 1:]


def stretch_vowel(word: str) -> str:
    """The last vowel tripled: lice -> liiice."""
    i = next((i for i in range(len(word) - 1, -1, -1) if word[i] in "aeiou"), None)
    return word if i is None else word[:i] + word[i] * 3 + word[i + 1:]


PERTURBATIONS = {**WORD_PERTURBATIONS, "mask_vowel": mask_vowel, "stretch_vowel": stretch_vowel}
TEXT_PERTURBATIONS = {"remove_spaces": remove_spaces}  # act on the whole text, not on perturb_fields


@dataclass(frozen=True)
class Example:
    text: str
    toxic: int
    hate: int
    phenomenon: str
    template: str  # "<phenomenon>#<1-based index>"


class AugmentError(ValueError):
    """A mistake in the augmentation file; augment_examples adds the file name in front."""


def load_augment(path=DEFAULT_AUGMENT, seed=0) -> list[tuple[str, list[int]]]:
    """(text, [toxic, hate]) for every distinct augmentation text, in file order. For training only."""
    return [(e.text, [e.toxic, e.hate]) for e in augment_examples(path, seed)]


def augment_examples(path=DEFAULT_AUGMENT, seed=0) -> list[Example]:
    """Every distinct rendered text with its labels, phenomenon and template. ValueError naming the file and template."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such augmentation file; expected a TOML file like {DEFAULT_AUGMENT}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    try:
        return build(raw, seed)
    except AugmentError as e:
        raise ValueError(f"{path}: {e}") from None


def build(raw: dict, seed: int) -> list[Example]:
    unknown = sorted(set(raw) - {"groups", "fillers", "phenomenon"})
    if unknown:
        raise AugmentError(f"unknown top-level table {unknown[0]!r}; expected groups, fillers and phenomenon")
    groups, fillers = read_groups(raw.get("groups")), read_fillers(raw.get("fillers", {}))
    specs = raw.get("phenomenon")
    if not isinstance(specs, dict) or not specs:
        raise AugmentError("no [phenomenon.NAME] tables; expected at least one")
    out: dict[str, Example] = {}
    for name, spec in specs.items():
        toxic, hate, n, perturbs, fields = read_phenomenon(name, spec)
        templates = spec.get("templates")
        if not isinstance(templates, list) or not templates:
            raise AugmentError(f"phenomenon {name}: no templates; expected templates = [\"...\", ...]")
        for i, entry in enumerate(templates, 1):
            tid = f"{name}#{i}"
            text, only = parse_entry(tid, entry)
            for k, values in enumerate(render(tid, text, only, groups, fillers, n, seed)):
                # Spelling variants: the perturbations taken in turn, so that every one is used.
                rendered = misspelt(tid, text, values, perturbs[(k + i) % len(perturbs):] + perturbs, fields) if perturbs else fill(text, values)
                e = Example(rendered, toxic, hate, name, tid)
                if rendered in out and (out[rendered].toxic, out[rendered].hate) != (toxic, hate):
                    raise AugmentError(f"template {tid}: {rendered!r} is also rendered by {out[rendered].template} "
                                       "with other labels; expected one pair of labels per text")
                out.setdefault(rendered, e)
    return list(out.values())


def read_groups(groups) -> list[dict]:
    if not isinstance(groups, list) or not groups:
        raise AugmentError("no [[groups]]; expected a list of identity groups with id, group and member")
    seen = set()
    for i, g in enumerate(groups, 1):
        if not isinstance(g, dict) or not all(isinstance(g.get(k), str) and g[k].strip() for k in ("id", "group", "member")):
            raise AugmentError(f"group #{i}: expected a table with id, group, member and optionally adj")
        extra = sorted(set(g) - {"id", *GROUP_FIELDS})
        if extra or g["id"] in seen:
            raise AugmentError(f"group {g['id']!r}: " + (f"unknown field {extra[0]!r}" if extra else "id used twice")
                               + "; expected a unique id, group, member and optionally adj")
        seen.add(g["id"])
    return groups


def read_fillers(fillers) -> dict:
    if not isinstance(fillers, dict):
        raise AugmentError("[fillers] is not a table; expected placeholder = [\"value\", ...]")
    for key, values in fillers.items():
        if key in GROUP_FIELDS or not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise AugmentError(f"filler {key!r}: bad or reserved name; expected lower-case letters, digits and _, "
                               f"not one of {', '.join(GROUP_FIELDS)}")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise AugmentError(f"filler {key!r}: expected a non-empty list of non-empty strings")
        if len(set(values)) != len(values):
            raise AugmentError(f"filler {key!r}: a value appears twice; expected distinct values")
    return fillers


def read_phenomenon(name: str, spec) -> tuple:
    if not isinstance(spec, dict):
        raise AugmentError(f"phenomenon {name}: not a table; expected [phenomenon.{name}]")
    extra = sorted(set(spec) - PHENOMENON_KEYS)
    if extra:
        raise AugmentError(f"phenomenon {name}: unknown field {extra[0]!r}; expected some of {sorted(PHENOMENON_KEYS)}")
    labels = [spec.get(label) for label in ("toxic", "hate")]
    if any(isinstance(v, bool) or v not in (0, 1) for v in labels):
        raise AugmentError(f"phenomenon {name}: toxic = {labels[0]!r}, hate = {labels[1]!r}; expected 0 or 1 each")
    if labels == [0, 1]:
        raise AugmentError(f"phenomenon {name}: hate = 1 with toxic = 0; expected toxic = 1 (hate is toxic)")
    n = spec.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise AugmentError(f"phenomenon {name}: n = {n!r}; expected a positive number of texts per template")
    perturbs = spec.get("perturb", [])
    if not isinstance(perturbs, list) or any(p not in PERTURBATIONS and p not in TEXT_PERTURBATIONS for p in perturbs):
        raise AugmentError(f"phenomenon {name}: perturb = {perturbs!r}; expected a list of some of "
                           f"{', '.join([*PERTURBATIONS, *TEXT_PERTURBATIONS])}")
    fields = spec.get("perturb_fields", [])
    if any(p in PERTURBATIONS for p in perturbs) and not fields:
        raise AugmentError(f"phenomenon {name}: perturb changes words of fillers; expected perturb_fields = [\"placeholder\", ...]")
    return labels[0], labels[1], n, perturbs, fields


def parse_entry(tid: str, entry) -> tuple[str, list | None]:
    """A template is a text, or a table {text = ..., groups = [ids]} that fills its group with those groups only."""
    only = None
    if isinstance(entry, dict):
        if set(entry) != {"text", "groups"} or not isinstance(entry["groups"], list) or not entry["groups"]:
            raise AugmentError(f"template {tid}: {entry!r}; expected {{ text = \"...\", groups = [\"id\", ...] }}")
        entry, only = entry["text"], entry["groups"]
    if not isinstance(entry, str) or not entry.strip():
        raise AugmentError(f"template {tid}: {entry!r} is not a text; expected a non-empty string")
    if "{" in PLACEHOLDER.sub("", entry) or "}" in PLACEHOLDER.sub("", entry):
        raise AugmentError(f"template {tid}: stray brace in {entry!r}; expected placeholders like {{group}}")
    return entry, only


def base(placeholder: str) -> str:
    # {Group} is {group} with its first letter capitalised, for the start of a sentence.
    return placeholder[:1].lower() + placeholder[1:]


def render(tid: str, text: str, only, groups: list, fillers: dict, n: int, seed: int):
    """Yield up to n distinct fillings {placeholder base: value} of a template, sampled from all of them."""
    bases = list(dict.fromkeys(base(p) for p in PLACEHOLDER.findall(text)))
    known = {*GROUP_FIELDS, *fillers}
    for b in bases:
        if b not in known:
            raise AugmentError(f"template {tid}: unknown placeholder {{{b}}} in {text!r}; "
                               f"expected one of {', '.join('{' + k + '}' for k in sorted(known))}")
    needs = [b for b in bases if b in GROUP_FIELDS]
    if only is not None and not needs:
        raise AugmentError(f"template {tid}: groups given but {text!r} has no {{group}}, {{member}} or {{adj}}; "
                           "expected one of them")
    by_id = {g["id"]: g for g in groups}
    bad = [g for g in only or [] if g not in by_id]
    if bad:
        raise AugmentError(f"template {tid}: groups: no group {bad[0]!r}; expected ids from [[groups]]")
    chosen = [by_id[g] for g in only] if only else groups
    bindings = [g for g in chosen if all(g.get(f) for f in needs)] if needs else [{}]
    if not bindings:
        raise AugmentError(f"template {tid}: no group has all of {needs}; expected at least one")
    others = [b for b in bases if b in fillers]
    sizes = [len(bindings)] + [len(fillers[b]) for b in others]
    rng = random.Random(zlib.crc32(f"{seed}:{tid}".encode()))
    # Sampled by index into the product of the choices, in order: the product itself is never listed.
    for pick in sorted(rng.sample(range(math.prod(sizes)), min(n, math.prod(sizes)))):
        values = {}
        for b in reversed(others):
            pick, j = divmod(pick, len(fillers[b]))
            values[b] = fillers[b][j]
        values.update({f: bindings[pick][f] for f in needs})
        yield values


def misspelt(tid: str, text: str, values: dict, perturbations: list, fields: list) -> str:
    """The text misspelt by the first of `perturbations` that changes it: every word of 3+ letters of its
    perturb_fields fillers (leet leaves "scum" alone: the next one is tried), or the whole text (remove_spaces)."""
    plain = fill(text, values)
    for p in perturbations:
        if p in TEXT_PERTURBATIONS:
            out = TEXT_PERTURBATIONS[p](plain)
        else:
            out = fill(text, {**values, **{f: perturb_filler(PERTURBATIONS[p], values[f]) for f in fields if f in values}})
        if out != plain:
            return out
    raise AugmentError(f"template {tid}: no perturbation changes {plain!r}; "
                       f"expected one of perturb_fields {fields} with a word of 3+ letters")


def fill(text: str, values: dict) -> str:
    def one(m):
        value = values[base(m.group(1))]
        return value[:1].upper() + value[1:] if m.group(1)[:1].isupper() else value
    return PLACEHOLDER.sub(one, text)


if __name__ == "__main__":
    examples = augment_examples()
    print(f"{len(examples)} texts from {DEFAULT_AUGMENT}")
    for (toxic, hate), count in sorted(Counter((e.toxic, e.hate) for e in examples).items()):
        print(f"  toxic={toxic} hate={hate}: {count}")
    for name, count in Counter(e.phenomenon for e in examples).items():
        e = next(e for e in examples if e.phenomenon == name)
        print(f"  {name:32s} ({e.toxic}, {e.hate}) {count:4d}   e.g. {e.text}")
