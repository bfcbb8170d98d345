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

The suite lives in suites/behaviour.toml (its header has the labelling rules); its templates are
filled in by templates.py, the engine the training templates (augment.py) use too, which also holds
the perturbations (spelling variants for MFT, casing/punctuation/emoji for INV). Read top to bottom:
  1. the case;
  2. loading the suite: every template rendered, every mistake an error naming the file and template;
  3. scoring a model: run_suite(cases, predict) and format_markdown(result) for the report.

Rendering is deterministic: the target group and the person's name are swept (every group, every
name), the other fillers are sampled with a seed derived from the template id, and INV/DIR cases
drawn from other functionalities are sampled with a seed derived from the functionality name.

This file imports templates.py and bootstrap.py (the intervals of the pass rates) from the project; it
needs numpy and the standard library besides.
"""

import itertools
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import bootstrap
import templates as T
from templates import TemplateError

LABELS = ("toxic", "hate")
DEFAULT_SUITE = Path(__file__).parent / "suites" / "behaviour.toml"
KINDS = ("MFT", "INV", "DIR")
DIRECTIONS = ("up", "down")
DIR_TOLERANCE = 0.05  # a DIR case fails only if the probability moves the wrong way by more than this
FAIL_BELOW = 0.5  # the summary lists the functionalities whose pass rate is below this
MAX_EXAMPLES = 3  # failing texts kept per functionality and label
DEFAULT_COMBOS = 2  # filler combinations per template, besides the swept group and name
# What the brackets of a pass rate are (every table of pass rates says it):
INTERVALS = ("95% cluster bootstrap intervals over the suite's templates (a case's template is its cluster, drawn "
             "within the functionality that wrote it), and over seeds where a model has several; each interval alone, "
             "not adjusted: no conclusion is worded from them")

# -----------------------------------------------------------------------------
# 1. The case


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


# -----------------------------------------------------------------------------
# 2. Loading the suite

FUNCTIONALITY_KEYS = {
    "MFT": {"kind", "description", "toxic", "hate", "templates", "combos", "perturb", "perturb_fields", "slurs"},
    "INV": {"kind", "description", "templates", "combos", "source", "perturb", "swap", "n"},
    "DIR": {"kind", "description", "label", "direction", "templates", "combos", "source", "perturb", "swap", "append", "n"},
}


def load_suite(path=DEFAULT_SUITE) -> list[Case]:
    """Every case of the suite file, in file order. ValueError naming the file and template on a mistake."""
    return T.load(path, build_suite, "suite file", DEFAULT_SUITE)


def build_suite(raw: dict) -> list[Case]:
    unknown = sorted(set(raw) - {"groups", "fillers", "slurs", "functionality"})
    if unknown:
        raise TemplateError(f"unknown top-level table {unknown[0]!r}; expected groups, fillers, slurs and functionality")
    vocab = T.read_vocab(raw)
    specs = raw.get("functionality")
    if not isinstance(specs, dict) or not specs:
        raise TemplateError("no [functionality.NAME] tables; expected at least one")
    by_name: dict[str, list[Case]] = {}
    tie = itertools.count()  # INV/DIR group ids, unique over the whole suite
    for name, spec in specs.items():
        if not isinstance(spec, dict):
            raise TemplateError(f"functionality {name}: not a table; expected [functionality.{name}]")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise TemplateError(f"functionality {name}: kind {kind!r}; expected one of {', '.join(KINDS)}")
        extra = sorted(set(spec) - FUNCTIONALITY_KEYS[kind])
        if extra:
            raise TemplateError(f"functionality {name}: unknown field {extra[0]!r}; expected some of {sorted(FUNCTIONALITY_KEYS[kind])}")
        if not isinstance(spec.get("description"), str) or not spec["description"].strip():
            raise TemplateError(f"functionality {name}: no description; expected description = \"what it tests\"")
        if kind == "MFT":
            by_name[name] = mft_cases(name, spec, specs, vocab)
        else:
            by_name[name] = derived_cases(name, spec, specs, vocab, by_name, tie)
    return [case for cases in by_name.values() for case in cases]


def template_entries(name: str, spec: dict, specs: dict) -> list:
    """The functionality's raw templates; `templates = "other"` reuses another functionality's list."""
    templates = spec.get("templates")
    if isinstance(templates, str):
        other = specs.get(templates, {}).get("templates") if isinstance(specs.get(templates), dict) else None
        if not isinstance(other, list):
            raise TemplateError(f"functionality {name}: templates = {templates!r} names no functionality with a list of templates; "
                                "expected the name of one")
        templates = other
    if not isinstance(templates, list) or not templates:
        raise TemplateError(f"functionality {name}: no templates; expected templates = [\"...\", ...]")
    return templates


def expected_label(name: str, tid: str, spec: dict, label: str) -> int:
    value = spec.get(label)
    if value is None:
        raise TemplateError(f"template {tid}: no expected {label!r} in [functionality.{name}]; expected {label} = 0 or 1")
    if isinstance(value, bool) or value not in (0, 1):
        raise TemplateError(f"template {tid}: {label} = {value!r} in [functionality.{name}]; expected {label} = 0 or 1")
    return int(value)


def fillings(tid: str, texts: tuple, groups: list | None, vocab: T.Vocab, spec: dict):
    """Yield (values, target group id, fillers) for every filling of a template (or pair): templates.render
    with the identity group (with its slur, if any) and the name swept, every group that has the fields
    the template needs and every name; the other placeholders take `combos` sampled combinations
    (seeded by the template id), the same for every group, so that renders differing only in the group
    can be compared (INV). `fillers` records the choices: the [fillers] values, the group as ("group", id)."""
    needed = T.bases(texts)
    if T.SLUR in needed and not spec.get("slurs"):
        raise TemplateError(f"template {tid}: {{slur}} outside the slur functionality; expected slurs = true in its "
                            "[functionality] table (slurs are used in one functionality only)")
    combos = spec.get("combos", DEFAULT_COMBOS)
    if isinstance(combos, bool) or not isinstance(combos, int) or combos < 1:
        raise TemplateError(f"template {tid}: combos = {combos!r}; expected a positive number of filler combinations")
    bound = any(b in T.GROUP_FIELDS or b == T.SLUR for b in needed)  # a group placeholder, not only a named target
    for values, g in T.render(tid, texts, groups, vocab, combos, tid, sweep=("name", "group")):
        filled = {b: values[b] for b in needed if b in vocab.fillers}
        if g is not None and bound:
            filled["group"] = g["id"]
            if T.SLUR in values:
                filled["slur"] = values[T.SLUR]
        yield values, (g["id"] if g is not None else None), tuple(sorted(filled.items()))


def mft_cases(name: str, spec: dict, specs: dict, vocab: T.Vocab) -> list[Case]:
    perturb = spec.get("perturb")
    if perturb is not None and perturb not in T.WORD_PERTURBATIONS and perturb not in T.TEXT_PERTURBATIONS:
        raise TemplateError(f"functionality {name}: perturb = {perturb!r}; expected one of "
                            f"{', '.join([*T.WORD_PERTURBATIONS, *T.TEXT_PERTURBATIONS])}")
    fields = spec.get("perturb_fields", [])
    if perturb in T.WORD_PERTURBATIONS and not fields:
        raise TemplateError(f"functionality {name}: perturb = {perturb!r} changes words of fillers; "
                            "expected perturb_fields = [\"placeholder\", ...]")
    cases = []
    for i, entry in enumerate(template_entries(name, spec, specs), 1):
        tid = f"{name}#{i}"
        (template,), groups = T.parse_entry(tid, entry)
        toxic, hate = (expected_label(name, tid, spec, label) for label in LABELS)
        if hate and not toxic:
            raise TemplateError(f"template {tid}: hate = 1 with toxic = 0 in [functionality.{name}]; expected toxic = 1 (hate is toxic)")
        if perturb in T.WORD_PERTURBATIONS and not set(fields) & set(T.bases([template])):
            raise TemplateError(f"template {tid}: none of perturb_fields {fields} in {template!r}; expected one of them, "
                                f"for {perturb} to change")
        for values, target, filled in fillings(tid, (template,), groups, vocab, spec):
            text = T.fill(template, values)
            if perturb:
                plain, text = text, T.perturb(template, values, perturb, fields)
                if perturb in T.WORD_PERTURBATIONS and text == plain:
                    raise TemplateError(f"template {tid}: {perturb} leaves {plain!r} unchanged; "
                                        "expected perturb_fields whose fillers it changes")
            cases.append(Case(text, name, "MFT", toxic, hate, target, tid, perturbation=perturb,
                              description=spec["description"], fillers=filled))
    return cases


def derived_cases(name: str, spec: dict, specs: dict, vocab: T.Vocab, by_name: dict, tie) -> list[Case]:
    """INV and DIR cases: from [original, perturbed] template pairs, or from the cases of `source`
    functionalities (defined above) changed by `perturb`, `swap` (another group or name) or `append`."""
    kind, label, direction = spec["kind"], spec.get("label"), spec.get("direction")
    if kind == "DIR" and label not in LABELS:
        raise TemplateError(f"functionality {name}: label = {label!r}; expected one of {', '.join(LABELS)}")
    if kind == "DIR" and direction not in DIRECTIONS:
        raise TemplateError(f"functionality {name}: direction = {direction!r}; expected one of {', '.join(DIRECTIONS)}")

    def case(text, original, target, template, gid, how, filled=()):
        return Case(text, name, kind, None, None, target, template, group=gid, original=original, direction=direction,
                    label=label, perturbation=how, description=spec["description"], fillers=filled)

    ways = [k for k in ("templates", "perturb", "swap", "append") if k in spec]
    if ways == ["templates"]:
        if "source" in spec:
            raise TemplateError(f"functionality {name}: both templates and source; expected template pairs or source cases")
        cases = []
        for i, entry in enumerate(template_entries(name, spec, specs), 1):
            tid = f"{name}#{i}"
            texts, groups = T.parse_entry(tid, entry, pair=True)
            for values, target, filled in fillings(tid, texts, groups, vocab, spec):
                original, text = (T.fill(t, values) for t in texts)
                cases.append(case(text, original, target, tid, next(tie), "pair", filled))
        return cases
    if len(ways) != 1 or "source" not in spec:
        raise TemplateError(f"functionality {name}: expected either templates = [[original, perturbed], ...] or source = [...] "
                         "with one of perturb, swap, append")
    pool = source_cases(name, spec, by_name)
    rng = random.Random(zlib.crc32(name.encode()))
    n = spec.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise TemplateError(f"functionality {name}: n = {n!r}; expected a positive number of source cases to draw")

    def sample(items):
        if n is None or n >= len(items):
            return items
        return [items[i] for i in sorted(rng.sample(range(len(items)), n))]

    cases = []
    if "swap" in spec:
        swap = spec["swap"]
        if swap not in ("group", "name"):
            raise TemplateError(f"functionality {name}: swap = {swap!r}; expected group or name")
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
        bad = [p for p in perturbs if p not in T.TEXT_PERTURBATIONS]
        if bad or not perturbs:
            raise TemplateError(f"functionality {name}: perturb = {bad[0] if bad else perturbs!r}; expected some of {', '.join(T.TEXT_PERTURBATIONS)}")
        for c in sample(pool):
            gid = next(tie)
            for p in perturbs:
                text = T.TEXT_PERTURBATIONS[p](c.text)
                if text != c.text:  # "i hate x" is already lower case: nothing to compare
                    cases.append(case(text, c.text, c.target, c.template, gid, p, c.fillers))
    else:
        append = spec["append"]
        if not isinstance(append, list) or not append or not all(isinstance(a, str) and a.strip() for a in append):
            raise TemplateError(f"functionality {name}: append = {append!r}; expected a list of sentences to add")
        for i, c in enumerate(sample(pool)):
            # Each source case gets one of the sentences, in turn, so that all of them are used.
            cases.append(case(f"{c.text} {append[i % len(append)]}", c.text, c.target, c.template, next(tie), "append", c.fillers))
    if not cases:
        raise TemplateError(f"functionality {name}: no cases; expected source cases that the change applies to")
    return cases


def source_cases(name: str, spec: dict, by_name: dict) -> list[Case]:
    source = spec["source"]
    source = [source] if isinstance(source, str) else source
    if not isinstance(source, list) or not source:
        raise TemplateError(f"functionality {name}: source = {source!r}; expected a list of MFT functionalities")
    pool = []
    for s in source:
        if s not in by_name or not by_name[s] or by_name[s][0].kind != "MFT":
            raise TemplateError(f"functionality {name}: source {s!r} is not an MFT functionality defined above it; "
                             "expected the name of one")
        pool += by_name[s]
    return pool


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


def run_suite(cases, predict, thresholds=None, resamples=1000, seed=0) -> dict:
    """
    Score a model on the suite. predict(texts) -> {"toxic": probs, "hate": probs} (either or both).
    Returns {"labels", "thresholds", "n_cases", "functionalities": name -> {"kind", "description", "n",
    "labels": label -> {"n", "passed", "pass_rate", "low", "high", "by_template"}}, "failures": name ->
    [examples], "summary": label -> {"mean_pass_rate", "mean_low", "mean_high", "min_pass_rate",
    "min_functionality", "below": [names]}}. low / high: the 95% interval of the cluster bootstrap over
    templates (bootstrap.pass_rates; a case's template is its cluster); by_template: template id ->
    [passed, cases], what the interval is computed from. A label the model does not output, or a
    functionality that does not test it, has no entry.
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
            cell = table[c.functionality]["labels"].setdefault(label, {"n": 0, "passed": 0, "by_template": {}})
            cell["n"] += 1
            cell["passed"] += passed
            counts = cell["by_template"].setdefault(c.template, [0, 0])
            counts[0] += int(passed)
            counts[1] += 1
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
                          "mean_low": float("nan"), "mean_high": float("nan"),
                          "min_pass_rate": rates[worst] if rates else float("nan"), "min_functionality": worst,
                          "below": [name for name, r in rates.items() if r < FAIL_BELOW]}
        if rates:  # the intervals: templates resampled (bootstrap.py)
            intervals = bootstrap.pass_rates([{"functionalities": table}], label, resamples, seed)
            for name in rates:
                table[name]["labels"][label].update(low=intervals[name]["low"], high=intervals[name]["high"])
            summary[label].update(mean_low=intervals["mean"]["low"], mean_high=intervals["mean"]["high"])
    return {"labels": labels, "thresholds": thresholds, "n_cases": len(cases), "resamples": resamples, "functionalities": table,
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
            # – : this functionality does not test the label
            cells.append(f"{cell['pass_rate']:.2f} [{cell['low']:.2f}, {cell['high']:.2f}]" if cell else "–")
        lines.append(f"| {name} | {row['kind']} | {row['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| summary | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    s = result["summary"]
    lines.append("| mean pass rate | " + " | ".join(f"{s[label]['mean_pass_rate']:.2f} [{s[label]['mean_low']:.2f}, "
                                                  f"{s[label]['mean_high']:.2f}]" for label in labels) + " |")
    lines.append("| lowest | " + " | ".join(f"{s[label]['min_pass_rate']:.2f} ({s[label]['min_functionality']})"
                                          for label in labels) + " |")
    lines.append(f"| below {FAIL_BELOW} | " + " | ".join(", ".join(s[label]["below"]) or "none" for label in labels) + " |")
    lines += ["", f"In brackets, {result['resamples']:,} resamples: {INTERVALS}."]
    return "\n".join(lines) + "\n"
