"""
Train the arms of the comparison with one plain, explicit loop:

    python train.py teacher --preset quick                      # full fine-tuning of the pretrained model
    python train.py distill --preset quick --teacher runs/quick/teacher --layers odd
    python train.py lora    --preset quick                      # LoRA on the pretrained model
    python train.py lora    --preset quick --base runs/quick/odd    # LoRA on a trained student
    python train.py all     --preset quick                      # teacher -> odd -> even -> LoRA -> report
    python train.py all     --preset quick --extended           # ... + auto/bottom/top students, LoRA on the
                                                                #     best student, int8 exports

Every flag overrides the preset (presets/<name>.toml), which overrides the defaults below.
A run folder holds: run.json (the resolved settings), the model (config.json + model.safetensors
+ vocab.txt) or LoRA adapter (adapter_config.json + adapter_model.safetensors), metrics.jsonl,
summary.json, and while training checkpoint.safetensors for --resume.

Several processes: `torchrun --nproc_per_node N train.py ...` trains with DistributedDataParallel
(gloo on CPU, nccl on GPU); --batch-size stays the global batch, split across the processes.
"""

import argparse
import json
import math
import os
import random
import resource
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import tomllib
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import data
import files
import distill
import eval as evaluation
import lora
import model as M

PRESETS = Path(__file__).parent / "presets"

# The defaults, per method. LoRA trains 0.7% of the weights starting from B = 0 and needs a much
# larger learning rate than full fine-tuning: one original write-up used 2e-5 for LoRA and ended
# below the majority baseline. See the README for how these were chosen.
DEFAULTS = {
    "data": "davidson", "data_mirror": None, "three_class": False, "normalize": True,
    "text_column": "text", "label_column": "label", "label_map": None,
    "split": None, "split_seed": 0, "max_train": None, "max_val": None,
    "model": M.DEFAULT_MODEL, "max_length": 64, "batch_size": 32, "eval_batch_size": 64, "epochs": 1,
    "lr": 5e-5, "weight_decay": 0.01, "warmup": 0.1, "clip": 1.0, "accum": 1, "bf16": False,
    "class_weights": False, "dropout": None, "seed": 0, "threads": None, "device": "auto",
    "checkpoint_every": 0, "log_every": 10, "progress": True, "resume": False,
    # distill
    "teacher": None, "layers": "odd", "alpha": 1 / 3, "beta": 1 / 3, "gamma": 1 / 3, "temperature": 2.0,
    "hidden_loss": "cosine", "importance_texts": 1000,
    # lora
    "base": None, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "lora_targets": "query,key,value",
    "lora_trainable": "classifier", "export_merged": False,
}
TEACHER_DATA_SETTINGS = ("data", "data_mirror", "three_class", "normalize", "text_column", "label_column", "label_map",
                         "split", "split_seed", "max_length", "max_train", "max_val")
METHOD_DEFAULTS = {"teacher": {}, "distill": {}, "lora": {"lr": 5e-4}}


class TrainError(RuntimeError):
    pass


# -----------------------------------------------------------------------------
# Settings: defaults < preset < flags


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


def settings(args, method):
    """The resolved settings of one method: a flag given > the preset's [method] > the preset > defaults."""
    preset = load_preset(args.preset)
    section = preset.get(method, {})
    unknown = [k for k in list(preset) + list(section) if k not in DEFAULTS and k not in METHOD_DEFAULTS]
    if unknown:
        raise TrainError(f"preset {args.preset}: unknown setting {unknown[0]!r}; expected one of the train.py flags")
    cfg = {**DEFAULTS, **METHOD_DEFAULTS[method]}
    cfg.update({k: v for k, v in preset.items() if not isinstance(v, dict)})
    cfg.update(section)
    given = {k: v for k, v in vars(args).items() if v is not None and k in DEFAULTS}
    parent = given.get("teacher") if method == "distill" else given.get("base") if method == "lora" else None
    if parent and (Path(parent) / "run.json").is_file():
        # A student learns on its teacher's data and split, LoRA on a trained run on that run's,
        # unless told otherwise.
        info = json.loads((Path(parent) / "run.json").read_text(encoding="utf-8"))
        cfg.update({k: info[k] for k in TEACHER_DATA_SETTINGS if k in info})
    if method == "lora" and given.get("base"):
        # The base is a trained classifier: its pooler and head are already fit, so by default
        # only the adapters learn.
        cfg["model"] = given["base"]
        cfg["lora_trainable"] = ""
        if given.get("model"):
            raise TrainError("--base and --model both name the model to adapt; expected one of them")
    cfg.update(given)
    cfg["method"], cfg["preset"] = method, args.preset
    return cfg


# -----------------------------------------------------------------------------
# Distributed: one process per device under torchrun, else a plain single process


def setup_distributed(device):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 1, 0
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return world, dist.get_rank()


def pick_device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


# -----------------------------------------------------------------------------
# Data and models


def load_data(cfg, run_dir):
    """(splits, manifest) for this run: the split manifest beside the runs is made once and reused."""
    if cfg["data_mirror"]:
        os.environ["NANOBERT_DATA"] = str(cfg["data_mirror"])
    label_map = json.loads(cfg["label_map"]) if isinstance(cfg["label_map"], str) else cfg["label_map"]
    normalize = cfg["normalize"]
    dataset = data.load_dataset(cfg["data"], three_class=cfg["three_class"], normalize=normalize,
                                text_column=cfg["text_column"], label_column=cfg["label_column"], label_map=label_map)
    split_path = Path(cfg["split"] or run_dir.parent / "split.json")
    parts = data.get_split(dataset, split_path, seed=cfg["split_seed"])
    manifest = data.load_manifest(split_path)
    # Subsets for quick runs, the same for every model of a comparison with the same settings.
    for part, limit in (("train", cfg["max_train"]), ("validation", cfg["max_val"])):
        if limit and limit < len(parts[part]):
            keep = np.sort(np.random.default_rng(cfg["split_seed"]).permutation(len(parts[part]))[:limit])
            parts[part] = parts[part].subset(keep.tolist())
    return dataset, parts, manifest, split_path


def load_parent_run(run_dir, manifest, what):
    """A trained run this one builds on (a teacher, or the base of LoRA), checked to share the split
    and to hold a full fp32 model."""
    info = evaluation.read_run_info(run_dir)
    if info.get("quantized"):
        raise TrainError(f"{run_dir}: an int8 export (eval.py export); expected a run with fp32 weights as the {what}")
    if evaluation.is_lora_run(run_dir):
        raise TrainError(f"{run_dir}: a LoRA run; expected a run with a full model (teacher or student) as the {what}")
    net, _, info = evaluation.load_run(run_dir)
    if info["split_sha256"] != manifest["manifest_sha256"]:
        raise TrainError(f"{run_dir}: the {what} was trained on another split "
                         f"({info['split_sha256'][:12]}… vs {manifest['manifest_sha256'][:12]}…); expected the same")
    return net, info


def rank_teacher_layers(cfg, teacher, val_part, device):
    """--layers auto: each teacher layer's importance (distill.layer_importance) on a fixed
    subset of the validation split, logged and kept in run.json."""
    if cfg["importance_texts"] < 1:
        raise TrainError(f"--importance-texts {cfg['importance_texts']}: expected at least 1 validation text")
    n = min(len(val_part), cfg["importance_texts"])
    keep = np.sort(np.random.default_rng(cfg["split_seed"]).permutation(len(val_part))[:n]).tolist()
    part = val_part.subset(keep)
    loader = data.Loader(part.texts, part.labels, data.load_tokenizer(cfg["teacher"]), cfg["max_length"],
                         cfg["eval_batch_size"])
    batches = [tuple(b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")) for b in loader]
    t0 = time.time()
    scores = distill.layer_importance(teacher.to(device), batches)
    ranking = sorted(range(1, len(scores) + 1), key=lambda i: -scores[i - 1])
    cfg.update(layer_importance=scores, layer_ranking=ranking, importance_seconds=time.time() - t0, importance_n=n)
    print(f"layer importance on {n} validation texts ({cfg['importance_seconds']:.0f}s; KL of the teacher without "
          "the layer from the teacher):")
    print("  " + ", ".join(f"{i}: {scores[i - 1]:.4f}" for i in ranking) + "  (most important first)")
    return scores


def build_model(cfg, label_names, manifest, val_part, device, run_dir):
    """(model, tokenizer folder, teacher or None) for the method."""
    id2label = dict(enumerate(label_names))
    if cfg["method"] == "distill":
        if not cfg["teacher"]:
            raise TrainError("distill needs --teacher RUN_DIR (a teacher run written by `train.py teacher`)")
        teacher, _ = load_parent_run(cfg["teacher"], manifest, "teacher")
        teacher.requires_grad_(False)
        n = teacher.config.num_hidden_layers
        importance = None
        if str(cfg["layers"]).startswith("auto"):
            distill.parse_layers(cfg["layers"], n, [0.0] * n)  # a bad spec fails now, not after the measurement
            if cfg["resume"]:  # the layers the checkpoint was trained with, not a new measurement's
                before = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
                cfg.update({k: before[k] for k in ("layer_importance", "layer_ranking", "importance_seconds", "importance_n")})
                importance = before["layer_importance"]
            else:
                importance = rank_teacher_layers(cfg, teacher, val_part, device)
        cfg["teacher_layers"] = distill.parse_layers(cfg["layers"], n, importance)
        student = distill.make_student(teacher, cfg["teacher_layers"])
        return student, Path(cfg["teacher"]), teacher
    if cfg["method"] == "lora" and cfg["base"]:
        net, info = load_parent_run(cfg["base"], manifest, "base run")
        if [net.config.id2label[i] for i in range(net.config.num_labels)] != list(label_names):
            raise TrainError(f"{cfg['base']}: classes {list(net.config.id2label.values())}, the data has "
                             f"{list(label_names)}; expected the same")
    else:
        net = M.from_pretrained(cfg["model"], id2label=id2label)
    if cfg["method"] == "lora":
        trainable = [t for t in cfg["lora_trainable"].split(",") if t]
        if any(k.startswith("bert.pooler.") for k in net.load_report.initialized) and "pooler" not in trainable:
            # The checkpoint has no pooler (a bare encoder such as bge-small-en): it starts random,
            # and a random layer that the adapter does not hold would be drawn anew at every load.
            # Train it with the head and keep it in the adapter file.
            trainable.append("pooler")
            print("the base model has no pooler: training it with the classifier and saving it in the adapter")
        cfg["lora_trainable"] = ",".join(trainable)
        lora.inject_lora(net, cfg["lora_targets"].split(","), cfg["lora_r"], cfg["lora_alpha"], cfg["lora_dropout"], trainable)
        print(lora.lora_report(net))
    return net, M.resolve_model_dir(cfg["model"]), None


def set_dropout(net, p):
    """Override every dropout probability (e.g. 0 for an exactly reproducible comparison)."""
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
        if isinstance(m, M.BertSelfAttention):
            m.dropout_p = p


def make_optimizer(net, cfg, fused):
    # No weight decay on biases and LayerNorm weights: decaying them towards zero only hurts.
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        if p.requires_grad:
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg["lr"], fused=fused)


def lr_at(step, total, cfg):
    """Linear warmup over the first `warmup` fraction of the steps, then linear decay to zero."""
    warm = max(1, int(cfg["warmup"] * total))
    if step < warm:
        return cfg["lr"] * (step + 1) / warm
    return cfg["lr"] * max(0.0, (total - step) / max(1, total - warm))


def compute_loss(cfg, net, batch, teacher, weight):
    """The training loss of one batch, and its parts for the log."""
    out = net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    if teacher is None:
        loss = F.cross_entropy(out.logits.float(), batch["labels"], weight=weight)
        return loss, {}
    t_out = distill.teacher_forward(teacher, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return distill.distill_loss(out, t_out, batch["labels"], cfg["teacher_layers"], batch["attention_mask"], cfg["alpha"],
                                cfg["beta"], cfg["gamma"], cfg["temperature"], cfg["hidden_loss"])


# -----------------------------------------------------------------------------
# Checkpoints: safetensors for the tensors, JSON for the rest; one file, written atomically


def save_checkpoint(path, net, opt, loader, state):
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for i, s in opt_state["state"].items():
        for k, v in s.items():
            tensors[f"optim.{i}.{k}"] = v.contiguous().clone() if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"param_groups": opt_state["param_groups"], "sampler": loader.state_dict(), **state}
    files.atomic_write(path, lambda p: save_file(tensors, p, metadata={"state": json.dumps(meta)}))


def load_checkpoint(path, net, opt, loader):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["state"])
    tensors = load_file(path)
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta.pop("param_groups")})
    loader.load_state_dict(meta.pop("sampler"))
    torch.set_rng_state(tensors["rng.torch"])
    return meta


# -----------------------------------------------------------------------------
# The loop


def log_line(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def progress(iterable, total, enabled, desc):
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, leave=False)
        except ImportError:
            pass
    return iterable


def save_model(net, cfg, run_dir, tokenizer_dir):
    if cfg["method"] == "lora":
        lora.save_adapter(net, run_dir, base_model=cfg["base_model"])
        M.copy_tokenizer_files(tokenizer_dir, run_dir)
    else:
        M.save_pretrained(net, run_dir, tokenizer_dir=tokenizer_dir)


def train(cfg, run_dir):
    """Train one model into run_dir; returns its summary."""
    t_start = time.time()
    run_dir = Path(run_dir)
    device = pick_device(cfg["device"])
    memory = PeakMemory(device)
    world, rank = setup_distributed(device)
    main_process = rank == 0
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    torch.manual_seed(cfg["seed"])
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.safetensors"
    if not cfg["resume"] and main_process:
        for name in ("metrics.jsonl", "summary.json", "checkpoint.safetensors", "model.safetensors",
                     "adapter_model.safetensors"):
            (run_dir / name).unlink(missing_ok=True)
    elif cfg["resume"] and not ckpt_path.exists():
        raise TrainError(f"{ckpt_path}: no checkpoint to resume from; run without --resume to start afresh")

    dataset, parts, manifest, split_path = load_data(cfg, run_dir)
    net, tokenizer_dir, teacher = build_model(cfg, dataset.label_names, manifest, parts["validation"], device, run_dir)
    if cfg["method"] == "lora":
        model_dir = M.resolve_model_dir(cfg["model"])
        # A hub name stays a name; a local folder becomes an absolute path, valid from anywhere.
        cfg["base_model"] = cfg["model"] if not Path(cfg["model"]).expanduser().is_dir() else str(model_dir.resolve())
    if cfg["dropout"] is not None:
        set_dropout(net, cfg["dropout"])
    net.to(device)
    if teacher is not None:
        teacher.to(device)
    tokenizer = data.load_tokenizer(tokenizer_dir)
    train_part, val_part = parts["train"], parts["validation"]
    if cfg["batch_size"] % world:
        raise TrainError(f"--batch-size {cfg['batch_size']} is the global batch: expected a multiple of the {world} processes")
    loader = data.Loader(train_part.texts, train_part.labels, tokenizer, cfg["max_length"], cfg["batch_size"],
                         shuffle=True, seed=cfg["seed"], num_replicas=world, rank=rank)
    val_loader = data.Loader(val_part.texts, val_part.labels, tokenizer, cfg["max_length"], cfg["eval_batch_size"])
    weight = data.class_weights(train_part.labels, len(dataset.label_names)).to(device) if cfg["class_weights"] else None
    ddp = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net

    opt = make_optimizer(net, cfg, fused=device.type in ("cpu", "cuda"))
    steps_per_epoch = math.ceil(len(loader) / cfg["accum"])
    total_steps = steps_per_epoch * cfg["epochs"]
    total_params, trainable_params = M.count_parameters(net)
    info = {**cfg, "run_dir": str(run_dir), "split": str(split_path), "split_sha256": manifest["manifest_sha256"],
            "data_sha256": manifest["data_sha256"], "id2label": {str(i): n for i, n in enumerate(dataset.label_names)},
            "params_total": total_params, "params_trainable": trainable_params, "world_size": world,
            "teacher_layers": getattr(net, "teacher_layers", None), "torch": torch.__version__,
            "train_size": len(train_part), "val_size": len(val_part), "command": " ".join(sys.argv)}
    metrics_path = run_dir / "metrics.jsonl"
    state = {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": None, "loss_sum": 0.0, "loss_count": 0, "epoch_loss": None}
    if cfg["resume"]:
        state.update(load_checkpoint(ckpt_path, net, opt, loader))
        if main_process:
            print(f"resumed {run_dir} at epoch {state['epoch'] + 1}, step {state['step']}")
    elif main_process:
        files.atomic_write(run_dir / "run.json", lambda p: Path(p).write_text(json.dumps(info, indent=2) + "\n"))
        print(f"{cfg['method']}: {len(train_part)} train / {len(val_part)} validation texts, {steps_per_epoch} steps per "
              f"epoch, padding {loader.padding_fraction():.1%}, trainable {trainable_params:,} of {total_params:,}")

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg["bf16"])
    crash_at = int(os.environ.get("NANOBERT_CRASH_AT_STEP", 0))  # for the resume test: a real kill mid-epoch
    while state["epoch"] < cfg["epochs"]:
        epoch = state["epoch"]
        ddp.train()
        t0, seen, done_before = time.time(), 0, loader.sampler.batches_done
        bar = progress(loader, len(loader) - done_before, cfg["progress"] and main_process, f"{cfg['method']} epoch {epoch + 1}")
        for i, batch in enumerate(bar, start=done_before):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast:
                loss, parts_ = compute_loss(cfg, ddp, batch, teacher, weight)
            if not torch.isfinite(loss):
                raise TrainError(f"non-finite loss ({loss.item()}) at epoch {epoch + 1}, batch {i + 1}, step {state['step']}; "
                                 f"stopped. The last good checkpoint is {ckpt_path if ckpt_path.exists() else 'none'}; "
                                 "try a lower --lr or --clip")
            (loss / cfg["accum"]).backward()
            seen += len(batch["labels"]) * world
            if (i + 1) % cfg["accum"] and i + 1 < len(loader):
                continue  # accumulate gradients over `accum` batches before one optimizer step
            lr = lr_at(state["step"], total_steps, cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg["clip"]) if cfg["clip"] else None
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["step"] += 1
            if world > 1:  # log the loss of the global batch, not of this process's share
                loss = loss.detach().clone()
                dist.all_reduce(loss)
                loss /= world
            state["loss_sum"] += loss.item()
            state["loss_count"] += 1
            speed = seen / (time.time() - t0)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}", sent_s=f"{speed:.0f}")
            if main_process and state["step"] % cfg["log_every"] == 0:
                log_line(metrics_path, {"step": state["step"], "epoch": epoch + 1, "loss": loss.item(), "lr": lr,
                                        "grad_norm": None if grad_norm is None else grad_norm.item(),
                                        "sentences_per_s": speed, **parts_})
            if main_process and cfg["checkpoint_every"] and state["step"] % cfg["checkpoint_every"] == 0:
                save_checkpoint(ckpt_path, net, opt, loader, state)
            if crash_at and state["step"] == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)
        # End of epoch: validation, best model, checkpoint.
        val = evaluation.evaluate(net, val_loader, val_part.labels, len(dataset.label_names))
        state["epoch"] = epoch + 1
        state["epoch_loss"] = state["loss_sum"] / max(1, state["loss_count"])
        state["loss_sum"], state["loss_count"] = 0.0, 0
        if main_process:
            record = {"epoch": epoch + 1, "step": state["step"], "train_loss": state["epoch_loss"],
                      "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], "epoch_seconds": time.time() - t0}
            log_line(metrics_path, record)
            better = val["macro_f1"] > state["best_f1"]
            if better:
                state["best_f1"], state["best_epoch"] = val["macro_f1"], epoch + 1
                save_model(net, cfg, run_dir, tokenizer_dir)
            print(f"{cfg['method']} epoch {epoch + 1}/{cfg['epochs']}: mean loss {state['epoch_loss']:.4f}, validation accuracy "
                  f"{val['accuracy']:.4f} macro-F1 {val['macro_f1']:.4f}{' (best, saved)' if better else ''}, "
                  f"{time.time() - t0:.0f}s")
            save_checkpoint(ckpt_path, net, opt, loader, state)

    summary = {"method": cfg["method"], "wall_seconds": time.time() - t_start, "steps": state["step"],
               "final_train_loss": state["epoch_loss"], "best_epoch": state["best_epoch"], "best_val_macro_f1": state["best_f1"],
               "peak_memory_mb": memory.mb(), "params_total": total_params, "params_trainable": trainable_params}
    if main_process:
        if cfg["method"] == "lora" and cfg["export_merged"]:
            best, _, _ = evaluation.load_run(run_dir, merge=False)
            M.save_pretrained(best, run_dir / "merged", tokenizer_dir=run_dir, state_dict=lora.merged_state_dict(best))
        files.atomic_write(run_dir / "summary.json", lambda p: Path(p).write_text(json.dumps(summary, indent=2) + "\n"))
        ckpt_path.unlink(missing_ok=True)  # the run is complete: the best model is saved beside
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


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


# -----------------------------------------------------------------------------
# Command line


def add_common(p):
    d = DEFAULTS
    g = p.add_argument_group("data")
    g.add_argument("--preset", help="presets/<NAME>.toml or a .toml path; flags override it")
    g.add_argument("--data", help=f"'davidson', 'hate_speech18' or a .csv/.jsonl path (default {d['data']})")
    g.add_argument("--data-mirror", help="offline folder holding davidson/ and hate_speech18/ (sets NANOBERT_DATA)")
    g.add_argument("--three-class", action="store_const", const=True, help="Davidson: hate / offensive / neither")
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
    g.add_argument("--bf16", action="store_const", const=True, help="bfloat16 autocast (CPU and CUDA)")
    g.add_argument("--class-weights", action="store_const", const=True, help="inverse-frequency class weights in the loss")
    g.add_argument("--dropout", type=float, help="override every dropout probability of the model")
    g.add_argument("--seed", type=int, help="seed for initialisation, dropout and batch order (default 0)")
    g.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    g.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default auto)")
    g = p.add_argument_group("output")
    g.add_argument("--checkpoint-every", type=int, help="also checkpoint every N optimizer steps (default: each epoch only)")
    g.add_argument("--log-every", type=int, help=f"log the loss every N steps to metrics.jsonl (default {d['log_every']})")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False, help="no progress bars")
    g.add_argument("--resume", action="store_const", const=True,
                   help="continue from the run folder's checkpoint (all: keep finished runs, resume the interrupted one)")


def add_model(p):
    p.add_argument("--model", help=f"pretrained model: name, folder, or a name under $NANOBERT_MODELS (default {M.DEFAULT_MODEL})")


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


def run_all(args):
    runs = Path(args.runs or Path("runs") / (Path(args.preset).stem if args.preset else Path(str(args.data or "davidson")).stem))
    plan = [("teacher", "teacher", {}), ("odd", "distill", {"layers": "odd"}), ("even", "distill", {"layers": "even"}),
            ("lora", "lora", {})]
    if args.extended:
        plan[3:3] = [(name, "distill", {"layers": name}) for name in ("auto", "bottom", "top")]
    summaries = {}
    for name, method, extra in plan:
        summaries[name] = run_one(args, runs, name, method, extra)
    exports = []
    if args.extended:
        # LoRA on the student that did best on validation: chosen without looking at the test set.
        students = [n for n, m, _ in plan if m == "distill"]
        best = max(students, key=lambda n: summaries[n]["best_val_macro_f1"])
        print(f"best student on validation: {best}")
        name = f"lora-{best}"
        extra = {"base": str(runs / best), "model": str(runs / best)}
        if args.lora_trainable is None:  # the student's pooler and head are trained already: adapters only
            extra["lora_trainable"] = ""
        summaries[name] = run_one(args, runs, name, "lora", extra)
        plan.append((name, "lora", {}))
        for source in ("teacher", best, name):
            print(f"== {source}-int8 ==")
            evaluation.export_int8(runs / source, runs / f"{source}-int8", measure=False)
            exports.append(runs / f"{source}-int8")
    evaluation.report([runs / name for name, _, _ in plan] + exports, runs / "report")
    for name, s in summaries.items():
        print(f"{name:14s} {s['wall_seconds']:7.0f}s  best validation macro-F1 {s['best_val_macro_f1']:.4f}")


def run_one(args, runs, name, method, extra):
    """One run of `all` into runs/name, or its summary if --resume finds it finished."""
    cfg = settings(args, method)
    cfg.update(extra)
    cfg["teacher"] = str(runs / "teacher")
    if getattr(args, f"{method}_lr") is not None:
        cfg["lr"] = getattr(args, f"{method}_lr")
    cfg["split"] = cfg["split"] or str(runs / "split.json")
    if cfg["resume"]:  # carry on where `all` stopped: finished runs stay, an interrupted one resumes
        if (runs / name / "summary.json").exists():
            print(f"== {name}: done before, kept ==")
            return json.loads((runs / name / "summary.json").read_text())
        cfg["resume"] = (runs / name / "checkpoint.safetensors").exists()
    print(f"== {name} ==")
    return train(cfg, runs / name)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "all":
            run_all(args)
        else:
            train(settings(args, args.command), args.out)
    except (TrainError, data.DataError, evaluation.RunError, FileNotFoundError, ValueError, ConnectionError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
