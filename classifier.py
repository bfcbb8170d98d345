"""
Using a trained model from Python: a run folder in, labels and probabilities out.

    from classifier import Classifier

    clf = Classifier.from_run("runs/quick/odd")
    for result in clf.predict(["I hate you!", "You're awesome, have a nice day!"]):
        print(result["label"], round(result["score"], 3))

Like `pipeline("text-classification")` it returns one dict per text, and like Detoxify's
`predict` every label's probability comes with it. Texts are tokenized once and sorted by length
into batches (little padding), of a size measured for the machine (choose_batch_size); the model
runs on the device asked for (int8 models on the CPU, where their kernels are). The texts are
checked first (check_texts): strings only, and a blank one gets no prediction, as on the command line.
"""

import math
import threading
from collections.abc import Mapping, Set

import numpy as np
import torch

import batching
import calibration
import explain as E
import machine
import precision as P
import runs

# A labelling batch holds at most this many token positions (texts x the longest): 64 tweets of 32
# tokens. Measured labelling a 6 MB CSV with the 6-layer model in bf16 (docs/predict-memory.md):
# 4,096 took 50-90 MiB more at the peak and was 1-2% faster.
BATCH_TOKENS = 2048
NO_LABEL = "none"  # the verdict of a multi-label model that says no to every label
EXPLAINER_LOCK = threading.Lock()  # one plain copy per Classifier, made by the first thread that asks


def is_blank(text) -> bool:
    """Only spaces, line breaks or invisible characters (control, format such as U+200F): nothing to classify."""
    return not "".join(ch for ch in str(text) if ch.isprintable()).strip()


def describe(value) -> str:
    """What a value that is not a text is, in a few words."""
    if value is None:
        return "None"
    if isinstance(value, float) and math.isnan(value):
        return "NaN (a missing value, as pandas reads an empty cell: drop or fill it first)"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} (decode it first, e.g. text.decode('utf-8'))"
    shown = repr(value)
    return f"{type(value).__name__} {shown[:40] + '…' if len(shown) > 40 else shown}"


def check_texts(texts) -> list:
    """texts as a list of strings: a str is one text; a list or tuple of strings (or another sequence of
    them, such as a pandas column) is taken as it is. Anything else is a TypeError in one line that names
    the first wrong item by its index and what it is: None, NaN, bytes, a number; a dict is refused
    whole (classifying its keys is never what was meant), and so is a set (it has no order)."""
    if isinstance(texts, str):
        return [texts]
    why = {Mapping: " (its keys are not the texts to classify)", Set: " (it has no order to give the results in)"}
    if isinstance(texts, (bytes, bytearray, Mapping, Set)) or not hasattr(texts, "__iter__"):
        kind = next((f"a {type(texts).__name__}{say}" for base, say in why.items() if isinstance(texts, base)), describe(texts))
        raise TypeError(f"texts: {kind}; expected a string or a list or tuple of strings")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]: {describe(text)}; expected a string")
    return texts


def pick_device(name="auto"):
    """'auto': a GPU when there is one, else the CPU. An unavailable device is a ValueError that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: torch sees no CUDA GPU; expected cpu or auto")
    return device


def device_of(net):
    return next(net.parameters()).device


def sync(device):
    # CUDA runs asynchronously: a clock read right after a launch measures the launch, not the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict_logits(net, loader):
    """Logits (N, C) on the CPU, in the order of the loader's texts."""
    net.eval()
    device = device_of(net)
    logits = torch.empty(len(loader.ids), net.config.num_labels)
    for batch in loader:
        out = net(*(batch[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids"))).logits.float()
        logits[batch["index"]] = out.cpu()
    return logits


def predict_probs(net, loader, temperatures=None):
    """Probabilities (N, C) on the CPU, in the order of the loader's texts: of each class (softmax), or
    for a multi-label model of each label's yes (a sigmoid per label); at the temperatures (C,) a run
    fitted on validation (run_temperatures), None: the model's own (T = 1)."""
    return calibration.probabilities(predict_logits(net, loader), getattr(net.config, "multilabel", False), temperatures)


def run_temperatures(net, info):
    """(C,) the divisor of each logit column, from run.json's "temperatures" (calibration.py), or None:
    a run without them (made before calibration, or with --calibrate off) keeps T = 1."""
    if not info.get("temperatures"):
        return None
    names = [net.config.id2label[i] for i in range(net.config.num_labels)]
    return calibration.per_column(info["temperatures"], names, getattr(net.config, "multilabel", False))


def choose_batch_size(net, computed_in="fp32") -> int:
    """
    The batch size to label with on the machine it runs on: on the CPU, the fastest per text of one of
    the model's encoder layers as it will run (machine.best_batch_size: measured once per machine,
    model shape and arithmetic, then read from the cache folder); 64 elsewhere. computed_in:
    "fp32" or "bf16", what the layer takes (precision.computed_in; an int8 model takes fp32).
    """
    device = device_of(net)
    if device.type != "cpu":
        return 64
    c = net.config
    shape = {"ffn": c.intermediate_size, "heads": c.num_attention_heads, "int8": P.is_quantized(net),
             "fast": any(type(m).__module__ == "fast" for m in net.modules())}
    return machine.best_batch_size(net.bert.encoder.layer[0], c.hidden_size, P.DTYPES[computed_in], shape)["batch_size"]


class Classifier:
    """A trained run, ready to label texts."""

    def __init__(self, net, tokenizer, info, *, batch_size=None, computed_in="fp32"):
        """batch_size None: chosen for the machine (choose_batch_size)."""
        self.net, self.tokenizer, self.info = net.eval(), tokenizer, info
        self.max_length = int(info.get("max_length", 128))
        self.batch_size = batch_size or choose_batch_size(self.net, computed_in)
        self.labels = [net.config.id2label[i] for i in range(net.config.num_labels)]
        self.multilabel = net.config.multilabel
        # Multi-label: the yes/no threshold of each label, chosen on validation when the run was trained.
        self.thresholds = {label: float((info.get("thresholds") or {}).get(label, 0.5)) for label in self.labels} \
            if self.multilabel else None
        # Two classes: the threshold on class 1's probability chosen on validation (None: a run made before
        # two-class runs had one, or more classes; then the most probable class).
        self.threshold = None if self.multilabel else runs.decision_threshold(info)
        # The temperatures fitted on validation (None: T = 1): predict_proba's probabilities are calibrated,
        # and the thresholds were chosen on them.
        self.temperatures = run_temperatures(net, info)
        self.unfinished = None  # from_run: "unfinished, epoch k of n" for a model of an unfinished run

    @classmethod
    def from_run(cls, run_dir, *, device="auto", precision="auto", batch_size=None, fast=True, allow_unfinished=False):
        """The model of a run folder written by train.py (a LoRA run merged into its base), computing
        in `precision` (auto: bf16 where it measures faster here, else fp32; precision.py), on the
        fast path or (fast False) as model.py writes it; batch_size None: chosen for the machine.
        An unfinished run (interrupted, or still training) is a RunError unless allow_unfinished;
        then self.unfinished says so ("unfinished, epoch 1 of 3") and so does every result of predict."""
        net, tokenizer, info = runs.load_run(run_dir)  # a damaged run is named as such first
        note = runs.check_finished(run_dir, allow_unfinished)
        device = torch.device("cpu") if info.get("quantized") else pick_device(device)  # int8 kernels are CPU kernels
        choice = P.choose(precision, device, fast=fast, config=net.config)
        P.prepare(net.to(device), choice, inference=True, keep_masters=False)  # it only labels: no fp32 copy kept
        clf = cls(net, tokenizer, info, batch_size=batch_size, computed_in=P.computed_in(net, choice))
        clf.unfinished = note
        return clf

    def predict_proba(self, texts) -> np.ndarray:
        """(N, C) probabilities, columns in the order of self.labels, at the run's temperatures
        (self.temperatures: calibrated on validation where run.json has them); a row of NaN for a blank
        text (is_blank: nothing to classify)."""
        texts = check_texts(texts)
        probs = np.full((len(texts), len(self.labels)), np.nan, dtype=np.float32)
        keep = [i for i, t in enumerate(texts) if not is_blank(t)]
        if keep:
            # Sorted by length, at most batch_size texts and BATCH_TOKENS token positions a batch: long
            # texts go fewer at a time, so the memory of a batch does not grow with their length; and
            # few shapes of batch, so the kernels kept for each shape do not grow with the texts labelled.
            loader = batching.Loader([texts[i] for i in keep], None, self.tokenizer, self.max_length, self.batch_size,
                                     by_length=True, max_tokens=BATCH_TOKENS, few_shapes=True)
            probs[keep] = predict_probs(self.net, loader, self.temperatures).numpy()
        return probs

    def verdict(self, probs) -> tuple[str, float]:
        """(label, probability) of one text, from its probabilities in the order of self.labels. One class
        per text: the most likely class. Multi-label (toxic, hate): the last label said yes to at its
        threshold (hate before toxic: hate is also toxic), or "none" with the largest probability. Two
        classes with a threshold (self.threshold): class 1 where its probability reaches it."""
        p = np.asarray(probs, dtype=float).tolist()
        if self.multilabel:
            yes = [k for k, v in zip(self.labels, p, strict=True) if v >= self.thresholds[k]]
            return (yes[-1], p[self.labels.index(yes[-1])]) if yes else (NO_LABEL, max(p))
        if self.threshold is not None and len(p) == 2:
            best = int(p[1] >= self.threshold)
            return self.labels[best], p[best]
        best = max(range(len(p)), key=p.__getitem__)
        return self.labels[best], p[best]

    def predict(self, texts) -> list[dict]:
        """One dict per text: its verdict, "label" and its probability "score", and every label's probability.
        Multi-label: "decisions" too, the yes or no to each label at its threshold. A blank text gets no
        prediction: "label", "score" and "probabilities" (and "decisions") are None. A model of an
        unfinished run adds "note": "unfinished, epoch k of n"."""
        texts = check_texts(texts)
        out = []
        for text, p in zip(texts, self.predict_proba(texts).tolist(), strict=True):
            if is_blank(text):
                result = {"text": text, "label": None, "score": None, "probabilities": None,
                          **({"decisions": None} if self.multilabel else {})}
            else:
                label, score = self.verdict(p)
                result = {"text": text, "label": label, "score": score, "probabilities": dict(zip(self.labels, p, strict=True))}
                if self.multilabel:
                    result["decisions"] = {k: v >= self.thresholds[k] for k, v in result["probabilities"].items()}
            if self.unfinished:
                result["note"] = self.unfinished
            out.append(result)
        return out

    __call__ = predict

    def token_counts(self, texts) -> list[int]:
        """Tokens per text before cutting ([CLS] and [SEP] counted, as max_length counts them)."""
        return [len(e.ids) for e in self.tokenizer.encode_batch(check_texts(texts))]

    def note_counts(self, texts) -> tuple[int, int]:
        """(texts longer than max_length, texts of unknown tokens only): what notes() reports."""
        unk, special = self.tokenizer.token_to_id("[UNK]"), {self.tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]")}
        encoded = self.tokenizer.encode_batch(check_texts(texts))
        cut = sum(len(e.ids) > self.max_length for e in encoded)
        unknown = sum(all(i == unk for i in e.ids if i not in special) for e in encoded)
        return cut, unknown

    def notes(self, texts, counts=None) -> list[str]:
        """What a user should know about these texts before trusting the answers: texts cut to the
        model's max_length, and texts the vocabulary knows nothing of (all [UNK], e.g. only emoji),
        whose label says more about the model than about the text. counts: note_counts summed over
        the parts of a file labelled part by part, instead of texts."""
        cut, unknown = counts or self.note_counts(texts)
        out = []
        if cut:
            out.append(f"{cut} text(s) longer than {self.max_length} tokens were cut to that length")
        if unknown:
            out.append(f"{unknown} text(s) are unknown tokens only (emoji or a script the vocabulary lacks): "
                       "their labels say little")
        return out

    def explaining_model(self):
        """(plain fp32 model, note): what explain() takes gradients of, made once (explain.explaining_model:
        a copy of this model as model.py computes it, or for an int8 run its fp32 source run)."""
        with EXPLAINER_LOCK:
            if "_explainer" not in self.__dict__:
                self._explainer = E.explaining_model(self.net, self.info)
        return self._explainer

    def explain(self, texts, *, steps=E.STEPS, baseline="pad", rule="trapezoid", tolerance=E.TOLERANCE,
                max_steps=E.MAX_STEPS) -> list[dict]:
        """predict's dict per text, and which words made it (explain.py, integrated gradients):
        "attributions", per label {"logit", "baseline_logit", "change" (the logit's change from the
        baseline of [PAD]s), "attributed" (the scores' sum), "error" (their difference), "words"
        [{"text", "start", "end", "score"}], "pieces"}; "steps" the integral took (doubled from `steps`
        until the error is within tolerance); "method"; "note": None, or that an int8 run was
        explained through its fp32 source; "cut": the text was longer than max_length."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return []
        net, note = self.explaining_model()
        found = E.explain(net, self.tokenizer, texts, max_length=self.max_length, labels=self.labels, steps=steps,
                          baseline=baseline, rule=rule, tolerance=tolerance, max_steps=max_steps)
        method = {"name": "integrated gradients", "steps": steps, "rule": rule, "baseline": baseline, "tolerance": tolerance,
                  "max_steps": max_steps}
        return [{**result, "attributions": e["labels"], "steps": e["steps"], "method": method, "note": note, "cut": e["cut"]}
                for result, e in zip(self.predict(texts), found, strict=True)]
