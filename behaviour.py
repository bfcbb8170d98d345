"""
Behavioural tests for a toxic / hateful comment detector, in the manner of CheckList (Ribeiro et
al. 2020): hand-written templates, filled in with hand-written fillers, grouped by functionality.

A detector answers two questions about a text: is it offensive language (`toxic`), and does it
attack people for who they are (`hate`)? Hate is always toxic. Three kinds of test:
  MFT  minimum functionality: a text with its expected labels ("Immigrants are vermin." -> 1, 1);
  INV  invariance: a change that must not change the decision (casing, punctuation, an emoji,
       another name, another target group); the perturbed text is scored against its original;
  DIR  directional: a change that must not move one label's probability the wrong way by more
       than DIR_TOLERANCE (a threat added to a neutral sentence about a group: hate up or level).

The suite lives in suites/behaviour.toml (its header has the labelling rules). Read top to bottom:
  1. the case and the perturbations (spelling variants for MFT, casing/punctuation/emoji for INV);
  2. loading the suite: every template rendered, every mistake an error naming the file and template;
  3. scoring a model: run_suite(cases, predict) and format_markdown(result) for the report.

Rendering is deterministic: the target group and the person's name are swept (every group, every
name), the other fillers are sampled with a seed derived from the template id, and INV/DIR cases
drawn from other functionalities are sampled with a seed derived from the functionality name.

This file imports nothing from the project; it needs numpy and the standard library only.
"""

import itertools
import math
import random
import re
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS = ("toxic", "hate")
DEFAULT_SUITE = Path(__file__).parent / "suites" / "behaviour.toml"
KINDS = ("MFT", "INV", "DIR")
DIRECTIONS = ("up", "down")
DIR_TOLERANCE = 0.05  # a DIR case fails only if the probability moves the wrong way by more than this
FAIL_BELOW = 0.5  # the summary lists the functionalities whose pass rate is below this
MAX_EXAMPLES = 3  # failing texts kept per functionality and label
DEFAULT_COMBOS = 2  # filler combinations per template, besides the swept group and name

# -----------------------------------------------------------------------------
# 1. The case and the perturbations


@dataclass(frozen=True)
class Case:
    text: str
    functionality: str
    kind: str  # "MFT", "INV" or "DIR"
    toxic: int | None  # expected, 0/1; None for INV/DIR, which are scored against `original`
    hate: int | None
    target: str | None  # the identity group filled in (its id in the suite), if any
    template: str  # the template id it came from: "<functionality>#<1-based index>"
    group: int | None = None  # INV/DIR: id tying a perturbed case to its original
    original: str | None = None  # INV/DIR: the text it was derived from
    direction: str | None = None  # DIR: "up" or "down"
    label: str | None = None  # DIR: the label whose probability must not move against `direction`
    perturbation: str | None = None  # how it was derived: "leet", "upper", "swap:name", "append", "pair"
    description: str = ""  # of its functionality
    fillers: tuple = ()  # (placeholder, value) pairs it was rendered with; the group as ("group", id)


# Word-level perturbations change one filler word of a hateful sentence into the misspellings
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


WORD_PERTURBATIONS = {"swap_chars": swap_chars, "drop_char": drop_char, "leet": leet, "add_spaces": add_spaces}
TEXT_PERTURBATIONS = {"remove_spaces": remove_spaces, "lower": str.lower, "upper": str.upper,
                      "strip_punct": strip_punct, "exclaim": exclaim, "emoji": add_emoji}


def perturb_filler(fn, value: str) -> str:
    return " ".join(fn(w) if len(w) >= 3 else w for w in value.split(" "))


# -----------------------------------------------------------------------------
# 2. Loading the suite

GROUP_FIELDS = ("group", "member", "identity_adj")  # placeholders bound to one identity group
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
FUNCTIONALITY_KEYS = {
    "MFT": {"kind", "description", "toxic", "hate", "templates", "combos", "perturb", "perturb_fields", "slurs"},
    "INV": {"kind", "description", "templates", "combos", "source", "perturb", "swap", "n"},
    "DIR": {"kind", "description", "label", "direction", "templates", "combos", "source", "perturb", "swap", "append", "n"},
}


class SuiteError(ValueError):
    """A mistake in the suite file; load_suite adds the file name in front."""


@dataclass
class Vocab:
    groups: list  # [{"id", "group", "member", "identity_adj"?}] in file order
    fillers: dict  # placeholder -> list of values
    slurs: dict  # group id -> list of slurs


def load_suite(path=DEFAULT_SUITE) -> list[Case]:
    """Every case of the suite file, in file order. ValueError naming the file and template on a mistake."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such suite file; expected a TOML file like {DEFAULT_SUITE}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e})") from None
    try:
        return build_suite(raw)
    except SuiteError as e:
        raise ValueError(f"{path}: {e}") from None


def build_suite(raw: dict) -> list[Case]:
    unknown = sorted(set(raw) - {"groups", "fillers", "slurs", "functionality"})
    if unknown:
        raise SuiteError(f"unknown top-level table {unknown[0]!r}; expected groups, fillers, slurs and functionality")
    groups = read_groups(raw.get("groups"))
    vocab = Vocab(groups, read_fillers(raw.get("fillers", {})), read_slurs(raw.get("slurs", {}), groups))
    specs = raw.get("functionality")
    if not isinstance(specs, dict) or not specs:
        raise SuiteError("no [functionality.NAME] tables; expected at least one")
    by_name: dict[str, list[Case]] = {}
    tie = itertools.count()  # INV/DIR group ids, unique over the whole suite
    for name, spec in specs.items():
        if not isinstance(spec, dict):
            raise SuiteError(f"functionality {name}: not a table; expected [functionality.{name}]")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise SuiteError(f"functionality {name}: kind {kind!r}; expected one of {', '.join(KINDS)}")
        extra = sorted(set(spec) - FUNCTIONALITY_KEYS[kind])
        if extra:
            raise SuiteError(f"functionality {name}: unknown field {extra[0]!r}; expected some of {sorted(FUNCTIONALITY_KEYS[kind])}")
        if not isinstance(spec.get("description"), str) or not spec["description"].strip():
            raise SuiteError(f"functionality {name}: no description; expected description = \"what it tests\"")
        if kind == "MFT":
            by_name[name] = mft_cases(name, spec, specs, vocab)
        else:
            by_name[name] = derived_cases(name, spec, specs, vocab, by_name, tie)
    return [case for cases in by_name.values() for case in cases]


def read_groups(groups) -> list[dict]:
    if not isinstance(groups, list) or not groups:
        raise SuiteError("no [[groups]]; expected a list of identity groups with id, group and member")
    seen = set()
    for i, g in enumerate(groups, 1):
        where = f"group {g.get('id', i)!r}" if isinstance(g, dict) else f"group #{i}"
        if not isinstance(g, dict):
            raise SuiteError(f"{where}: not a table; expected id, group, member and optionally identity_adj")
        for key in ("id", "group", "member"):
            if not isinstance(g.get(key), str) or not g[key].strip():
                raise SuiteError(f"{where}: missing {key}; expected a non-empty string")
        extra = sorted(set(g) - {"id", *GROUP_FIELDS})
        if extra:
            raise SuiteError(f"{where}: unknown field {extra[0]!r}; expected id, group, member, identity_adj")
        if g["id"] in seen:
            raise SuiteError(f"{where}: id used twice; expected unique group ids")
        seen.add(g["id"])
    return groups


def read_fillers(fillers) -> dict:
    if not isinstance(fillers, dict):
        raise SuiteError("[fillers] is not a table; expected placeholder = [\"value\", ...]")
    for key, values in fillers.items():
        if key in GROUP_FIELDS or key == "slur":
            raise SuiteError(f"filler {key!r}: taken by the groups; expected another name")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
            raise SuiteError(f"filler {key!r}: bad name; expected lower-case letters, digits and _")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise SuiteError(f"filler {key!r}: expected a non-empty list of non-empty strings")
        if len(set(values)) != len(values):
            raise SuiteError(f"filler {key!r}: a value appears twice; expected distinct values")
    return fillers


def read_slurs(slurs, groups) -> dict:
    ids = {g["id"] for g in groups}
    for key, values in slurs.items():
        if key not in ids:
            raise SuiteError(f"slurs for {key!r}: no such group; expected one of the [[groups]] ids")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
            raise SuiteError(f"slurs for {key!r}: expected a non-empty list of strings")
    return slurs


def template_entries(name: str, spec: dict, specs: dict) -> list:
    """The functionality's raw templates; `templates = "other"` reuses another functionality's list."""
    templates = spec.get("templates")
    if isinstance(templates, str):
        other = specs.get(templates, {}).get("templates") if isinstance(specs.get(templates), dict) else None
        if not isinstance(other, list):
            raise SuiteError(f"functionality {name}: templates = {templates!r} names no functionality with a list of templates; "
                             "expected the name of one")
        templates = other
    if not isinstance(templates, list) or not templates:
        raise SuiteError(f"functionality {name}: no templates; expected templates = [\"...\", ...]")
    return templates


def parse_entry(tid: str, entry, pair: bool) -> tuple[tuple[str, ...], list | None]:
    """A template entry -> (texts, groups). An entry is a text, a [original, perturbed] pair, or a
    table {text = ..., groups = [ids]} that restricts the groups (or names the target of a text without one)."""
    groups = None
    if isinstance(entry, dict):
        extra = sorted(set(entry) - {"text", "groups"})
        if extra:
            raise SuiteError(f"template {tid}: unknown field {extra[0]!r}; expected text and groups")
        groups = entry.get("groups")
        if not isinstance(groups, list) or not groups:
            raise SuiteError(f"template {tid}: groups is {groups!r}; expected a non-empty list of group ids")
        entry = entry.get("text")
    texts = (entry,) if isinstance(entry, str) else tuple(entry) if isinstance(entry, list) else ()
    want = 2 if pair else 1
    if len(texts) != want or not all(isinstance(t, str) and t.strip() for t in texts):
        expected = "a pair [\"original\", \"perturbed\"]" if pair else "a text"
        raise SuiteError(f"template {tid}: {entry!r} is not {expected}; expected {expected}")
    return texts, groups


def expected_label(name: str, tid: str, spec: dict, label: str) -> int:
    value = spec.get(label)
    if value is None:
        raise SuiteError(f"template {tid}: no expected {label!r} in [functionality.{name}]; expected {label} = 0 or 1")
    if isinstance(value, bool) or value not in (0, 1):
        raise SuiteError(f"template {tid}: {label} = {value!r} in [functionality.{name}]; expected {label} = 0 or 1")
    return int(value)


def mft_cases(name: str, spec: dict, specs: dict, vocab: Vocab) -> list[Case]:
    perturb = spec.get("perturb")
    if perturb is not None and perturb not in WORD_PERTURBATIONS and perturb not in TEXT_PERTURBATIONS:
        raise SuiteError(f"functionality {name}: perturb = {perturb!r}; expected one of "
                         f"{', '.join([*WORD_PERTURBATIONS, *TEXT_PERTURBATIONS])}")
    fields = spec.get("perturb_fields", [])
    if perturb in WORD_PERTURBATIONS and not fields:
        raise SuiteError(f"functionality {name}: perturb = {perturb!r} changes words of fillers; "
                         "expected perturb_fields = [\"placeholder\", ...]")
    word = WORD_PERTURBATIONS.get(perturb)
    cases = []
    for i, entry in enumerate(template_entries(name, spec, specs), 1):
        tid = f"{name}#{i}"
        texts, groups = parse_entry(tid, entry, pair=False)
        toxic, hate = (expected_label(name, tid, spec, label) for label in LABELS)
        if hate and not toxic:
            raise SuiteError(f"template {tid}: hate = 1 with toxic = 0 in [functionality.{name}]; expected toxic = 1 (hate is toxic)")
        if word and not set(fields) & {base(p) for p in placeholders(texts[0])}:
            raise SuiteError(f"template {tid}: none of perturb_fields {fields} in {texts[0]!r}; expected one of them, "
                             f"for {perturb} to change")
        for (text,), target, filled in render(tid, texts, groups, vocab, spec, word, fields):
            if perturb in TEXT_PERTURBATIONS:
                text = TEXT_PERTURBATIONS[perturb](text)
            cases.append(Case(text, name, "MFT", toxic, hate, target, tid, perturbation=perturb,
                              description=spec["description"], fillers=filled))
    return cases


def derived_cases(name: str, spec: dict, specs: dict, vocab: Vocab, by_name: dict, tie) -> list[Case]:
    """INV and DIR cases: from [original, perturbed] template pairs, or from the cases of `source`
    functionalities (defined above) changed by `perturb`, `swap` (another group or name) or `append`."""
    kind, label, direction = spec["kind"], spec.get("label"), spec.get("direction")
    if kind == "DIR" and label not in LABELS:
        raise SuiteError(f"functionality {name}: label = {label!r}; expected one of {', '.join(LABELS)}")
    if kind == "DIR" and direction not in DIRECTIONS:
        raise SuiteError(f"functionality {name}: direction = {direction!r}; expected one of {', '.join(DIRECTIONS)}")

    def case(text, original, target, template, gid, how, filled=()):
        return Case(text, name, kind, None, None, target, template, group=gid, original=original, direction=direction,
                    label=label, perturbation=how, description=spec["description"], fillers=filled)

    ways = [k for k in ("templates", "perturb", "swap", "append") if k in spec]
    if ways == ["templates"]:
        if "source" in spec:
            raise SuiteError(f"functionality {name}: both templates and source; expected template pairs or source cases")
        cases = []
        for i, entry in enumerate(template_entries(name, spec, specs), 1):
            tid = f"{name}#{i}"
            texts, groups = parse_entry(tid, entry, pair=True)
            for (original, text), target, filled in render(tid, texts, groups, vocab, spec):
                cases.append(case(text, original, target, tid, next(tie), "pair", filled))
        return cases
    if len(ways) != 1 or "source" not in spec:
        raise SuiteError(f"functionality {name}: expected either templates = [[original, perturbed], ...] or source = [...] "
                         "with one of perturb, swap, append")
    pool = source_cases(name, spec, by_name)
    rng = random.Random(zlib.crc32(name.encode()))
    n = spec.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise SuiteError(f"functionality {name}: n = {n!r}; expected a positive number of source cases to draw")

    def sample(items):
        if n is None or n >= len(items):
            return items
        return [items[i] for i in sorted(rng.sample(range(len(items)), n))]

    cases = []
    if "swap" in spec:
        swap = spec["swap"]
        if swap not in ("group", "name"):
            raise SuiteError(f"functionality {name}: swap = {swap!r}; expected group or name")
        # Renders of one template that differ only in the swapped filler form a set; the first is the original.
        drop = {"group", "slur"} if swap == "group" else {"name"}
        sets: dict = {}
        for c in pool:
            if any(k in drop for k, _ in c.fillers):
                key = (c.template, tuple(kv for kv in c.fillers if kv[0] not in drop))
                sets.setdefault(key, []).append(c)
        for members in sample([m for m in sets.values() if len(m) > 1]):
            gid = next(tie)
            cases += [case(c.text, members[0].text, c.target, c.template, gid, f"swap:{swap}", c.fillers) for c in members[1:]]
    elif "perturb" in spec:
        perturbs = spec["perturb"] if isinstance(spec["perturb"], list) else [spec["perturb"]]
        bad = [p for p in perturbs if p not in TEXT_PERTURBATIONS]
        if bad or not perturbs:
            raise SuiteError(f"functionality {name}: perturb = {bad[0] if bad else perturbs!r}; expected some of {', '.join(TEXT_PERTURBATIONS)}")
        for c in sample(pool):
            gid = next(tie)
            for p in perturbs:
                text = TEXT_PERTURBATIONS[p](c.text)
                if text != c.text:  # "i hate x" is already lower case: nothing to compare
                    cases.append(case(text, c.text, c.target, c.template, gid, p, c.fillers))
    else:
        append = spec["append"]
        if not isinstance(append, list) or not append or not all(isinstance(a, str) and a.strip() for a in append):
            raise SuiteError(f"functionality {name}: append = {append!r}; expected a list of sentences to add")
        for i, c in enumerate(sample(pool)):
            # Each source case gets one of the sentences, in turn, so that all of them are used.
            cases.append(case(f"{c.text} {append[i % len(append)]}", c.text, c.target, c.template, next(tie), "append", c.fillers))
    if not cases:
        raise SuiteError(f"functionality {name}: no cases; expected source cases that the change applies to")
    return cases


def source_cases(name: str, spec: dict, by_name: dict) -> list[Case]:
    source = spec["source"]
    source = [source] if isinstance(source, str) else source
    if not isinstance(source, list) or not source:
        raise SuiteError(f"functionality {name}: source = {source!r}; expected a list of MFT functionalities")
    pool = []
    for s in source:
        if s not in by_name or not by_name[s] or by_name[s][0].kind != "MFT":
            raise SuiteError(f"functionality {name}: source {s!r} is not an MFT functionality defined above it; "
                             "expected the name of one")
        pool += by_name[s]
    return pool


def placeholders(text: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER.findall(text)))


def base(placeholder: str) -> str:
    # {Group} is {group} with its first letter capitalised, for the start of a sentence.
    return placeholder[:1].lower() + placeholder[1:]


def render(tid: str, texts: tuple, groups: list | None, vocab: Vocab, spec: dict, word=None, fields=()):
    """Yield (rendered texts, target group id, fillers) for every filling of a template (or pair).

    The identity group (with its slur, if any) and the name are swept: every group that has the
    fields the template needs, every name. The other placeholders take `combos` sampled combinations,
    the same for every group, so that renders differing only in the group can be compared (INV)."""
    names = list(dict.fromkeys(p for t in texts for p in placeholders(t)))
    for t in texts:
        if "{" in PLACEHOLDER.sub("", t) or "}" in PLACEHOLDER.sub("", t):
            raise SuiteError(f"template {tid}: stray brace in {t!r}; expected placeholders like {{group}}")
    known = set(GROUP_FIELDS) | {"slur"} | set(vocab.fillers)
    for p in names:
        if base(p) not in known:
            raise SuiteError(f"template {tid}: unknown placeholder {{{p}}} in {texts[-1]!r}; "
                             f"expected one of {', '.join('{' + k + '}' for k in sorted(known))}")
    bases = list(dict.fromkeys(base(p) for p in names))
    if "slur" in bases and not spec.get("slurs"):
        raise SuiteError(f"template {tid}: {{slur}} outside the slur functionality; expected slurs = true in its "
                         "[functionality] table (slurs are used in one functionality only)")

    by_id = {g["id"]: g for g in vocab.groups}
    if groups is not None:
        bad = [g for g in groups if g not in by_id]
        if bad:
            raise SuiteError(f"template {tid}: groups: no group {bad[0]!r}; expected ids from [[groups]]")
    chosen = [by_id[g] for g in groups] if groups is not None else vocab.groups
    needs = [b for b in bases if b in GROUP_FIELDS]
    if needs or "slur" in bases:
        chosen = [g for g in chosen if all(g.get(f) for f in needs)]
        bindings = [(g, s) for g in chosen for s in (vocab.slurs.get(g["id"], []) if "slur" in bases else [None])]
        if not bindings:
            raise SuiteError(f"template {tid}: no group has all of {needs + (['slur'] if 'slur' in bases else [])}; "
                             "expected at least one")
    elif groups is not None:
        if len(chosen) != 1:
            raise SuiteError(f"template {tid}: groups lists {len(chosen)} groups for a text without a group placeholder; "
                             "expected one, the group the text is about")
        bindings = [(chosen[0], None)]
    else:
        bindings = [(None, None)]

    names_swept = vocab.fillers["name"] if "name" in bases else [None]
    others = [b for b in bases if b in vocab.fillers and b != "name"]
    combos = spec.get("combos", DEFAULT_COMBOS)
    if isinstance(combos, bool) or not isinstance(combos, int) or combos < 1:
        raise SuiteError(f"template {tid}: combos = {combos!r}; expected a positive number of filler combinations")
    sizes = [len(vocab.fillers[b]) for b in others]
    total = math.prod(sizes)
    # Sampled by index into the product, in order: no need to list the product itself.
    picks = sorted(random.Random(zlib.crc32(tid.encode())).sample(range(total), min(combos, total)))

    for pick in picks:
        values, rest = {}, pick
        for b, size in zip(reversed(others), reversed(sizes)):
            rest, j = divmod(rest, size)
            values[b] = vocab.fillers[b][j]
        for who in names_swept:
            for g, slur in bindings:
                v = dict(values, name=who) if who else dict(values)
                if g is not None:
                    v.update({f: g[f] for f in GROUP_FIELDS if f in g}, slur=slur)
                filled = {b: v[b] for b in others + (["name"] if who else [])}
                if g is not None and (needs or slur):
                    filled["group"] = g["id"]
                    if slur:
                        filled["slur"] = slur
                out = tuple(PLACEHOLDER.sub(lambda m, v=v: fill(m.group(1), v), t) for t in texts)
                if word:
                    plain = out
                    v.update({f: perturb_filler(word, v[f]) for f in fields if f in v})
                    out = tuple(PLACEHOLDER.sub(lambda m, v=v: fill(m.group(1), v), t) for t in texts)
                    if out == plain:
                        raise SuiteError(f"template {tid}: {word.__name__} leaves {plain[0]!r} unchanged; "
                                         "expected perturb_fields whose fillers it changes")
                yield out, (g["id"] if g is not None else None), tuple(sorted(filled.items()))


def fill(placeholder: str, values: dict) -> str:
    value = values[base(placeholder)]
    return value[:1].upper() + value[1:] if placeholder[:1].isupper() else value


# -----------------------------------------------------------------------------
# 3. Scoring a model


def functionalities(cases) -> dict[str, dict]:
    """name -> {"kind", "description", "n", "toxic", "hate"} in suite order; toxic/hate are the
    expected labels of an MFT functionality (None for INV/DIR, "mixed" if its cases disagree).
    A DIR functionality also has its "label" and "direction"."""
    out: dict[str, dict] = {}
    for c in cases:
        f = out.setdefault(c.functionality, {"kind": c.kind, "description": c.description, "n": 0,
                                             "toxic": c.toxic, "hate": c.hate})
        f["n"] += 1
        for label in LABELS:
            if f[label] != getattr(c, label):
                f[label] = "mixed"
        if c.kind == "DIR":
            f.update(label=c.label, direction=c.direction)
    return out


def predictions(predict, texts: list[str]) -> dict[str, dict[str, float]]:
    """label -> {text: probability} for the labels predict outputs, checked."""
    raw = predict(texts)
    if not isinstance(raw, dict):
        raise ValueError(f"predict returned {type(raw).__name__}; expected a dict label -> array of probabilities")
    out = {}
    for label in LABELS:
        if label not in raw:
            continue  # a binary model may answer one of the two questions
        p = np.asarray(raw[label], dtype=float).reshape(-1)
        if len(p) != len(texts):
            raise ValueError(f"predict: {len(p)} {label} probabilities for {len(texts)} texts; expected one per text")
        if not np.all(np.isfinite(p)) or p.min(initial=0) < 0 or p.max(initial=0) > 1:
            raise ValueError(f"predict: {label} scores outside [0, 1]; expected probabilities, not logits")
        out[label] = dict(zip(texts, p.tolist()))
    if not out:
        raise ValueError(f"predict returned {sorted(raw)}; expected at least one of {', '.join(LABELS)}")
    return out


def score_case(c: Case, label: str, probs: dict, threshold: float) -> tuple[bool, dict] | None:
    """(passed, details) for one case and label, or None when the case does not test that label."""
    p = probs[c.text]
    if c.kind == "MFT":
        expected = getattr(c, label)
        if expected is None:
            return None
        return int(p >= threshold) == expected, {"expected": expected, "got": round(p, 4)}
    p0 = probs[c.original]
    if c.kind == "INV":
        # Same decision as the original: a perturbation that must not matter did not.
        return (p >= threshold) == (p0 >= threshold), {"original": c.original, "expected": int(p0 >= threshold), "got": round(p, 4)}
    if c.label != label:
        return None
    moved = p - p0 if c.direction == "up" else p0 - p
    return moved >= -DIR_TOLERANCE, {"original": c.original, "expected": f"{c.direction} from {p0:.4f}", "got": round(p, 4)}


def run_suite(cases, predict, thresholds=None) -> dict:
    """
    Score a model on the suite. predict(texts) -> {"toxic": probs, "hate": probs} (either or both).
    Returns {"labels", "thresholds", "n_cases", "functionalities": name -> {"kind", "description", "n",
    "labels": label -> {"n", "passed", "pass_rate"}}, "failures": name -> [examples],
    "summary": label -> {"mean_pass_rate", "min_pass_rate", "min_functionality", "below": [names]}}.
    A label the model does not output, or a functionality that does not test it, has no entry.
    """
    cases = list(cases)
    if not cases:
        raise ValueError("run_suite: no cases; expected the list from load_suite")
    thresholds = dict(thresholds or {})
    bad = sorted(set(thresholds) - set(LABELS))
    if bad:
        raise ValueError(f"thresholds: unknown label {bad[0]!r}; expected some of {', '.join(LABELS)}")
    texts = list(dict.fromkeys(t for c in cases for t in (c.text, c.original) if t is not None))
    probs = predictions(predict, texts)
    labels = list(probs)
    thresholds = {label: float(thresholds.get(label, 0.5)) for label in labels}

    table = {name: {"kind": f["kind"], "description": f["description"], "n": f["n"], "labels": {}}
             for name, f in functionalities(cases).items()}
    failures: dict[str, list] = {}
    for c in cases:
        for label in labels:
            scored = score_case(c, label, probs[label], thresholds[label])
            if scored is None:
                continue
            passed, details = scored
            cell = table[c.functionality]["labels"].setdefault(label, {"n": 0, "passed": 0})
            cell["n"] += 1
            cell["passed"] += passed
            shown = failures.setdefault(c.functionality, [])
            if not passed and sum(x["label"] == label for x in shown) < MAX_EXAMPLES:
                shown.append({"text": c.text, "label": label, **details})
    for row in table.values():
        for cell in row["labels"].values():
            cell["pass_rate"] = cell["passed"] / cell["n"]

    summary = {}
    for label in labels:
        rates = {name: row["labels"][label]["pass_rate"] for name, row in table.items() if label in row["labels"]}
        worst = min(rates, key=rates.get) if rates else None
        summary[label] = {"mean_pass_rate": sum(rates.values()) / len(rates) if rates else float("nan"),
                          "min_pass_rate": rates[worst] if rates else float("nan"), "min_functionality": worst,
                          "below": [name for name, r in rates.items() if r < FAIL_BELOW]}
    return {"labels": labels, "thresholds": thresholds, "n_cases": len(cases), "functionalities": table,
            "failures": {k: v for k, v in failures.items() if v}, "summary": summary}


def format_markdown(result: dict) -> str:
    """The pass rates as markdown: one row per functionality, one column per label, then the summary."""
    labels = result["labels"]
    lines = ["| functionality | kind | cases | " + " | ".join(labels) + " |",
             "|---|---|---:|" + "---:|" * len(labels)]
    for name, row in result["functionalities"].items():
        cells = []
        for label in labels:
            cell = row["labels"].get(label)
            cells.append(f"{cell['pass_rate']:.2f}" if cell else "–")  # – : this functionality does not test the label
        lines.append(f"| {name} | {row['kind']} | {row['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| summary | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    s = result["summary"]
    lines.append("| mean pass rate | " + " | ".join(f"{s[label]['mean_pass_rate']:.2f}" for label in labels) + " |")
    lines.append("| lowest | " + " | ".join(f"{s[label]['min_pass_rate']:.2f} ({s[label]['min_functionality']})"
                                          for label in labels) + " |")
    lines.append(f"| below {FAIL_BELOW} | " + " | ".join(", ".join(s[label]["below"]) or "none" for label in labels) + " |")
    return "\n".join(lines) + "\n"
