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

The templates are filled in by templates.py, the engine the behaviour suite uses too. Rendering is
deterministic: each template gives up to `n` texts (n of its phenomenon), distinct combinations of
group, name and fillers sampled with a seed derived from `seed` and the template id. Hate spelling
variants misspell filler words with the engine's perturbations. A text rendered twice is kept once;
the same text with two different labels is an error.

The same noise can misspell a share of the real training texts too (perturbed_copies, --perturb):
those are trained on as written and misspelt.

    python augment.py    # counts per phenomenon and per (toxic, hate)
"""

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import templates as T
from templates import TemplateError

DEFAULT_AUGMENT = Path(__file__).parent / "suites" / "augment.toml"
PHENOMENON_KEYS = {"description", "toxic", "hate", "n", "templates", "perturb", "perturb_fields"}
PERTURBATIONS = {**T.WORD_PERTURBATIONS, **T.TEXT_PERTURBATIONS}


@dataclass(frozen=True)
class Example:
    text: str
    toxic: int
    hate: int
    phenomenon: str
    template: str  # "<phenomenon>#<1-based index>"


def load_augment(path=DEFAULT_AUGMENT, seed=0) -> list[tuple[str, list[int]]]:
    """(text, [toxic, hate]) for every distinct augmentation text, in file order. For training only."""
    return [(e.text, [e.toxic, e.hate]) for e in augment_examples(path, seed)]


def augment_examples(path=DEFAULT_AUGMENT, seed=0) -> list[Example]:
    """Every distinct rendered text with its labels, phenomenon and template. ValueError naming the file and template."""
    return T.load(path, lambda raw: build(raw, seed), "augmentation file", DEFAULT_AUGMENT)


def build(raw: dict, seed: int) -> list[Example]:
    unknown = sorted(set(raw) - {"groups", "fillers", "phenomenon"})
    if unknown:
        raise TemplateError(f"unknown top-level table {unknown[0]!r}; expected groups, fillers and phenomenon")
    vocab = T.read_vocab(raw)
    specs = raw.get("phenomenon")
    if not isinstance(specs, dict) or not specs:
        raise TemplateError("no [phenomenon.NAME] tables; expected at least one")
    out: dict[str, Example] = {}
    for name, spec in specs.items():
        toxic, hate, n, perturbs, fields = read_phenomenon(name, spec)
        templates = spec.get("templates")
        if not isinstance(templates, list) or not templates:
            raise TemplateError(f"phenomenon {name}: no templates; expected templates = [\"...\", ...]")
        for i, entry in enumerate(templates, 1):
            tid = f"{name}#{i}"
            (text,), only = T.parse_entry(tid, entry)
            for k, (values, _) in enumerate(T.render(tid, (text,), only, vocab, n, f"{seed}:{tid}")):
                # Spelling variants: the perturbations taken in turn, so that every one is used.
                rendered = misspelt(tid, text, values, perturbs[(k + i) % len(perturbs):] + perturbs, fields) if perturbs else T.fill(text, values)
                e = Example(rendered, toxic, hate, name, tid)
                if rendered in out and (out[rendered].toxic, out[rendered].hate) != (toxic, hate):
                    raise TemplateError(f"template {tid}: {rendered!r} is also rendered by {out[rendered].template} "
                                        "with other labels; expected one pair of labels per text")
                out.setdefault(rendered, e)
    return list(out.values())


def read_phenomenon(name: str, spec) -> tuple:
    if not isinstance(spec, dict):
        raise TemplateError(f"phenomenon {name}: not a table; expected [phenomenon.{name}]")
    extra = sorted(set(spec) - PHENOMENON_KEYS)
    if extra:
        raise TemplateError(f"phenomenon {name}: unknown field {extra[0]!r}; expected some of {sorted(PHENOMENON_KEYS)}")
    labels = [spec.get(label) for label in ("toxic", "hate")]
    if any(isinstance(v, bool) or v not in (0, 1) for v in labels):
        raise TemplateError(f"phenomenon {name}: toxic = {labels[0]!r}, hate = {labels[1]!r}; expected 0 or 1 each")
    if labels == [0, 1]:
        raise TemplateError(f"phenomenon {name}: hate = 1 with toxic = 0; expected toxic = 1 (hate is toxic)")
    n = spec.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TemplateError(f"phenomenon {name}: n = {n!r}; expected a positive number of texts per template")
    perturbs = spec.get("perturb", [])
    if not isinstance(perturbs, list) or any(p not in PERTURBATIONS for p in perturbs):
        raise TemplateError(f"phenomenon {name}: perturb = {perturbs!r}; expected a list of some of {', '.join(PERTURBATIONS)}")
    fields = spec.get("perturb_fields", [])
    if any(p in T.WORD_PERTURBATIONS for p in perturbs) and not fields:
        raise TemplateError(f"phenomenon {name}: perturb changes words of fillers; expected perturb_fields = [\"placeholder\", ...]")
    return labels[0], labels[1], n, perturbs, fields


def misspelt(tid: str, text: str, values: dict, perturbations: list, fields: list) -> str:
    """The text misspelt by the first of `perturbations` that changes it: every word of 3+ letters of its
    perturb_fields fillers (leet leaves "scum" alone: the next one is tried), or the whole text (remove_spaces)."""
    plain = T.fill(text, values)
    for p in perturbations:
        out = T.perturb(text, values, p, fields)
        if out != plain:
            return out
    raise TemplateError(f"template {tid}: no perturbation changes {plain!r}; "
                        f"expected one of perturb_fields {fields} with a word of 3+ letters")


# -----------------------------------------------------------------------------
# Real texts misspelt: the templates' noise on the datasets' own texts
#
# The templates' hate spelling variants teach that a misspelt attack is still an attack, but only in
# their own sentence frames. perturbed_copies applies the same noise to the real training texts: a
# share of them (--perturb) is trained on twice, as written and misspelt, with the same labels.

NOISE = ("swap_chars", "drop_char", "leet", "add_spaces", "mask_vowel", "stretch_vowel", "lower", "upper", "remove_spaces")


def misspell(text: str, rng) -> str:
    """The first of NOISE, in an order drawn, that changes the text: a word-level one on a quarter (at
    least one) of the words of 3+ letters, drawn; casing or the spaces removed on the whole text. The
    text as it is where none would change it."""
    for name in rng.permutation(NOISE):
        if name in T.TEXT_PERTURBATIONS:
            out = T.TEXT_PERTURBATIONS[name](text)
        else:
            words = text.split(" ")
            long = [i for i, w in enumerate(words) if len(w) >= 3 and w.isalpha()]
            for i in rng.choice(long, size=max(1, len(long) // 4), replace=False) if long else []:
                words[i] = T.WORD_PERTURBATIONS[name](words[i])
            out = " ".join(words)
        if out != text:
            return out
    return text


def perturbed_copies(texts, labels, rate: float, seed: int = 0) -> tuple[list, list]:
    """(texts, labels) of misspelt copies of round(rate * N) of the texts, drawn without replacement
    (deterministic from seed), each with its text's labels; a copy equal to its text is left out."""
    rng = np.random.default_rng([seed, 7])
    chosen = np.sort(rng.choice(len(texts), size=round(rate * len(texts)), replace=False))
    copies = [(misspell(texts[i], rng), labels[i]) for i in chosen]
    kept = [(t, y) for (t, y), i in zip(copies, chosen, strict=True) if t != texts[i]]
    return [t for t, _ in kept], [y for _, y in kept]


if __name__ == "__main__":
    examples = augment_examples()
    print(f"{len(examples)} texts from {DEFAULT_AUGMENT}")
    for (toxic, hate), count in sorted(Counter((e.toxic, e.hate) for e in examples).items()):
        print(f"  toxic={toxic} hate={hate}: {count}")
    for name, count in Counter(e.phenomenon for e in examples).items():
        e = next(e for e in examples if e.phenomenon == name)
        print(f"  {name:32s} ({e.toxic}, {e.hate}) {count:4d}   e.g. {e.text}")
