"""
Which words made the model say it: integrated gradients (Sundararajan, Taly and Yan 2017,
"Axiomatic Attribution for Deep Networks"), over the input embeddings, written out.

The question: the model gives a label's logit F(x) for a text x. How much of it does each word
piece account for? Integrated gradients compares x with a baseline x' that carries no
information (here: every word piece replaced by [PAD], [CLS] and [SEP] kept) and walks the
straight line between the two, adding up the gradient along the way (the paper's eq. 1):

    IG_i(x) = (x_i - x'_i) * integral over a from 0 to 1 of  dF(x' + a (x - x')) / dx_i  da

x is the (T, H) matrix of the text's word embeddings (what the word-embedding lookup gives; the
positions and segments are added inside the model all the same, model.BertEmbeddings), i one of
its T * H numbers. The integral is a sum over `steps` points of the line (the paper's eq. 3, a
Riemann sum; the trapezoid rule, the default here, is as cheap and more accurate), and the points
go through the model in batches. Summed over the hidden dimension, IG gives one score per word
piece, and summed over a word's pieces one per word.

Completeness (the paper's axiom, proven by the fundamental theorem of calculus for paths): the
scores add up to F(x) - F(x'), the logit's change from the baseline. The sum computed here is off
by the error of the numerical integral, which shrinks as `steps` grows. That is the check the
paper advises, and it is made on every text: where the scores miss the change by more than
max(1% of it, 0.01), the steps are doubled, the points computed kept (halving the spacing adds
only the midpoints), up to max_steps. 64 steps are enough for the 6-layer default model; the
12-layer one has texts whose logit rises in a near-step somewhere on the line and needs up to
512 (docs/explain.md has the figures). Each answer says how many steps it took and its error.

F is a label's logit: the sigmoid's input of a multi-label model (each label its own yes/no
question), or a class's logit (the softmax's input) otherwise, measured from the mean of the
model's logits: a softmax ignores whatever all the logits share (adding 5 to each changes no
probability), and a class's raw logit can rise with a word that raises the other class's more.
For two classes, class 1's centred logit is half the log-odds (l1 - l0) / 2, positive exactly
when the model says class 1. A logit rather than the probability: it is what the model adds up,
and the probability saturates (near 0 or 1 every word's gradient vanishes). Integrated gradients
are linear in F, so the centred scores are the raw ones minus their mean over the classes.

    import explain, runs
    net, tokenizer, info = runs.load_run("runs/quick/teacher")
    [result] = explain.explain(net, tokenizer, ["you are an idiot"], max_length=128)
    result["labels"]["toxic"]["words"]   # [{"text": "you", "start": 0, "end": 3, "score": 0.02}, ...]

This runs the plain fp32 model (model.py): the gradients of the fast path's bf16 arithmetic would
add their rounding to the integral. plain_copy() makes one from any prepared model; an int8 run is
explained through its fp32 source run (explaining_model). See docs/explain.md for how to read the
scores and what they do not say.
"""

from pathlib import Path

import torch

import lora
import model as M
import precision
import runs

STEPS = 64  # the first number of steps: enough for completeness within 1% on most texts (docs/explain.md)
MAX_STEPS = 1024  # doubled up to this many where they are not
TOLERANCE = 0.01  # completeness: the scores add up to the change within max(1% of it, 0.01)
BASELINES = ("pad", "zero")
RULES = ("trapezoid", "riemann")


# -----------------------------------------------------------------------------
# The model that is explained: plain fp32, no dropout, no gradients for its weights


def plain_copy(net) -> M.BertForSequenceClassification:
    """A plain fp32 copy of `net` (model.py's modules, LoRA adapters folded in), on net's device, in
    eval mode, its weights frozen: the gradients flow to the input embeddings only."""
    state = lora.merged_state_dict(net) if lora.lora_layers(net) else net.state_dict()
    plain = M.BertForSequenceClassification(net.config)
    plain.load_state_dict({k: v.float() for k, v in state.items()})
    return plain.to(next(net.parameters()).device).eval().requires_grad_(False)


def source_run(run_dir, info) -> Path:
    """The fp32 run an int8 export was made from (run.json's source_run), looked for as written and
    beside the int8 run."""
    written = Path(info["source_run"])
    for path in (written, Path(run_dir).parent / written.name):
        if (path / runs.RUN_FILE).is_file():
            return path
    raise runs.RunError(f"{run_dir}: an int8 run is explained through its fp32 source run {written}, which is not there "
                        f"(nor {Path(run_dir).parent / written.name}); expected the folder `eval.py export` read")


def explaining_model(net, info=None):
    """(plain fp32 model, note): the model whose gradients explain `net`'s answers, and None. An int8
    model has no gradients worth the name (its weights are rounded, its kernels not differentiable):
    it is explained through the fp32 run it was exported from (`info`, its run.json, says which), and
    the note says so."""
    if precision.is_quantized(net) or (info is not None and info.get("quantized")):
        if info is None or "source_run" not in info:
            raise runs.RunError("an int8 model is explained through its fp32 source run; expected its run.json "
                                "with the source_run that `eval.py export` writes")
        source = source_run(info.dir, info)
        fp32, _, _ = runs.load_run(source)
        return plain_copy(fp32), f"an int8 run: explained through its fp32 source run {source}"
    return plain_copy(net), None


# -----------------------------------------------------------------------------
# Integrated gradients of one text


def path_points(steps: int, rule: str = "trapezoid"):
    """(alphas (K,), weights (K,)): the points a of the line x' + a (x - x') and the weight of each in
    the integral over [0, 1]. riemann: a = 1/m, ..., m/m, each 1/m (the paper's sum). trapezoid:
    a = 0, 1/m, ..., 1, each 1/m but the two ends 1/(2m): exact for a straight line, with an error
    that falls as 1/m^2 instead of 1/m."""
    if steps < 1:
        raise ValueError(f"steps {steps}: expected a number of at least 1")
    if rule == "riemann":
        return torch.arange(1, steps + 1) / steps, torch.full((steps,), 1.0 / steps)
    if rule == "trapezoid":
        weights = torch.full((steps + 1,), 1.0 / steps)
        weights[0] = weights[-1] = 0.5 / steps
        return torch.arange(steps + 1) / steps, weights
    raise ValueError(f"rule {rule!r}: expected one of {', '.join(RULES)}")


def baseline_embeddings(net, input_ids, baseline="pad"):
    """x' (T, H) for one text's ids (T,): each word piece's embedding replaced by [PAD]'s ("pad") or by
    zeros ("zero"); [CLS] and [SEP] keep theirs, so that the baseline is still a sentence of no words
    and the scores go to the words only."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline {baseline!r}: expected one of {', '.join(BASELINES)}")
    table = net.bert.embeddings.word_embeddings
    words = table(input_ids)  # (T, H)
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    special[0] = special[-1] = True  # [CLS] ... [SEP]
    if baseline == "pad":
        filler = table.weight[net.config.pad_token_id].expand_as(words)
    else:
        filler = torch.zeros_like(words)
    return torch.where(special[:, None], words, filler)  # (T, H)


def targets(net, embeds):
    """F (K, C) of K texts of T tokens given as word embeddings (K, T, H), no padding: every label's
    logit, or (one class per text) every class's logit minus the mean of the logits."""
    K, T, _ = embeds.shape
    ones = torch.ones(K, T, dtype=torch.long, device=embeds.device)
    logits = net(inputs_embeds=embeds, attention_mask=ones, token_type_ids=torch.zeros_like(ones)).logits.float()
    return logits if net.config.multilabel else logits - logits.mean(-1, keepdim=True)


def gradient_sum(net, x, x0, alphas, weights, batch_size=64):
    """(C, T, H): the sum over the points a of weight(a) * dF_c/dx at x' + a (x - x'), for every label c.
    The points go through the model batch_size at a time, and one backward pass per label gives every
    point's gradient: the points are independent rows, so d(sum of F_c over the rows)/d(row) is each
    row's own gradient."""
    total = torch.zeros(net.config.num_labels, *x.shape, device=x.device)
    for start in range(0, len(alphas), batch_size):
        a, w = alphas[start:start + batch_size], weights[start:start + batch_size]  # (k,)
        points = (x0 + a[:, None, None] * (x - x0)).requires_grad_(True)  # (k, T, H): on the line from x' to x
        with torch.enable_grad():
            F = targets(net, points)  # (k, C)
            for c in range(F.shape[1]):
                (g,) = torch.autograd.grad(F[:, c].sum(), points, retain_graph=c < F.shape[1] - 1)  # (k, T, H)
                total[c] += (w[:, None, None] * g).sum(0)
    return total


def integrated_gradients(net, input_ids, steps=STEPS, baseline="pad", rule="trapezoid", batch_size=64,
                         tolerance=TOLERANCE, max_steps=MAX_STEPS):
    """
    For one text's ids (T,), [CLS] ... [SEP]: (scores (C, T), F(x) (C,), F(x') (C,), steps taken),
    scores[c, t] the integrated gradient of label c's F summed over the hidden dimension of piece t.
    `net`: a plain model in eval mode (plain_copy). With a tolerance, the steps are doubled until the
    scores add up to F(x) - F(x') within it (complete), or max_steps; None: exactly `steps`.
    """
    device = next(net.parameters()).device
    input_ids = input_ids.to(device)
    with torch.no_grad():
        x = net.bert.embeddings.word_embeddings(input_ids)  # (T, H)
        x0 = baseline_embeddings(net, input_ids, baseline)  # (T, H)
        ends = targets(net, torch.stack([x, x0]))  # (2, C): F(x), F(x')
    alphas, weights = path_points(steps, rule)
    integral = gradient_sum(net, x, x0, alphas.to(device), weights.to(device), batch_size)  # (C, T, H)
    while tolerance is not None and not complete((x - x0) * integral, ends, tolerance) and 2 * steps <= max_steps:
        # Twice the steps: the old points are every other new one, each now weighing half; add the midpoints.
        mids = (2 * torch.arange(steps) + 1) / (2 * steps)
        integral = integral / 2 + gradient_sum(net, x, x0, mids.to(device), torch.full((steps,), 0.5 / steps, device=device),
                                               batch_size)
        steps *= 2
    attributions = (x - x0) * integral  # (C, T, H): the paper's IG, every number of every embedding
    return attributions.sum(-1).cpu(), ends[0].cpu(), ends[1].cpu(), steps  # (C, T), (C,), (C,)


def complete(attributions, ends, tolerance=TOLERANCE) -> bool:
    """Do the attributions (C, T, ...) of every label add up to F(x) - F(x') (ends (2, C)) within
    max(tolerance * |change|, tolerance)?"""
    change = ends[0] - ends[1]
    error = attributions.flatten(1).sum(1) - change
    return bool((error.abs() <= torch.clamp(tolerance * change.abs(), min=tolerance)).all())


# -----------------------------------------------------------------------------
# From word pieces to words, and the answer for a list of texts


def encode_one(tokenizer, text, max_length):
    """(ids, offsets, word ids) of one text, [CLS] ... [SEP], cut to max_length as wordpiece.token_ids
    cuts: the offsets are character spans in `text`; the word ids (None for [CLS], [SEP]) number the
    words of the tokenizer's pre-tokenizer (whitespace and punctuation split them)."""
    e = tokenizer.encode(text)
    ids, offsets, words = list(e.ids), list(e.offsets), list(e.word_ids)
    if len(ids) > max_length:
        keep = max_length - 1
        ids, offsets, words = ids[:keep] + ids[-1:], offsets[:keep] + [(0, 0)], words[:keep] + [None]
    return ids, offsets, words


def words_of(text, offsets, word_ids, scores):
    """[{"text", "start", "end", "score"}] per whole word: the sum of its pieces' scores, its span
    from the first piece's start to the last piece's end."""
    out, index = [], {}
    for (start, end), word, score in zip(offsets, word_ids, scores):
        if word is None:
            continue
        if word not in index:
            index[word] = len(out)
            out.append({"start": start, "end": end, "score": 0.0})
        entry = out[index[word]]
        entry["end"], entry["score"] = max(entry["end"], end), entry["score"] + score
    return [{"text": text[w["start"]:w["end"]], **w} for w in out]


def explain(net, tokenizer, texts, *, max_length=128, labels=None, steps=STEPS, baseline="pad", rule="trapezoid",
            batch_size=64, tolerance=TOLERANCE, max_steps=MAX_STEPS):
    """
    Per text: {"tokens", "cut", "steps", "labels": {label: {"logit", "baseline_logit", "change",
    "attributed", "error", "words", "pieces"}}}. "logit" is F(x): the label's logit, or for a model of
    one class per text the class's logit minus the mean of the logits; change = F(x) - F(x');
    attributed = the sum of the scores; error = attributed - change, completeness's gap (the
    integral's error). "steps": how many the integral took (steps, doubled until the error is
    within tolerance, or max_steps; tolerance None: steps as given). `net` is a plain model
    (plain_copy); labels default to its id2label names.
    """
    labels = labels or [net.config.id2label[i] for i in range(net.config.num_labels)]
    path_points(steps, rule)  # a wrong steps or rule is an error before any work
    out = []
    for text in texts:
        ids, offsets, word_ids = encode_one(tokenizer, text, max_length)
        scores, logit, base, taken = integrated_gradients(net, torch.tensor(ids), steps, baseline, rule, batch_size,
                                                          tolerance, max_steps)
        per_label = {}
        for c, label in enumerate(labels):
            s = scores[c].tolist()
            pieces = [{"piece": tokenizer.id_to_token(i), "start": a, "end": b, "score": v}
                      for i, (a, b), w, v in zip(ids, offsets, word_ids, s) if w is not None]
            change, attributed = float(logit[c] - base[c]), float(sum(s))
            per_label[label] = {"logit": float(logit[c]), "baseline_logit": float(base[c]), "change": change,
                                "attributed": attributed, "error": attributed - change,
                                "words": words_of(text, offsets, word_ids, s), "pieces": pieces}
        out.append({"tokens": len(ids), "cut": len(tokenizer.encode(text).ids) > max_length, "steps": taken,
                    "labels": per_label})
    return out


def completeness_ok(label_result, tolerance=TOLERANCE) -> bool:
    """Do a label's scores add up to its change within max(tolerance * |change|, tolerance)?"""
    return abs(label_result["error"]) <= max(tolerance * abs(label_result["change"]), tolerance)
