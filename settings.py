"""
The settings of a training run, in groups: the data, the model, how it trains, the distillation and
LoRA knobs, and how the run is executed. Each field has one line of doc; the command line's help is
built from those docs and the defaults, so neither is written twice.

Where a value comes from, lowest first:

    the defaults below  <  the preset (presets/<name>.toml)  <  its [method] section  <  a flag

run.json keeps them as one flat dict (its "settings"), with the same keys as ever: the groups are for
reading the code and the help, not the file. Each field also says whether it may change when an
interrupted run continues (--resume): how many threads, how often to log or checkpoint, may;
whatever shapes the model may not, and --resume refuses it (changed_on_resume).

Read top to bottom: the field and its metadata; the groups; Settings, all of them in one; presets
and the settings of one method; the checks, and what --resume compares; the parser built from the
groups.
"""

import argparse
import dataclasses
import json
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import classifier
import precision
import pretrained
import runs

PRESETS = Path(__file__).parent / "presets"


class TrainError(RuntimeError):
    """A setting, a flag or an input that training cannot use; train.py prints it as one line."""


def setting(default, doc, *, may_change=False, unset=None, **flag):
    """A settings field and its metadata.

    doc:        one line for the help, without the default (the help adds it)
    may_change: may it differ when the run continues from its checkpoint (--resume)?
    unset:      what None means, for the help ("all", "torch's choice")
    flag:       how the command line spells it, where that is not the plain --name VALUE (or, for a
                yes/no, the flag that says the opposite of its default: --name, or --no-name):
                cli=False (no flag), choices=[...], aliases={"--bf16": "bf16"}, negatable=True
                (a yes/no with both --name and --no-name), on_off=True (--name on|off)
    """
    return field(default=default, metadata={"doc": doc, "may_change": may_change, "unset": unset, **flag})


# -----------------------------------------------------------------------------
# The groups


@dataclass
class RunSettings:
    """the preset, and how this process runs: where, how often it logs and checkpoints, what it may do to --out"""

    method: str = setting("teacher", "teacher, distill, lora or pretrain: the subcommand", cli=False)
    preset: str | None = setting(None, "presets/<NAME>.toml or a .toml path; flags override it", may_change=True)
    device: str = setting("auto", "cpu, cuda, cuda:1 or auto", may_change=True)
    threads: int | None = setting(None, "CPU threads", unset="torch's choice", may_change=True)
    checkpoint_every: int = setting(0, "also checkpoint every N optimizer steps; 0: at the end of each epoch only", may_change=True)
    log_every: int = setting(10, "log the loss every N steps to metrics.jsonl", may_change=True)
    progress: bool = setting(True, "progress bars", may_change=True)
    resume: bool = setting(False, "continue from the run folder's checkpoint (all: keep finished runs, resume the "
                                  "interrupted one)", may_change=True)
    overwrite: bool = setting(False, "replace a finished run in --out (without it a finished run is never changed)",
                              may_change=True)


@dataclass
class DataSettings:
    """the texts, their labels and the split"""

    data: str = setting("davidson", "'davidson', 'hate_speech18' or a .csv/.jsonl path")
    data_mirror: str | None = setting(None, "offline folder holding davidson/ and hate_speech18/ (sets NANOBERT_DATA)",
                                      may_change=True)
    three_class: bool = setting(False, "Davidson: hate / offensive / neither")
    multilabel: bool = setting(False, "the two questions toxic and hate, a sigmoid each (implied by --data "
                                      "davidson+hate_speech18)")
    normalize: bool = setting(True, "Davidson's tweet normalisation (@user, http, RT, &amp;)")
    text_column: str = setting("text", "CSV/JSONL: the text column")
    label_column: str = setting("label", "CSV/JSONL: the label column")
    label_map: str | dict | None = setting(None, 'CSV/JSONL: JSON mapping labels to ids, e.g. \'{"ok": 0, "toxic": 1}\'')
    split: str | None = setting(None, "split manifest to make or reuse", unset="split.json beside the run folder")
    split_seed: int = setting(0, "seed of the 80/10/10 stratified split")
    max_train: int | None = setting(None, "use at most N training texts (a fixed subset)", unset="all")
    max_val: int | None = setting(None, "use at most N validation texts", unset="all")
    max_length: int = setting(64, "tokens per text, longer ones are cut")
    augment: str | None = setting(None, "multi-label: a TOML of training templates (augment.py, e.g. suites/augment.toml) "
                                        "whose texts join the training part only; separate from the behaviour suite's "
                                        "test templates")
    perturb: float = setting(0.0, "share of the real training texts also trained on misspelt (character noise, "
                                  "spacing, leetspeak, casing: augment.perturbed_copies), 0 to 1")


@dataclass
class ModelSettings:
    """the model and what it computes in"""

    model: str = setting(pretrained.DEFAULT_MODEL, "pretrained model: name, folder, or a name under $NANOBERT_MODELS")
    dropout: float | None = setting(None, "override every dropout probability of the model", unset="the model's own")
    precision: str = setting("auto", "auto, fp32 or bf16: what the model computes in (auto: bf16 where a short probe "
                                     "measures it faster here, fp32 elsewhere); bf16 keeps fp32 master weights",
                             aliases={"--bf16": "bf16"})
    fast: bool = setting(True, "off: compute with the plain model as model.py and lora.py write it, without the fast "
                               "path; for reading and checking", on_off=True)


@dataclass
class TrainingSettings:
    """the optimisation"""

    epochs: int = setting(1, "passes over the training texts")
    batch_size: int = setting(32, "global batch size (split across the processes under torchrun)")
    accum: int = setting(1, "batches per optimizer step (gradient accumulation)")
    # LoRA trains 0.7% of the weights starting from B = 0 and needs a much larger learning rate
    # than full fine-tuning (METHOD_DEFAULTS): one original write-up used 2e-5 for LoRA and ended
    # below the majority baseline.
    lr: float = setting(5e-5, "peak learning rate")
    warmup: float = setting(0.1, "fraction of the steps of linear warmup (then linear decay to 0)")
    weight_decay: float = setting(0.01, "AdamW weight decay, not on biases/LayerNorm")
    clip: float = setting(1.0, "gradient-norm clipping, 0 = off")
    class_weights: bool = setting(False, "inverse-frequency class weights in the loss (multi-label: each label's "
                                         "positives weighted by negatives per positive)", negatable=True)
    seed: int = setting(0, "seed for initialisation, dropout and batch order")
    select_label: str | None = setting(None, "multi-label: the label whose validation macro-F1 picks the best epoch "
                                             "(e.g. hate)", unset="the mean over the labels")
    eval_batch_size: int = setting(64, "validation batch size", may_change=True)
    target_precision: float | None = setting(None, "two classes or multi-label: choose the threshold of class 1 (of each "
                                                   "label) on validation as the lowest reaching this precision",
                                             unset="the best macro-F1")
    target_recall: float | None = setting(None, "instead of --target-precision: choose the threshold of class 1 (of each "
                                                "label) on validation as the highest reaching this recall",
                                          unset="the best macro-F1")
    # On by default: dividing the logits by T > 0 keeps every ranking, so a new run decides as it
    # would at T = 1 (the threshold moves with the probabilities); only what the probabilities say changes.
    calibrate: bool = setting(True, "fit a temperature per label on validation (calibration.py), so that a probability "
                                    "means what it says; the thresholds are chosen on the calibrated probabilities "
                                    "(off: T = 1, as before; no decision changes either way)", on_off=True)


@dataclass
class DistillSettings:
    """a student from a teacher run's layers, trained towards the teacher"""

    teacher: str | None = setting(None, "the teacher's run folder")
    ensemble: str | None = setting(None, "more teacher run folders, comma-separated, averaged with --teacher into one "
                                         "ensemble teacher for the soft term (e.g. its other seeds); the student copies "
                                         "--teacher's layers and matches its hidden states", unset="--teacher alone")
    layers: str = setting("odd", "teacher layers the student keeps: odd, even, bottom (first half), top (second half), "
                                 "auto (the half that matters most to the teacher, measured on validation; auto:K keeps "
                                 "K) or a list like 1,2,12")
    importance_texts: int = setting(1000, "auto: validation texts the layer importance is measured on")
    alpha: float = setting(1 / 3, "weight of cross-entropy on the labels")
    beta: float = setting(1 / 3, "weight of KL to the teacher's softened logits")
    gamma: float = setting(1 / 3, "weight of the hidden-state loss")
    temperature: float = setting(2.0, "softmax temperature T of the KL term")
    hidden_loss: str = setting("cosine", "distance between hidden states", choices=["cosine", "mse"])


@dataclass
class LoraSettings:
    """low-rank adapters on a frozen model"""

    base: str | None = setting(None, "a trained run folder (teacher or student) to adapt instead of --model: its data "
                                     "and split are reused, and only the adapters train unless --lora-trainable says more")
    lora_r: int = setting(8, "rank r")
    lora_alpha: float = setting(16, "alpha; the update is scaled by alpha / r")
    lora_dropout: float = setting(0.1, "dropout on the LoRA input")
    lora_targets: str = setting("query,key,value", "comma-separated module-name suffixes")
    lora_trainable: str = setting("classifier", "modules trained in full beside LoRA (with --base: none)")
    export_merged: bool = setting(False, "also write merged/: a plain model, LoRA folded in", may_change=True)


@dataclass
class PretrainSettings:
    """continued masked-language-model pretraining of the encoder on the training texts (mlm.py)"""

    mask_rate: float = setting(0.15, "fraction of each text's tokens the model predicts (BERT's 0.15; 8 in 10 of them "
                                     "become [MASK], 1 in 10 a random token, 1 in 10 stay)")


# -----------------------------------------------------------------------------
# All of them in one


@dataclass
class Settings(PretrainSettings, LoraSettings, DistillSettings, TrainingSettings, ModelSettings, DataSettings, RunSettings):
    """Everything a run is asked to do: every group's fields on one object, so the code reads s.lr and
    s.layers, and dataclasses.asdict(s) is run.json's flat "settings"."""


SETTING_NAMES = [f.name for f in dataclasses.fields(Settings)]
# What may differ when an interrupted run continues; everything else shapes the model it trains.
MAY_CHANGE_ON_RESUME = {f.name for f in dataclasses.fields(Settings) if f.metadata["may_change"]}
# Pretraining: BERT's own peak learning rate, as task-adaptive pretraining (Gururangan et al. 2020) used it.
METHOD_DEFAULTS = {"teacher": {}, "distill": {}, "lora": {"lr": 5e-4}, "pretrain": {"lr": 1e-4}}
# A student learns on its teacher's data and split, LoRA on a trained run on that run's, unless told otherwise.
INHERITED = ("data", "data_mirror", "three_class", "multilabel", "augment", "perturb", "normalize", "text_column", "label_column", "label_map",
             "split", "split_seed", "max_length", "max_train", "max_val")


# -----------------------------------------------------------------------------
# Presets, and the settings of one method


def load_preset(name):
    if not name:
        return {}
    path = Path(name) if name.endswith(".toml") else PRESETS / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS.glob("*.toml"))
        raise TrainError(f"{path}: no such preset; expected one of {known} or a .toml file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise TrainError(f"{path}: not valid TOML ({e})") from None


def parent_run(flag, folder):
    """The settings of the run a new one builds on (--teacher, --base), or a clear error."""
    try:
        return runs.read_info(folder)
    except runs.RunError as e:
        raise TrainError(f"--{flag} {folder}: {e}") from None


def resolve(args, method) -> Settings:
    """The settings of one method: a flag given > the preset's [method] > the preset > defaults."""
    preset = load_preset(args.preset)
    section = preset.get(method, {})
    unknown = [k for k in list(preset) + list(section) if k not in SETTING_NAMES and k not in METHOD_DEFAULTS]
    if unknown:
        raise TrainError(f"preset {args.preset}: unknown setting {unknown[0]!r}; expected one of the train.py flags")
    cfg = dict(METHOD_DEFAULTS[method])
    cfg.update({k: v for k, v in preset.items() if not isinstance(v, dict)})
    cfg.update(section)
    given = {k: v for k, v in vars(args).items() if v is not None and k in SETTING_NAMES}
    flag, parent = ("teacher", given.get("teacher")) if method == "distill" else ("base", given.get("base"))
    if parent and method in ("distill", "lora"):
        info = parent_run(flag, parent)
        cfg.update({k: info.settings[k] for k in INHERITED if k in info.settings})
    if method == "lora" and given.get("base"):
        # The base is a trained classifier: its pooler and head are already fit, so by default
        # only the adapters learn.
        if given.get("model"):
            raise TrainError("--base and --model both name the model to adapt; expected one of them")
        cfg.update(model=given["base"], lora_trainable="")
    cfg.update(given)
    cfg.update(method=method, preset=args.preset)
    return Settings(**cfg)


# -----------------------------------------------------------------------------
# The checks


def check(s: Settings):
    """Refuse settings that cannot work, naming the flag, before anything is loaded or written."""
    positive = {"epochs": s.epochs, "batch_size": s.batch_size, "eval_batch_size": s.eval_batch_size, "accum": s.accum,
                "lr": s.lr, "max_length": s.max_length, "log_every": s.log_every, "lora_r": s.lora_r,
                "lora_alpha": s.lora_alpha, "temperature": s.temperature, "max_train": s.max_train,
                "max_val": s.max_val, "threads": s.threads, "mask_rate": s.mask_rate}
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise TrainError(f"--{name.replace('_', '-')} {value}: expected a number above 0")
    in_range = {"warmup": (s.warmup, 0, 1), "dropout": (s.dropout, 0, 0.999), "lora_dropout": (s.lora_dropout, 0, 0.999),
                "weight_decay": (s.weight_decay, 0, 1), "alpha": (s.alpha, 0, 1e9), "beta": (s.beta, 0, 1e9),
                "gamma": (s.gamma, 0, 1e9), "clip": (s.clip, 0, 1e9), "checkpoint_every": (s.checkpoint_every, 0, 1e18),
                "mask_rate": (s.mask_rate, 0, 1), "perturb": (s.perturb, 0, 1)}
    for name, (value, low, high) in in_range.items():
        if value is not None and not low <= value <= high:
            raise TrainError(f"--{name.replace('_', '-')} {value}: expected a number in [{low}, {high:g}]")
    for name in ("target_precision", "target_recall"):  # a target of 0 is reached by any threshold: it chooses nothing
        value = getattr(s, name)
        if value is not None and not 0 < value <= 1:
            raise TrainError(f"--{name.replace('_', '-')} {value}: expected a number in (0, 1]")
    if s.target_precision is not None and s.target_recall is not None:
        raise TrainError(f"--target-precision {s.target_precision} and --target-recall {s.target_recall}: expected one of "
                         "them (a threshold is chosen for one target)")
    if s.max_length < 2:
        raise TrainError(f"--max-length {s.max_length}: expected at least 2 (room for [CLS] and [SEP])")
    if s.precision not in precision.PRECISIONS:
        raise TrainError(f"--precision {s.precision!r}: expected one of {', '.join(precision.PRECISIONS)}")
    for name in ("fast", "calibrate"):  # a preset's `fast = "off"`; the flag itself only takes on or off
        if not isinstance(getattr(s, name), bool):
            raise TrainError(f"--{name} {getattr(s, name)!r}: expected on or off (in a preset: true or false)")
    try:
        precision.check(s.precision, fast=s.fast)  # bf16 with --fast off: refused before anything is loaded
    except ValueError as e:
        raise TrainError(str(e)) from None
    if s.resume and s.overwrite:
        raise TrainError("--resume and --overwrite: expected one of them (continue a run, or start it again)")
    if isinstance(s.label_map, str):
        try:
            label_map = json.loads(s.label_map)
        except json.JSONDecodeError as e:
            raise TrainError(f"--label-map {s.label_map!r}: not valid JSON ({e.msg}); expected e.g. '{{\"ok\": 0, \"toxic\": 1}}'") from None
        if not isinstance(label_map, dict):
            raise TrainError(f"--label-map {s.label_map!r}: expected a JSON object of label -> id")
    try:
        classifier.pick_device(s.device)
    except ValueError as e:
        raise TrainError(f"--device: {e}") from None


def changed_on_resume(recorded: dict, s: Settings) -> list:
    """[(name, recorded value, value now)]: the settings of s that differ from those an interrupted run
    recorded (run.json's "settings"), less those that may change on resume. A setting that an older
    run.json lacks is not compared: nothing says what it was."""
    now = dataclasses.asdict(s)
    return [(name, recorded[name], now[name]) for name in SETTING_NAMES
            if name not in MAY_CHANGE_ON_RESUME and name in recorded and not same_setting(name, recorded[name], now[name])]


def same_setting(name, old, new):
    """Equal, or the same thing spelled another way: a file by another path (relative vs absolute), or
    the LoRA modules with the pooler that the run itself added (methods.build_lora, a base without one)."""
    if old == new:
        return True
    if name == "ensemble" and isinstance(old, str) and isinstance(new, str):  # folder by folder
        olds, news = old.split(","), new.split(",")
        return len(olds) == len(news) and all(same_setting("teacher", a, b) for a, b in zip(olds, news))
    if name == "lora_trainable" and isinstance(new, str):
        return old == ",".join([m for m in new.split(",") if m] + ["pooler"])
    if isinstance(old, str) and isinstance(new, str) and Path(old).exists() and Path(new).exists():
        return os.path.samefile(old, new)
    return False


def resume_refusal(run_dir, changed) -> str:
    """One line naming what differs, old and new: the subcommand alone if that is what differs (the rest follows)."""
    method = [c for c in changed if c[0] == "method"]
    if method:
        _, old, new = method[0]
        return (f"--resume {run_dir}: the run was started by `train.py {old}`, this is `train.py {new}`; expected "
                f"`train.py {old} ... --resume`, or --overwrite to train a {new} run in its place")
    shown = [f"--{name.replace('_', '-')} {new!r} (run.json: {old!r})" for name, old, new in changed[:3]]
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    verb = "differs" if len(changed) == 1 else "differ"
    return (f"--resume {run_dir}: {', '.join(shown)}{more} {verb} from the settings the run started with; a resumed "
            "run keeps them: expected the same, or --overwrite to start again with the new ones")


# -----------------------------------------------------------------------------
# The command line, built from the groups. Every flag defaults to None ("not given"), so that
# resolve() can tell a flag from a default; the help shows the real default.


def flag_type(f):
    """str, int, float or bool: the annotation without its None."""
    kinds = [t for t in typing.get_args(f.type) or (f.type,) if t is not type(None)]
    return kinds[0]


def shown(value):
    """A default as the help writes it: 0.1, 16, 5e-5."""
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def help_text(f):
    """The field's doc and its default: its method defaults too (lr: lora's), or what None means."""
    meta, doc = f.metadata, f.metadata["doc"]
    if meta["unset"]:
        default = f"default: {meta['unset']}"
    elif f.default is None:
        return doc
    else:
        per_method = "".join(f"; {m} {shown(d[f.name])}" for m, d in METHOD_DEFAULTS.items() if f.name in d)
        default = f"default {('on' if f.default else 'off') if meta.get('on_off') else shown(f.default)}{per_method}"
    return f"{doc[:-1]}; {default})" if doc.endswith(")") else f"{doc} ({default})"


def on_off(text):
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected on or off")
    return text == "on"


def add_flag(group, f, required=False):
    meta, name, kind = f.metadata, "--" + f.name.replace("_", "-"), flag_type(f)
    if kind is bool and meta.get("on_off"):
        group.add_argument(name, type=on_off, metavar="on|off", help=help_text(f))
    elif kind is bool:  # a yes/no: the flag says the opposite of the default
        if f.default:
            group.add_argument("--no-" + name[2:], dest=f.name, action="store_const", const=False, help="without " + meta["doc"])
        else:
            group.add_argument(name, action="store_const", const=True, help=meta["doc"])
        if meta.get("negatable"):
            group.add_argument("--no-" + name[2:], dest=f.name, action="store_const", const=False,
                               help=f"not {name}, whatever the preset says")
    else:
        group.add_argument(name, type=None if kind is str else kind, choices=meta.get("choices"), required=required,
                           help=help_text(f))
    for alias, value in meta.get("aliases", {}).items():
        group.add_argument(alias, dest=f.name, action="store_const", const=value, help=f"the same as {name} {value}")


def add_group(parser, title, group, skip=(), required=()):
    """An argument group of the help, one flag per field of the settings group."""
    g = parser.add_argument_group(title, group.__doc__)
    for f in dataclasses.fields(group):
        if f.metadata.get("cli", True) and f.name not in skip:
            add_flag(g, f, required=f.name in required)


def add_common(p, model=True):
    add_group(p, "run", RunSettings)
    add_group(p, "data", DataSettings)
    add_group(p, "model", ModelSettings, skip=() if model else ("model",))  # a student's model is its teacher's
    add_group(p, "training", TrainingSettings)


def build_parser(description=None):
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("teacher", help="full fine-tuning of a pretrained model")
    p.add_argument("--out", required=True, help="run folder")
    add_common(p)
    p = sub.add_parser("distill", help="a student from a teacher run's layers, trained towards the teacher")
    p.add_argument("--out", required=True, help="run folder")
    add_group(p, "distillation", DistillSettings, required=("teacher",))
    add_common(p, model=False)
    p = sub.add_parser("lora", help="LoRA on a pretrained model, or on a trained run (--base)")
    p.add_argument("--out", required=True, help="run folder")
    add_group(p, "LoRA", LoraSettings)
    add_common(p)
    p = sub.add_parser("pretrain", help="continued masked-language-model pretraining of a pretrained encoder on the "
                       "training part of the split (a model for teacher or lora --model)")
    p.add_argument("--out", required=True, help="run folder")
    add_group(p, "masked-language-model pretraining", PretrainSettings)
    add_common(p)
    p = sub.add_parser("all", help="teacher -> odd student -> even student -> LoRA, one split, then the report")
    p.add_argument("--runs", help="folder for the runs, the split and the report (default runs/<preset or data>)")
    p.add_argument("--extended", action="store_true",
                   help="also: students from the auto, bottom and top layers, LoRA on the best student (by validation "
                   "macro-F1), and int8 exports of the teacher, that student and its LoRA")
    for method in ("teacher", "distill", "lora"):
        p.add_argument(f"--{method}-lr", type=float, help=f"learning rate of the {method} run")
    add_group(p, "distillation", DistillSettings, skip=("teacher", "ensemble"))  # `all` trains the teacher itself
    add_group(p, "LoRA", LoraSettings, skip=("base",))
    add_common(p)
    return parser
