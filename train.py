"""
Train the arms of the comparison with one plain, explicit loop:

    python train.py teacher --preset quick                      # full fine-tuning of the pretrained model
    python train.py distill --preset quick --teacher runs/quick/teacher --layers odd
    python train.py lora    --preset quick                      # LoRA on the pretrained model
    python train.py lora    --preset quick --base runs/quick/odd    # LoRA on a trained student
    python train.py all     --preset quick                      # teacher -> odd -> even -> LoRA -> report
    python train.py all     --preset quick --extended           # ... + auto/bottom/top students, LoRA on the
                                                                #     best student, int8 exports

Every flag overrides the preset (presets/<name>.toml), which overrides the defaults of Settings.
What a run folder holds is runs.py's business. A finished run is never changed, except by
--overwrite; an unfinished one continues with --resume.

Read top to bottom: the settings; setting up a run (data, model, loaders, optimizer, folder);
one epoch; finishing (summary, model card); `all`; the command line.

Several processes: `torchrun --nproc_per_node N train.py ...` trains with DistributedDataParallel
(gloo on CPU, nccl on GPU); --batch-size stays the global batch, split across the processes.
"""

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import shutil
import signal
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import classifier
import data
import distill
import files
import lora
import metrics
import model as M
import precision
import pretrained
import report
import runs

PRESETS = Path(__file__).parent / "presets"


class TrainError(RuntimeError):
    pass


# -----------------------------------------------------------------------------
# Settings: defaults < preset < preset's [method] < flags


@dataclass
class Settings:
    """Everything a run is asked to do; written to run.json as its "settings"."""

    method: str = "teacher"
    preset: str | None = None
    # data
    data: str = "davidson"
    data_mirror: str | None = None
    three_class: bool = False
    multilabel: bool = False  # the two questions toxic / hate (implied by data like "davidson+hate_speech18")
    normalize: bool = True
    text_column: str = "text"
    label_column: str = "label"
    label_map: str | dict | None = None
    split: str | None = None
    split_seed: int = 0
    max_train: int | None = None
    max_val: int | None = None
    # model and optimisation. LoRA trains 0.7% of the weights starting from B = 0 and needs a much
    # larger learning rate than full fine-tuning (METHOD_DEFAULTS): one original write-up used 2e-5
    # for LoRA and ended below the majority baseline.
    model: str = pretrained.DEFAULT_MODEL
    max_length: int = 64
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: int = 1
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    clip: float = 1.0
    accum: int = 1
    precision: str = "auto"  # auto: bf16 where the hardware multiplies it natively (precision.py), else fp32
    fast: bool = True  # the fast path (fast.py); False: model.py as written, in fp32
    class_weights: bool = False
    target_precision: float | None = None  # multi-label: each label's threshold reaches this precision on validation
    augment: str | None = None  # multi-label: training templates (augment.py) added to the training part only
    dropout: float | None = None
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    # output
    checkpoint_every: int = 0
    log_every: int = 10
    progress: bool = True
    resume: bool = False
    overwrite: bool = False
    # distill
    teacher: str | None = None
    layers: str = "odd"
    alpha: float = 1 / 3
    beta: float = 1 / 3
    gamma: float = 1 / 3
    temperature: float = 2.0
    hidden_loss: str = "cosine"
    importance_texts: int = 1000
    # lora
    base: str | None = None
    lora_r: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.1
    lora_targets: str = "query,key,value"
    lora_trainable: str = "classifier"
    export_merged: bool = False


SETTING_NAMES = [f.name for f in dataclasses.fields(Settings)]
METHOD_DEFAULTS = {"teacher": {}, "distill": {}, "lora": {"lr": 5e-4}}
# A student learns on its teacher's data and split, LoRA on a trained run on that run's, unless told otherwise.
INHERITED = ("data", "data_mirror", "three_class", "multilabel", "augment", "normalize", "text_column", "label_column", "label_map",
             "split", "split_seed", "max_length", "max_train", "max_val")


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


def settings(args, method):
    """The resolved settings of one method: a flag given > the preset's [method] > the preset > defaults."""
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


def check(s: Settings):
    """Refuse settings that cannot work, naming the flag, before anything is loaded or written."""
    positive = {"epochs": s.epochs, "batch_size": s.batch_size, "eval_batch_size": s.eval_batch_size, "accum": s.accum,
                "lr": s.lr, "max_length": s.max_length, "log_every": s.log_every, "lora_r": s.lora_r,
                "lora_alpha": s.lora_alpha, "temperature": s.temperature, "max_train": s.max_train,
                "max_val": s.max_val, "threads": s.threads}
    for name, value in positive.items():
        if value is not None and not value > 0:
            raise TrainError(f"--{name.replace('_', '-')} {value}: expected a number above 0")
    in_range = {"warmup": (s.warmup, 0, 1), "dropout": (s.dropout, 0, 0.999), "lora_dropout": (s.lora_dropout, 0, 0.999),
                "weight_decay": (s.weight_decay, 0, 1), "alpha": (s.alpha, 0, 1e9), "beta": (s.beta, 0, 1e9),
                "gamma": (s.gamma, 0, 1e9), "clip": (s.clip, 0, 1e9), "checkpoint_every": (s.checkpoint_every, 0, 1e18),
                "target_precision": (s.target_precision, 0, 1)}
    for name, (value, low, high) in in_range.items():
        if value is not None and not low <= value <= high:
            raise TrainError(f"--{name.replace('_', '-')} {value}: expected a number in [{low}, {high:g}]")
    if s.max_length < 2:
        raise TrainError(f"--max-length {s.max_length}: expected at least 2 (room for [CLS] and [SEP])")
    if s.precision not in precision.PRECISIONS:
        raise TrainError(f"--precision {s.precision!r}: expected one of {', '.join(precision.PRECISIONS)}")
    try:
        precision.choose(s.precision, fast=s.fast)  # bf16 with --fast off: refused before anything is loaded
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


# -----------------------------------------------------------------------------
# Setting up a run: the folder, the data, the model, the loaders, the optimizer


def pick_device(name):
    device = classifier.pick_device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:  # one GPU per process under torchrun
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def check_folder(s: Settings, run_dir: Path, work: Path):
    """Refuse, before anything is loaded, an --out that this run must not touch. work: where the run
    trains (run_dir, or beside it while it replaces a finished run)."""
    if s.resume:
        if (work / runs.CHECKPOINT_FILE).is_file():
            return
        if runs.is_finished(run_dir):
            raise TrainError(f"--resume {run_dir}: the run is finished (summary.json); nothing to resume. "
                             "Expected an interrupted run, or --overwrite to train it again")
        raise TrainError(f"{run_dir / runs.CHECKPOINT_FILE}: no checkpoint to resume from; run without --resume "
                         "to start afresh")
    if runs.is_finished(run_dir) and not s.overwrite:
        raise TrainError(f"--out {run_dir}: holds a finished run; expected a new folder, or --overwrite to replace it")
    if run_dir.is_file():
        raise TrainError(f"--out {run_dir}: a file; expected a folder for the run")
    try:
        files.check_writable(run_dir, "--out")
        if s.split and not Path(s.split).exists():  # the manifest is made beside the runs unless --split says where
            files.check_writable(Path(s.split), "--split")
    except ValueError as e:
        raise TrainError(str(e)) from None
    if run_dir.is_dir() and any(run_dir.iterdir()) and not (run_dir / runs.RUN_FILE).is_file():
        raise TrainError(f"--out {run_dir}: not empty and not a run folder; expected a new or empty folder")


def clear_folder(run_dir: Path):
    """A fresh start in run_dir: what an earlier run of this folder left goes (only once all is checked)."""
    runs.remove_files(run_dir, (*runs.MODEL_FILES, runs.LOG_FILE, runs.SUMMARY_FILE, runs.CHECKPOINT_FILE, runs.CARD_FILE))
    shutil.rmtree(run_dir / "merged", ignore_errors=True)
    runs.remove_stale_temporaries(run_dir)


def load_data(s: Settings, run_dir: Path):
    """(dataset, {'train', 'validation'} parts, manifest): the split manifest beside the runs is made once and reused."""
    label_map = json.loads(s.label_map) if isinstance(s.label_map, str) else s.label_map
    dataset = data.load_dataset(s.data, mirror=s.data_mirror, three_class=s.three_class, normalize=s.normalize,
                                text_column=s.text_column, label_column=s.label_column, label_map=label_map,
                                multilabel=s.multilabel)
    for note in dataset.notes:
        print(f"{s.data}: {note}")
    counts = dataset.class_counts()
    if dataset.multilabel:  # every question needs a yes and a no somewhere
        if any(yes == 0 or no == 0 for no, yes, _ in counts.values()):
            raise TrainError(f"--data {s.data}: labels {counts} (no, yes, not annotated); expected yes and no for each")
    elif sum(c > 0 for c in counts) < 2 or 0 in counts:
        raise TrainError(f"--data {s.data}: classes {dict(zip(dataset.label_names, counts, strict=True))}; expected at "
                         "least two classes, each with examples (labels 0..K-1, or --label-map)")
    s.split = str(s.split or run_dir.parent / "split.json")
    parts = data.get_split(dataset, s.split, seed=s.split_seed)
    manifest = data.load_manifest(s.split)
    if not len(parts["validation"]) or not len(parts["train"]):
        raise TrainError(f"--data {s.data}: {len(dataset)} texts leave {len(parts['train'])} for training and "
                         f"{len(parts['validation'])} for validation; expected some in each (more data)")
    # Subsets for quick runs, the same for every model of a comparison with the same settings.
    parts = {"train": runs.subset_for_quick_runs(parts["train"], s.max_train, s.split_seed),
             "validation": runs.subset_for_quick_runs(parts["validation"], s.max_val, s.split_seed)}
    if s.augment:
        parts["train"] = with_augmentation(s, dataset, parts["train"])
    return dataset, parts, manifest


def with_augmentation(s: Settings, dataset, train_part):
    """The training part plus the texts of the augmentation templates (--augment): never in validation
    or test, and none that the dataset itself holds (which could be a validation or test text)."""
    import augment  # only runs that ask for it need the templates

    if not dataset.multilabel or list(dataset.label_names) != data.TWO_LABELS:
        raise TrainError(f"--augment {s.augment}: gives {data.TWO_LABELS} labels; expected a two-question dataset "
                         f"(e.g. --data davidson+hate_speech18), not {list(dataset.label_names)}")
    try:
        pairs = augment.load_augment(s.augment, seed=s.seed)
    except (OSError, ValueError) as e:
        raise TrainError(f"--augment {s.augment}: {e}") from None
    known = set(dataset.texts)
    pairs = [(text, labels) for text, labels in pairs if text not in known]
    texts = train_part.texts + [t for t, _ in pairs]
    labels = train_part.labels + [list(y) for _, y in pairs]
    sources = (train_part.sources or [train_part.name] * len(train_part)) + ["augment"] * len(pairs)
    print(f"--augment {s.augment}: {len(pairs)} template texts added to the {len(train_part)} training texts")
    return data.Dataset(train_part.name, texts, labels, train_part.label_names, sources=sources)


def load_parent(s: Settings, flag, folder, manifest):
    """A trained run this one builds on (--teacher, --base), checked to share the split and to hold
    a full fp32 model."""
    info = parent_run(flag, folder)
    what = {"teacher": "teacher", "base": "base run"}[flag]
    if info.get("quantized"):
        raise TrainError(f"{folder}: an int8 export (eval.py export); expected a run with fp32 weights as the {what}")
    if runs.is_lora_run(folder):
        raise TrainError(f"{folder}: a LoRA run; expected a run with a full model (teacher or student) as the {what}")
    net, _, info = runs.load_run(folder)
    if info["split_sha256"] != manifest["manifest_sha256"]:
        raise TrainError(f"{folder}: the {what} was trained on another split "
                         f"({info['split_sha256'][:12]}… vs {manifest['manifest_sha256'][:12]}…); expected the same")
    return net


def rank_teacher_layers(s: Settings, teacher, val_part, device, results):
    """--layers auto: each teacher layer's importance (distill.layer_importance) on a fixed subset of
    the validation split, printed and kept in the run's results."""
    if s.importance_texts < 1:
        raise TrainError(f"--importance-texts {s.importance_texts}: expected at least 1 validation text")
    part = runs.subset_for_quick_runs(val_part, s.importance_texts, s.split_seed)
    loader = data.Loader(part.texts, part.labels, data.load_tokenizer(s.teacher), s.max_length, s.eval_batch_size)
    batches = [tuple(b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")) for b in loader]
    t0 = time.time()
    scores = distill.layer_importance(teacher.to(device), batches)
    ranking = sorted(range(1, len(scores) + 1), key=lambda i: -scores[i - 1])
    results.update(layer_importance=scores, layer_ranking=ranking, importance_seconds=time.time() - t0, importance_n=len(part))
    print(f"layer importance on {len(part)} validation texts ({results['importance_seconds']:.0f}s; KL of the teacher "
          "without the layer from the teacher):")
    print("  " + ", ".join(f"{i}: {scores[i - 1]:.4f}" for i in ranking) + "  (most important first)")
    return scores


def build_student(s: Settings, manifest, val_part, device, run_dir, results):
    if not s.teacher:
        raise TrainError("distill needs --teacher RUN_DIR (a teacher run written by `train.py teacher`)")
    teacher = load_parent(s, "teacher", s.teacher, manifest).requires_grad_(False)
    n = teacher.config.num_hidden_layers
    importance = None
    if str(s.layers).startswith("auto"):
        distill.parse_layers(s.layers, n, [0.0] * n)  # a bad spec fails now, not after the measurement
        if s.resume:  # the layers the checkpoint was trained with, not a new measurement's
            before = runs.read_info(run_dir).results
            results.update({k: before[k] for k in ("layer_importance", "layer_ranking", "importance_seconds", "importance_n")})
            importance = before["layer_importance"]
        else:
            importance = rank_teacher_layers(s, teacher, val_part, device, results)
    results["teacher_layers"] = distill.parse_layers(s.layers, n, importance)
    return distill.make_student(teacher, results["teacher_layers"]), Path(s.teacher), teacher


def build_lora(s: Settings, dataset, manifest, results):
    label_names = dataset.label_names
    if s.base:
        net = load_parent(s, "base", s.base, manifest)
        if [net.config.id2label[i] for i in range(net.config.num_labels)] != list(label_names):
            raise TrainError(f"{s.base}: classes {list(net.config.id2label.values())}, the data has "
                             f"{list(label_names)}; expected the same")
    else:
        net = pretrained.from_pretrained(s.model, id2label=dict(enumerate(label_names)))
        set_problem_type(net, dataset)
    trainable = [t for t in s.lora_trainable.split(",") if t]
    if any(k.startswith("bert.pooler.") for k in net.load_report.initialized) and "pooler" not in trainable:
        # The checkpoint has no pooler (a bare encoder such as bge-small-en): it starts random, and a
        # random layer that the adapter does not hold would be drawn anew at every load. Train it with
        # the head and keep it in the adapter file.
        trainable.append("pooler")
        print("the base model has no pooler: training it with the classifier and saving it in the adapter")
    s.lora_trainable = ",".join(trainable)
    lora.inject_lora(net, s.lora_targets.split(","), s.lora_r, s.lora_alpha, s.lora_dropout, trainable)
    print(lora.lora_report(net))
    # A hub name stays a name; a local folder becomes an absolute path, valid from anywhere.
    model_dir = pretrained.resolve_model_dir(s.model)
    results["base_model"] = s.model if not Path(s.model).expanduser().is_dir() else str(model_dir.resolve())
    return net, model_dir


def build_model(s: Settings, dataset, manifest, val_part, device, run_dir, results):
    """(model, tokenizer folder, teacher or None) for the method."""
    if s.method == "distill":  # a student has its teacher's head, and so its problem type
        return build_student(s, manifest, val_part, device, run_dir, results)
    if s.method == "lora":
        net, folder = build_lora(s, dataset, manifest, results)
        return net, folder, None
    net = pretrained.from_pretrained(s.model, id2label=dict(enumerate(dataset.label_names)))
    set_problem_type(net, dataset)
    return net, pretrained.resolve_model_dir(s.model), None


def set_problem_type(net, dataset):
    """Two questions (toxic, hate) are two sigmoids, written as transformers' multi-label problem type."""
    net.config.problem_type = "multi_label_classification" if dataset.multilabel else None


# -----------------------------------------------------------------------------
# Distributed training, the model's dropout, the optimizer and the loss


def setup_distributed(device):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return world, dist.get_rank()


def set_dropout(net, p):
    """Override every dropout probability (e.g. 0 for an exactly reproducible comparison)."""
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p


def make_optimizer(net, s, fused):
    # No weight decay on biases and LayerNorm weights: decaying them towards zero only hurts.
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, fused=fused)


def lr_at(step, total, s):
    """Linear warmup over the first `warmup` fraction of the steps, then linear decay to zero."""
    warm = max(1, int(s.warmup * total))
    if step < warm:
        return s.lr * (step + 1) / warm
    return s.lr * max(0.0, (total - step) / max(1, total - warm))


def compute_loss(s, net, batch, teacher, weight, teacher_layers=None):
    """The training loss of one batch, and its parts for the log."""
    out = net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    labels = batch["labels"]
    if teacher is None:
        if labels.dim() == 2:  # a multi-label task: a sigmoid per label, unannotated labels masked out
            return distill.masked_bce(out.logits, labels, weight), {}
        return F.cross_entropy(out.logits.float(), labels, weight=weight), {}
    t_out = distill.teacher_forward(teacher, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return distill.distill_loss(out, t_out, labels, teacher_layers, batch["attention_mask"], s.alpha, s.beta,
                                s.gamma, s.temperature, s.hidden_loss, pos_weight=weight if labels.dim() == 2 else None)


class PeakMemory:
    """The peak resident memory of this process while a run trains, sampled every 50 ms.
    (The kernel's own high-water mark, ru_maxrss, never goes down, so it would charge every
    run of `train.py all` with the largest run before it.)"""

    def __init__(self, device):
        self.device, self.peak, self.stop = device, 0, threading.Event()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        page = os.sysconf("SC_PAGE_SIZE")
        while not self.stop.is_set():
            try:
                with open("/proc/self/statm") as f:
                    self.peak = max(self.peak, int(f.read().split()[1]) * page)
            except OSError:  # no /proc (macOS): fall back to the high-water mark
                self.peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.stop.wait(0.05)

    def mb(self):
        self.stop.set()
        self.thread.join()
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return self.peak / 2**20



@dataclass
class Training:
    """What the loop needs, made once by setup()."""

    s: Settings
    dir: Path  # where the run trains: final, or beside it while it replaces a finished run
    final: Path  # --out
    device: torch.device
    world: int
    rank: int
    net: torch.nn.Module
    ddp: torch.nn.Module  # net itself, or its DistributedDataParallel wrapper
    teacher: torch.nn.Module | None
    tokenizer_dir: Path
    loader: data.Loader
    val_loader: data.Loader
    opt: torch.optim.Optimizer
    weight: torch.Tensor | None
    total_steps: int
    results: dict
    memory: "PeakMemory"
    t_start: float = field(default_factory=time.time)
    state: dict = field(default_factory=lambda: {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": None, "loss_sum": 0.0,
                                                 "loss_count": 0, "epoch_loss": None, "wall_before": 0.0})

    @property
    def main(self):
        return self.rank == 0

    def wall_seconds(self):
        """This process's time plus that of the processes before a resume."""
        return self.state["wall_before"] + time.time() - self.t_start


def setup(s: Settings, run_dir: Path, work: Path) -> Training:
    """Check and load everything; only then touch the run folder (work: where the run trains)."""
    check(s)
    check_folder(s, run_dir, work)
    device = pick_device(s.device)
    memory = PeakMemory(device)
    world, rank = setup_distributed(device)
    if s.threads:
        torch.set_num_threads(s.threads)
    if s.batch_size % world:
        raise TrainError(f"--batch-size {s.batch_size} is the global batch: expected a multiple of the {world} processes")
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    dataset, parts, manifest = load_data(s, run_dir)
    results = {}
    net, tokenizer_dir, teacher = build_model(s, dataset, manifest, parts["validation"], device, work, results)
    if s.max_length > net.config.max_position_embeddings:
        raise TrainError(f"--max-length {s.max_length}: the model has {net.config.max_position_embeddings} positions; "
                         f"expected at most {net.config.max_position_embeddings}")
    if s.dropout is not None:
        set_dropout(net, s.dropout)
    net.to(device)
    # bf16 or fp32 (precision.py): the parameters stay fp32 master weights either way, so the
    # optimizer, the checkpoints and the saved model are the same; only the arithmetic changes.
    choice = precision.choose(s.precision, device, fast=s.fast)
    precision.keep_freed_memory()
    precision.prepare(net, choice)
    if teacher is not None:
        precision.prepare(teacher.to(device), choice, inference=True)
    results.update(precision_chosen=choice.precision, precision_reason=choice.reason)
    if rank == 0:
        print(f"{s.method}: computing in {choice.precision} ({choice.reason})")
    tokenizer = data.load_tokenizer(tokenizer_dir)
    train_part, val_part = parts["train"], parts["validation"]
    loader = data.Loader(train_part.texts, train_part.labels, tokenizer, s.max_length, s.batch_size,
                         shuffle=True, seed=s.seed, num_replicas=world, rank=rank)
    val_loader = data.Loader(val_part.texts, val_part.labels, tokenizer, s.max_length, s.eval_batch_size)
    weight = None
    if s.class_weights:  # inverse class frequency; multi-label: each label's negatives per positive
        weight = data.pos_weights(train_part.labels) if dataset.multilabel else \
            data.class_weights(train_part.labels, len(dataset.label_names))
        weight = weight.to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    opt = make_optimizer(net, s, fused=device.type in ("cpu", "cuda"))
    total_steps = math.ceil(len(loader) / s.accum) * s.epochs
    total, trainable = M.count_parameters(net)
    results.update(run_dir=str(run_dir), split_sha256=manifest["manifest_sha256"], data_sha256=manifest["data_sha256"],
                   id2label={str(i): n for i, n in enumerate(dataset.label_names)}, problem_type=net.config.problem_type,
                   params_total=total,
                   params_trainable=trainable, world_size=world, teacher_layers=results.get("teacher_layers"),
                   torch=torch.__version__, train_size=len(train_part), val_size=len(val_part), command=" ".join(sys.argv))
    t = Training(s, work, run_dir, device, world, rank, net, ddp, teacher, tokenizer_dir, loader, val_loader, opt, weight,
                 total_steps, results, memory)
    if s.resume:
        resume(t)
    elif t.main:
        # Everything is checked: from here on the folder is this run's.
        if work != run_dir:
            shutil.rmtree(work, ignore_errors=True)  # what an earlier, interrupted replacement left
        work.mkdir(parents=True, exist_ok=True)
        clear_folder(work)
        runs.write_info(work, runs.RunInfo(dataclasses.asdict(s), results))
        print(f"{s.method}: {len(train_part)} train / {len(val_part)} validation texts, {len(loader)} batches per "
              f"epoch, padding {loader.padding_fraction():.1%}, trainable {trainable:,} of {total:,}")
    return t


def resume(t: Training):
    """Continue from the checkpoint: the model, the optimizer, the RNG, the sampler and the books."""
    runs.remove_stale_temporaries(t.dir)
    meta = runs.load_checkpoint(t.dir, t.net, t.opt)
    t.loader.load_state_dict(meta.pop("sampler"))
    t.state.update(meta)
    # The killed process worked past its checkpoint; its last log line says how long it ran.
    steps, epochs = runs.read_log(t.dir)
    t.state["wall_before"] = max([t.state["wall_before"]] + [r.get("wall_seconds", 0) for r in steps + epochs])
    if t.main:
        runs.trim_log(t.dir, t.state["step"], t.state["epoch"])  # the steps after the checkpoint are logged again
        print(f"resumed {t.dir} at epoch {t.state['epoch'] + 1}, step {t.state['step']}")


def checkpoint(t: Training):
    state = {k: v for k, v in t.state.items() if k != "wall_before"}
    runs.save_checkpoint(t.dir, t.net, t.opt, {**state, "wall_before": t.wall_seconds(), "sampler": t.loader.state_dict()})


# -----------------------------------------------------------------------------
# One epoch


def train_epoch(t: Training, epoch: int):
    s, state = t.s, t.state
    t.ddp.train()
    t0, seen, done_before = time.time(), 0, t.loader.sampler.batches_done
    crash_at = int(os.environ.get("NANOBERT_CRASH_AT_STEP", 0))  # for the resume test: a real kill mid-epoch
    bar = files.progress(t.loader, len(t.loader) - done_before, f"{s.method} epoch {epoch + 1}", s.progress and t.main)
    for i, batch in enumerate(bar, start=done_before):
        batch = {k: v.to(t.device) for k, v in batch.items()}
        loss, parts = compute_loss(s, t.ddp, batch, t.teacher, t.weight, t.results.get("teacher_layers"))
        if not torch.isfinite(loss):
            ckpt = t.dir / runs.CHECKPOINT_FILE
            raise TrainError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch {i + 1}, step {state['step']}; "
                             f"stopped. The last good checkpoint is {ckpt if ckpt.exists() else 'none'}; "
                             "try a lower --lr or --clip")
        (loss / s.accum).backward()
        seen += len(batch["labels"]) * t.world
        if (i + 1) % s.accum and i + 1 < len(t.loader):
            continue  # accumulate gradients over `accum` batches before one optimizer step
        lr = lr_at(state["step"], t.total_steps, s)
        for group in t.opt.param_groups:
            group["lr"] = lr
        grad_norm = torch.nn.utils.clip_grad_norm_(t.net.parameters(), s.clip) if s.clip else None
        t.opt.step()
        t.opt.zero_grad(set_to_none=True)
        state["step"] += 1
        if t.world > 1:  # log the loss of the global batch, not of this process's share
            loss = loss.detach().clone()
            dist.all_reduce(loss)
            loss /= t.world
        state["loss_sum"] += loss.item()
        state["loss_count"] += 1
        speed = seen / (time.time() - t0)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", sent_s=f"{speed:.0f}")
        if t.main and state["step"] % s.log_every == 0:
            runs.log(t.dir, "step", {"step": state["step"], "epoch": epoch + 1, "loss": loss.item(), "lr": lr,
                                     "grad_norm": None if grad_norm is None else grad_norm.item(),
                                     "sentences_per_s": speed, "wall_seconds": t.wall_seconds(), **parts})
        if t.main and s.checkpoint_every and state["step"] % s.checkpoint_every == 0:
            checkpoint(t)
        if crash_at and state["step"] == crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
    return time.time() - t0


def validation_scores(t: Training, thresholds=None):
    """Accuracy and macro-F1 on the validation split; multi-label: the mean over the labels of each
    label's scores at its threshold (0.5 while training), on the texts that annotate it."""
    probs = classifier.predict_probs(t.net, t.val_loader).numpy()
    labels = t.val_loader.labels.numpy()
    if labels.ndim == 1:
        return metrics.metrics(labels.tolist(), probs.argmax(-1).tolist(), probs.shape[1],
                               probs[:, 1].tolist() if probs.shape[1] == 2 else None)
    names = [t.net.config.id2label[j] for j in range(labels.shape[1])]
    per_label = {name: metrics.label_metrics(labels[:, j], probs[:, j], (thresholds or {}).get(name, 0.5))
                 for j, name in enumerate(names)}
    return {"accuracy": float(np.mean([m["accuracy"] for m in per_label.values()])),
            "macro_f1": float(np.mean([m["macro_f1"] for m in per_label.values()])), "labels": per_label}


def choose_thresholds(t: Training, net):
    """Multi-label: each label's decision threshold, chosen on validation with the best model."""
    probs = classifier.predict_probs(net.to(t.device), t.val_loader).numpy()
    labels = t.val_loader.labels.numpy()
    return {net.config.id2label[j]: metrics.best_threshold(labels[:, j], probs[:, j], t.s.target_precision)
            for j in range(labels.shape[1])}


def end_epoch(t: Training, epoch: int, seconds: float):
    """Validation, the best model so far, a checkpoint."""
    s, state = t.s, t.state
    val = validation_scores(t)
    state["epoch"] = epoch + 1
    state["epoch_loss"] = state["loss_sum"] / max(1, state["loss_count"])
    state["loss_sum"], state["loss_count"] = 0.0, 0
    if not t.main:
        return
    runs.log(t.dir, "epoch", {"epoch": epoch + 1, "step": state["step"], "train_loss": state["epoch_loss"],
                              "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "epoch_seconds": seconds,
                              "wall_seconds": t.wall_seconds()})
    better = val["macro_f1"] > state["best_f1"] or state["best_epoch"] is None  # the first epoch always counts
    if better:
        state["best_f1"], state["best_epoch"] = val["macro_f1"], epoch + 1
        runs.save_model(t.net, t.dir, t.tokenizer_dir, t.results.get("base_model") if s.method == "lora" else None)
    print(f"{s.method} epoch {epoch + 1}/{s.epochs}: mean loss {state['epoch_loss']:.4f}, validation accuracy "
          f"{val['accuracy']:.4f} macro-F1 {val['macro_f1']:.4f}{' (best, saved)' if better else ''}, {seconds:.0f}s")
    checkpoint(t)


# -----------------------------------------------------------------------------
# Finishing: the summary (written last: it marks the run finished), test scores, the model card


def finish(t: Training):
    s, state = t.s, t.state
    summary = {"method": s.method, "wall_seconds": t.wall_seconds(), "steps": state["step"],
               "final_train_loss": state["epoch_loss"], "best_epoch": state["best_epoch"],
               "best_val_macro_f1": state["best_f1"], "peak_memory_mb": t.memory.mb(),
               "params_total": t.results["params_total"], "params_trainable": t.results["params_trainable"]}
    if t.main:
        best, tokenizer, info = runs.load_run(t.dir, merge=False)
        if s.method == "lora" and s.export_merged:
            pretrained.save_pretrained(best, t.dir / "merged", tokenizer_dir=t.dir, state_dict=lora.merged_state_dict(best))
        if best.config.multilabel:
            info.results["thresholds"] = choose_thresholds(t, best)
            print("thresholds chosen on validation: " + ", ".join(f"{k} {v:.3f}" for k, v in info.results["thresholds"].items()))
        # The test split is scored once, for the model card; it never chose anything.
        test, _, _ = runs.load_test_split(t.dir, info)
        info.results["test"] = report.test_scores(best.to(t.device), tokenizer, info, test, s.eval_batch_size)
        runs.write_info(t.dir, info)
        if t.dir != t.final:  # a replacement, complete: it takes the old run's place only now
            runs.replace_run(t.dir, t.final)
            t.dir = t.final
        report.write_model_card(t.dir, summary)
        runs.write_summary(t.dir, summary)
        runs.remove_checkpoint(t.dir)  # the run is complete: the best model is saved beside
    if t.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def train(s: Settings, run_dir) -> dict:
    """Train one model into run_dir; returns its summary. A run that fails before its first checkpoint
    leaves no folder behind; after it, the folder waits for --resume."""
    run_dir = Path(run_dir)
    # Replacing a finished run (--overwrite, or --resume of an interrupted replacement): the new run
    # trains beside it, and the old one stays whole until the new one is done.
    staging = runs.staging_dir(run_dir)
    replacing = runs.is_finished(run_dir) and (s.overwrite or s.resume and (staging / runs.CHECKPOINT_FILE).is_file())
    work = staging if replacing else run_dir
    existed, t_start = work.exists() and not (replacing and s.overwrite), time.time()
    try:
        t = setup(s, run_dir, work)
        t.t_start = t_start  # the run's time includes loading the data and the model
        while t.state["epoch"] < s.epochs:
            seconds = train_epoch(t, t.state["epoch"])
            end_epoch(t, t.state["epoch"], seconds)
        return finish(t)
    except BaseException:
        if not existed and work.is_dir() and not (work / runs.CHECKPOINT_FILE).exists():
            shutil.rmtree(work, ignore_errors=True)
        raise


# -----------------------------------------------------------------------------
# Command line


def on_off(value):
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected on or off")
    return value == "on"


def add_common(p):
    d = dataclasses.asdict(Settings())
    g = p.add_argument_group("data")
    g.add_argument("--preset", help="presets/<NAME>.toml or a .toml path; flags override it")
    g.add_argument("--data", help=f"'davidson', 'hate_speech18' or a .csv/.jsonl path (default {d['data']})")
    g.add_argument("--data-mirror", help="offline folder holding davidson/ and hate_speech18/ (sets NANOBERT_DATA)")
    g.add_argument("--three-class", action="store_const", const=True, help="Davidson: hate / offensive / neither")
    g.add_argument("--multilabel", action="store_const", const=True, help="the two questions toxic and hate, a sigmoid "
                   "each (implied by --data davidson+hate_speech18)")
    g.add_argument("--no-normalize", dest="normalize", action="store_const", const=False,
                   help="Davidson: keep tweets as written (no @user / http / RT / &amp; normalisation)")
    g.add_argument("--text-column", help="CSV/JSONL: the text column (default text)")
    g.add_argument("--label-column", help="CSV/JSONL: the label column (default label)")
    g.add_argument("--label-map", help='CSV/JSONL: JSON mapping labels to ids, e.g. \'{"ok": 0, "toxic": 1}\'')
    g.add_argument("--split", help="split manifest to make or reuse (default: split.json beside the run folder)")
    g.add_argument("--split-seed", type=int, help="seed of the 80/10/10 stratified split (default 0)")
    g.add_argument("--max-train", type=int, help="use at most N training texts (a fixed subset; default all)")
    g.add_argument("--max-val", type=int, help="use at most N validation texts (default all)")
    g = p.add_argument_group("training")
    g.add_argument("--max-length", type=int, help=f"tokens per text, longer ones are cut (default {d['max_length']})")
    g.add_argument("--batch-size", type=int, help=f"global batch size (default {d['batch_size']})")
    g.add_argument("--eval-batch-size", type=int, help=f"validation batch size (default {d['eval_batch_size']})")
    g.add_argument("--epochs", type=int, help=f"passes over the training texts (default {d['epochs']})")
    g.add_argument("--lr", type=float, help="peak learning rate (default 5e-5; lora 5e-4)")
    g.add_argument("--weight-decay", type=float, help=f"AdamW weight decay, not on biases/LayerNorm (default {d['weight_decay']})")
    g.add_argument("--warmup", type=float, help=f"fraction of steps of linear warmup (default {d['warmup']})")
    g.add_argument("--clip", type=float, help=f"gradient-norm clipping, 0 = off (default {d['clip']})")
    g.add_argument("--accum", type=int, help="batches per optimizer step (gradient accumulation; default 1)")
    g.add_argument("--precision", help="auto, fp32 or bf16: what the model computes in; bf16 keeps fp32 master weights "
                   "(default auto: bf16 where the hardware runs it natively, fp32 elsewhere)")
    g.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="the same as --precision bf16")
    g.add_argument("--fast", type=on_off, help="on: the fast path (fast.py: fused kernels, bf16); off: model.py as "
                   "written, in fp32, the code to read (default on)")
    g.add_argument("--class-weights", action="store_const", const=True, help="inverse-frequency class weights in the loss "
                   "(multi-label: each label's positives weighted by negatives per positive)")
    g.add_argument("--no-class-weights", dest="class_weights", action="store_const", const=False,
                   help="no class weights, whatever the preset says")
    g.add_argument("--augment", help="multi-label: a TOML of training templates (augment.py, e.g. suites/augment.toml) "
                   "whose texts join the training part only; separate from the behaviour suite's test templates")
    g.add_argument("--target-precision", type=float, help="multi-label: choose each label's threshold on validation as "
                   "the lowest reaching this precision (default: the best macro-F1)")
    g.add_argument("--dropout", type=float, help="override every dropout probability of the model")
    g.add_argument("--seed", type=int, help="seed for initialisation, dropout and batch order (default 0)")
    g.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default auto)")
    g = p.add_argument_group("output")
    g.add_argument("--checkpoint-every", type=int, help="also checkpoint every N optimizer steps (default: each epoch only)")
    g.add_argument("--log-every", type=int, help=f"log the loss every N steps to metrics.jsonl (default {d['log_every']})")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bars")
    g.add_argument("--overwrite", action="store_const", const=True,
                   help="replace a finished run in --out (without it a finished run is never changed)")
    g.add_argument("--resume", action="store_const", const=True,
                   help="continue from the run folder's checkpoint (all: keep finished runs, resume the interrupted one)")


def add_model(p):
    p.add_argument("--model", help=f"pretrained model: name, folder, or a name under $NANOBERT_MODELS (default {pretrained.DEFAULT_MODEL})")


def add_distill(p):
    g = p.add_argument_group("distillation")
    g.add_argument("--layers", help="teacher layers the student keeps: odd, even, bottom (first half), top (second "
                   "half), auto (the half that matters most to the teacher, measured on validation; auto:K keeps K) "
                   "or a list like 1,2,12 (default odd)")
    g.add_argument("--importance-texts", type=int,
                   help="auto: validation texts the layer importance is measured on (default 1000)")
    g.add_argument("--alpha", type=float, help="weight of cross-entropy on the labels (default 1/3)")
    g.add_argument("--beta", type=float, help="weight of KL to the teacher's softened logits (default 1/3)")
    g.add_argument("--gamma", type=float, help="weight of the hidden-state loss (default 1/3)")
    g.add_argument("--temperature", type=float, help="softmax temperature T of the KL term (default 2)")
    g.add_argument("--hidden-loss", choices=["cosine", "mse"], help="distance between hidden states (default cosine)")


def add_lora(p):
    g = p.add_argument_group("LoRA")
    g.add_argument("--lora-r", type=int, help="rank r (default 8)")
    g.add_argument("--lora-alpha", type=float, help="alpha; the update is scaled by alpha / r (default 16)")
    g.add_argument("--lora-dropout", type=float, help="dropout on the LoRA input (default 0.1)")
    g.add_argument("--lora-targets", help="comma-separated module-name suffixes (default query,key,value)")
    g.add_argument("--lora-trainable", help="modules trained in full beside LoRA (default classifier)")
    g.add_argument("--export-merged", action="store_const", const=True, help="also write merged/: a plain model, LoRA folded in")


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("teacher", help="full fine-tuning of a pretrained model")
    p.add_argument("--out", required=True, help="run folder")
    add_model(p)
    add_common(p)
    p = sub.add_parser("distill", help="a student from a teacher run's layers, trained towards the teacher")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--teacher", required=True, help="the teacher's run folder")
    add_distill(p)
    add_common(p)
    p = sub.add_parser("lora", help="LoRA on a pretrained model, or on a trained run (--base)")
    p.add_argument("--out", required=True, help="run folder")
    add_model(p)
    p.add_argument("--base", help="a trained run folder (teacher or student) to adapt instead of --model: its data "
                   "and split are reused, and only the adapters train unless --lora-trainable says more")
    add_lora(p)
    add_common(p)
    p = sub.add_parser("all", help="teacher -> odd student -> even student -> LoRA, one split, then the report")
    p.add_argument("--runs", help="folder for the runs, the split and the report (default runs/<preset or data>)")
    p.add_argument("--extended", action="store_true",
                   help="also: students from the auto, bottom and top layers, LoRA on the best student (by validation "
                   "macro-F1), and int8 exports of the teacher, that student and its LoRA")
    add_model(p)
    add_distill(p)
    add_lora(p)
    add_common(p)
    for method in ("teacher", "distill", "lora"):
        p.add_argument(f"--{method}-lr", type=float, help=f"learning rate of the {method} run")
    return parser


# -----------------------------------------------------------------------------
# all: every arm of the comparison on one split, then the report


def run_all(args):
    if args.layers is not None:
        raise TrainError(f"--layers {args.layers}: `all` trains the odd and even students (and with --extended auto, "
                         "bottom and top); expected no --layers, or `train.py distill --layers` for one student")
    runs_dir = Path(args.runs or Path("runs") / (Path(args.preset).stem if args.preset else Path(str(args.data or "davidson")).stem))
    try:
        files.check_writable(runs_dir, "--runs")
    except ValueError as e:
        raise TrainError(str(e)) from None
    plan = [("teacher", "teacher", {}), ("odd", "distill", {"layers": "odd"}), ("even", "distill", {"layers": "even"}),
            ("lora", "lora", {})]
    if args.extended:
        plan[3:3] = [(name, "distill", {"layers": name}) for name in ("auto", "bottom", "top")]
    summaries = {}
    for name, method, extra in plan:
        summaries[name] = run_one(args, runs_dir, name, method, extra)
    exports = []
    if args.extended:
        # LoRA on the student that did best on validation: chosen without looking at the test set.
        students = [n for n, m, _ in plan if m == "distill"]
        best = max(students, key=lambda n: summaries[n]["best_val_macro_f1"])
        print(f"best student on validation: {best}")
        name = f"lora-{best}"
        extra = {"base": str(runs_dir / best), "model": str(runs_dir / best)}
        if args.lora_trainable is None:  # the student's pooler and head are trained already: adapters only
            extra["lora_trainable"] = ""
        summaries[name] = run_one(args, runs_dir, name, "lora", extra)
        plan.append((name, "lora", {}))
        for source in ("teacher", best, name):
            print(f"== {source}-int8 ==")
            exports.append(runs.export_int8(runs_dir / source, runs_dir / f"{source}-int8"))
            report.write_model_card(exports[-1])
    report.report([runs_dir / name for name, _, _ in plan] + exports, runs_dir / "report")
    for name, s in summaries.items():
        print(f"{name:14s} {s['wall_seconds']:7.0f}s  best validation macro-F1 {s['best_val_macro_f1']:.4f}")


def run_one(args, runs_dir, name, method, extra):
    """One run of `all` into runs_dir/name, or its summary if --resume finds it finished."""
    s = dataclasses.replace(settings(args, method), **extra)
    s.teacher = str(runs_dir / "teacher")
    if getattr(args, f"{method}_lr") is not None:
        s.lr = getattr(args, f"{method}_lr")
    s.split = s.split or str(runs_dir / "split.json")
    if s.resume:  # carry on where `all` stopped: finished runs stay, an interrupted one resumes
        if runs.is_finished(runs_dir / name):
            print(f"== {name}: done before, kept ==")
            return runs.read_summary(runs_dir / name)
        s.resume = (runs_dir / name / runs.CHECKPOINT_FILE).exists()
    print(f"== {name} ==")
    return train(s, runs_dir / name)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "all":
            run_all(args)
        else:
            train(settings(args, args.command), args.out)
    except KeyboardInterrupt:
        sys.exit("interrupted; an interrupted run continues from its last checkpoint with the same command and --resume")
    except (TrainError, data.DataError, runs.RunError, FileNotFoundError, ValueError, ConnectionError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # read-only folder, a path under a file, a full disk
        sys.exit(f"error: {files.os_error_message(e)}")


if __name__ == "__main__":
    main()
