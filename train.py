"""
Train the arms of the comparison with one plain, explicit loop:

    python train.py teacher --preset quick                      # full fine-tuning of the pretrained model
    python train.py distill --preset quick --teacher runs/quick/teacher --layers odd
    python train.py lora    --preset quick                      # LoRA on the pretrained model
    python train.py lora    --preset quick --base runs/quick/odd    # LoRA on a trained student
    python train.py pretrain --preset quick --out runs/quick/mlm   # masked-LM pretraining on the training texts,
    python train.py teacher --preset quick --model runs/quick/mlm  #     then fine-tuning from it
    python train.py all     --preset quick                      # teacher -> odd -> even -> LoRA -> report
    python train.py all     --preset quick --extended           # ... + auto/bottom/top students, LoRA on the
                                                                #     best student, int8 exports

Every flag overrides the preset (presets/<name>.toml), which overrides the defaults of the settings
(settings.py). What a run folder holds is runs.py's business. A finished run is never changed,
except by --overwrite; an unfinished one continues with --resume, with the settings it started with;
one process trains into a folder at a time (run_folder.py).

Read top to bottom: setting up a run (the settings checked, the data, the model, the loaders, the
optimizer, the folder); one epoch (batches, loss, backward, clip, step, log); the end of an epoch
(validation, the best model, a checkpoint); finishing (temperatures and thresholds, test scores,
the summary, the model card); the command line. Around them, one file per concept: settings.py,
run_folder.py, training_data.py, methods.py (the model each method trains), optimizer.py,
distributed.py, memory.py, calibration.py, and compare.py (`all`).

Pretraining (`pretrain`, mlm.py) is the same loop with another objective: BERT's masked-language-model
loss on the training part of the split, masks drawn anew for every batch; it has no validation (its
texts are the training part's alone), so each epoch's model is saved and the last one kept, and the
folder holds the encoder with its masked-LM head, which `teacher --model` and `lora --model` take.

Several processes: `torchrun --nproc_per_node N train.py ...` trains with DistributedDataParallel
(distributed.py); --batch-size stays the global batch, split across the processes.
"""

import dataclasses
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import batching
import calibration
import card
import checkpoint
import classifier
import compare
import distill
import distributed
import files
import lora
import metrics
import mlm
import model as M
import precision
import pretrained
import run_folder
import runs
import settings
import wordpiece
from memory import PeakMemory
from methods import build_model, set_dropout
from optimizer import lr_at, make_optimizer
from settings import Settings, TrainError
from training_data import load_data


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
    loader: batching.Loader
    val_loader: batching.Loader
    opt: torch.optim.Optimizer
    weight: torch.Tensor | None
    total_steps: int
    results: dict
    memory: PeakMemory
    vocab: mlm.Vocabulary | None = None  # pretraining: the tokens its masking uses
    t_start: float = field(default_factory=time.time)
    state: dict = field(default_factory=lambda: {"epoch": 0, "step": 0, "best_f1": -1.0, "best_epoch": None, "loss_sum": 0.0,
                                                 "loss_count": 0, "epoch_loss": None, "wall_before": 0.0})

    @property
    def main(self):
        return self.rank == 0

    def wall_seconds(self):
        """This process's time plus that of the processes before a resume."""
        return self.state["wall_before"] + time.time() - self.t_start


# -----------------------------------------------------------------------------
# Setting up a run: the settings, the data, the model, the loaders, the optimizer, the folder


def setup(s: Settings, run_dir: Path, work: Path) -> Training:
    """Check and load everything; only then touch the run folder (work: where the run trains)."""
    settings.check(s)
    before = run_folder.check(s, run_dir, work)  # on --resume: the interrupted run's run.json
    device = distributed.pick_device(s.device)
    memory = PeakMemory(device)
    world, rank = distributed.setup(device)
    if s.threads:
        torch.set_num_threads(s.threads)
    if s.batch_size % world:
        raise TrainError(f"--batch-size {s.batch_size} is the global batch: expected a multiple of the {world} processes")
    random.seed(s.seed)
    np.random.seed(s.seed)
    torch.manual_seed(s.seed)
    dataset, parts, manifest = load_data(s, run_dir)
    if s.select_label and (not dataset.multilabel or s.select_label not in dataset.label_names):
        raise TrainError(f"--select-label {s.select_label}: expected one of the labels of a multi-label task "
                         f"({', '.join(dataset.label_names) if dataset.multilabel else 'this one has one class per text'})")
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
    # auto measures (precision.py); a resumed run keeps what it started in.
    choice = recorded_precision(work, s) if s.resume else precision.choose(s.precision, device, fast=s.fast, config=net.config)
    precision.keep_freed_memory()
    precision.prepare(net, choice)
    if teacher is not None:
        precision.prepare(teacher.to(device), choice, inference=True)
    results.update(precision_chosen=choice.precision, precision_reason=choice.reason, precision_probe=choice.probe)
    if rank == 0:
        print(f"{s.method}: computing in {choice.precision} ({choice.reason})")
    tokenizer = wordpiece.load_tokenizer(tokenizer_dir)
    train_part, val_part = parts["train"], parts["validation"]
    loader = batching.Loader(train_part.texts, train_part.labels, tokenizer, s.max_length, s.batch_size,
                             shuffle=True, seed=s.seed, num_replicas=world, rank=rank)
    val_loader = batching.Loader(val_part.texts, val_part.labels, tokenizer, s.max_length, s.eval_batch_size, by_length=True)
    weight = None
    if s.class_weights:  # inverse class frequency; multi-label: each label's negatives per positive
        weight = batching.pos_weights(train_part.labels) if dataset.multilabel else \
            batching.class_weights(train_part.labels, len(dataset.label_names))
        weight = weight.to(device)
    ddp = distributed.wrap(net, world)
    opt = make_optimizer(net, s, fused=device.type in ("cpu", "cuda"))
    total_steps = math.ceil(len(loader) / s.accum) * s.epochs
    total, trainable = M.count_parameters(net)
    results.update(run_dir=str(run_dir), split_sha256=manifest["manifest_sha256"], data_sha256=manifest["data_sha256"],
                   id2label={str(i): n for i, n in enumerate(dataset.label_names)}, problem_type=net.config.problem_type,
                   params_total=total,
                   params_trainable=trainable, world_size=world, teacher_layers=results.get("teacher_layers"),
                   torch=torch.__version__, train_size=len(train_part), val_size=len(val_part), command=" ".join(sys.argv))
    t = Training(s, work, run_dir, device, world, rank, net, ddp, teacher, tokenizer_dir, loader, val_loader, opt, weight,
                 total_steps, results, memory, mlm.vocabulary(tokenizer) if s.method == "pretrain" else None)
    if s.resume:
        run_folder.check_same_inputs(run_dir, before, results)
        resume(t)
    elif t.main:
        # Everything is checked: from here on the folder is this run's.
        run_folder.claim(run_dir, work)
        runs.write_info(work, runs.RunInfo(dataclasses.asdict(s), results))
        print(f"{s.method}: {len(train_part)} train / {len(val_part)} validation texts, {len(loader)} batches per "
              f"epoch, padding {loader.padding_fraction():.1%}, trainable {trainable:,} of {total:,}")
    return t


def recorded_precision(work: Path, s: Settings) -> precision.Choice:
    """The precision a resumed run started in (run.json): its checkpoint's arithmetic goes on the
    same, whatever auto would measure today."""
    info = runs.read_info(work)
    chosen = info.get("precision_chosen") or ("bf16" if s.precision == "bf16" else "fp32")
    return precision.Choice(chosen, f"{chosen}, as the run started in ({info.get('precision_reason') or s.precision})",
                            fast=s.fast, probe=info.get("precision_probe"))


def resume(t: Training):
    """Continue from the checkpoint: the model, the optimizer, the RNG, the sampler and the books."""
    runs.remove_stale_temporaries(t.dir)
    try:
        meta = checkpoint.load(t.dir, t.net, t.opt)
    except (RuntimeError, ValueError, KeyError) as e:  # the settings matched, and still the model is another
        raise TrainError(f"{t.dir / runs.CHECKPOINT_FILE}: does not fit the model this command builds ({str(e).splitlines()[0]}); "
                         "expected the command the run was started with, and --resume") from None
    t.loader.load_state_dict(meta.pop("sampler"))
    t.state.update(meta)
    # The killed process worked past its checkpoint; its last log line says how long it ran.
    steps, epochs = runs.read_log(t.dir)
    t.state["wall_before"] = max([t.state["wall_before"]] + [r.get("wall_seconds", 0) for r in steps + epochs])
    if t.main:
        runs.trim_log(t.dir, t.state["step"], t.state["epoch"])  # the steps after the checkpoint are logged again
        print(f"resumed {t.dir} at epoch {t.state['epoch'] + 1}, step {t.state['step']}")


def save_checkpoint(t: Training):
    state = {k: v for k, v in t.state.items() if k != "wall_before"}
    checkpoint.save(t.dir, t.net, t.opt, {**state, "wall_before": t.wall_seconds(), "sampler": t.loader.state_dict()})


# -----------------------------------------------------------------------------
# One epoch: batches, loss, backward, clip, step, log


def compute_loss(s, net, batch, teacher, weight, teacher_layers=None):
    """The training loss of one batch, and its parts for the log."""
    if s.method == "pretrain":  # the masked tokens predicted (mlm.py)
        return mlm.mlm_loss(net, batch), {}
    out = net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    labels = batch["labels"]
    if teacher is None:
        if labels.dim() == 2:  # a multi-label task: a sigmoid per label, unannotated labels masked out
            return distill.masked_bce(out.logits, labels, weight), {}
        return F.cross_entropy(out.logits.float(), labels, weight=weight), {}
    t_out = distill.teacher_forward(teacher, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return distill.distill_loss(out, t_out, labels, teacher_layers, batch["attention_mask"], s.alpha, s.beta,
                                s.gamma, s.temperature, s.hidden_loss, pos_weight=weight if labels.dim() == 2 else None)


def train_epoch(t: Training, epoch: int):
    s, state = t.s, t.state
    t.ddp.train()
    t0, seen, done_before = time.time(), 0, t.loader.sampler.batches_done
    # For the tests: a real kill (or with NANOBERT_CRASH_SIGNAL=INT a real Ctrl-C) at a known step.
    crash_at = int(os.environ.get("NANOBERT_CRASH_AT_STEP", 0))
    crash_signal = signal.SIGINT if os.environ.get("NANOBERT_CRASH_SIGNAL") == "INT" else signal.SIGKILL
    bar = files.progress(t.loader, len(t.loader) - done_before, f"{s.method} epoch {epoch + 1}", s.progress and t.main)
    for i, batch in enumerate(bar, start=done_before):
        if t.vocab:  # pretraining: BERT's masks, drawn for this batch from (seed, epoch, batch) alone
            batch = mlm.mask_batch(batch, t.vocab, s.mask_rate, mlm.batch_generator(s.seed, epoch, i))
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
        loss = distributed.mean(loss, t.world)  # the loss of the global batch, not of this process's share
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
            save_checkpoint(t)
        if crash_at and state["step"] == crash_at:
            os.kill(os.getpid(), crash_signal)
    return time.time() - t0


# -----------------------------------------------------------------------------
# The end of an epoch: validation, the best model so far, a checkpoint


def validation_scores(t: Training, thresholds=None):
    """Accuracy and macro-F1 on the validation split; multi-label: the mean over the labels of each
    label's scores at its threshold (0.5 while training), on the texts that annotate it."""
    probs = classifier.predict_probs(t.net, t.val_loader).numpy()
    labels = t.val_loader.labels.numpy()
    if labels.ndim == 1:
        return metrics.metrics(labels.tolist(), probs.argmax(-1).tolist(), probs.shape[1],
                               probs[:, 1].tolist() if probs.shape[1] == 2 else None)
    names = [t.net.config.id2label[j] for j in range(labels.shape[1])]
    return metrics.multilabel_metrics(labels, probs, names, thresholds)


def end_epoch(t: Training, epoch: int, seconds: float):
    """Validation, the best model so far, a checkpoint."""
    s, state = t.s, t.state
    if s.method == "pretrain":
        return end_pretraining_epoch(t, epoch, seconds)
    val = validation_scores(t)
    state["epoch"] = epoch + 1
    state["epoch_loss"] = state["loss_sum"] / max(1, state["loss_count"])
    state["loss_sum"], state["loss_count"] = 0.0, 0
    if not t.main:
        return
    per_label = {f"val_{name}_macro_f1": m["macro_f1"] for name, m in val.get("labels", {}).items()}
    runs.log(t.dir, "epoch", {"epoch": epoch + 1, "step": state["step"], "train_loss": state["epoch_loss"],
                              "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"], **per_label,
                              "epoch_seconds": seconds, "wall_seconds": t.wall_seconds()})
    score = val["labels"][s.select_label]["macro_f1"] if s.select_label else val["macro_f1"]  # what picks the best
    better = score > state["best_f1"] or state["best_epoch"] is None  # the first epoch always counts
    if better:
        state["best_f1"], state["best_epoch"] = score, epoch + 1
        runs.save_model(t.net, t.dir, t.tokenizer_dir, t.results.get("base_model") if s.method == "lora" else None)
    picked = f", {s.select_label} macro-F1 {score:.4f}" if s.select_label else ""
    print(f"{s.method} epoch {epoch + 1}/{s.epochs}: mean loss {state['epoch_loss']:.4f}, validation accuracy "
          f"{val['accuracy']:.4f} macro-F1 {val['macro_f1']:.4f}{picked}{' (best, saved)' if better else ''}, {seconds:.0f}s")
    save_checkpoint(t)


def end_pretraining_epoch(t: Training, epoch: int, seconds: float):
    """Pretraining has no validation (its texts are the training part's alone): the model of every epoch
    is saved, the last one kept; a checkpoint."""
    state = t.state
    state["epoch"], state["best_epoch"] = epoch + 1, epoch + 1
    state["epoch_loss"] = state["loss_sum"] / max(1, state["loss_count"])
    state["loss_sum"], state["loss_count"] = 0.0, 0
    if not t.main:
        return
    runs.log(t.dir, "epoch", {"epoch": epoch + 1, "step": state["step"], "train_loss": state["epoch_loss"],
                              "epoch_seconds": seconds, "wall_seconds": t.wall_seconds()})
    runs.save_model(t.net, t.dir, t.tokenizer_dir)
    print(f"pretrain epoch {epoch + 1}/{t.s.epochs}: mean masked-LM loss {state['epoch_loss']:.4f} (saved), {seconds:.0f}s")
    save_checkpoint(t)


# -----------------------------------------------------------------------------
# Finishing: temperatures and thresholds, test scores, the model card, the summary (written last: it marks the run finished)


def choose_thresholds(t: Training, names, probs, labels):
    """Each label's decision threshold (multi-label), or that of class 1 (two classes: the same yes/no
    question), chosen on validation probabilities (N, C); keyed by the label's name."""
    targets = t.s.target_precision, t.s.target_recall
    if labels.ndim == 1:
        return {names[1]: metrics.best_threshold(labels, probs[:, 1], *targets)}
    return {name: metrics.best_threshold(labels[:, j], probs[:, j], *targets) for j, name in enumerate(names)}


def calibrate(t: Training, net) -> dict:
    """What run.json records of the best model on validation: its temperatures (calibration.py, with
    --calibrate on), the ECE before and after them, and the thresholds (two classes or multi-label)
    chosen on the calibrated probabilities."""
    logits, labels = classifier.predict_logits(net.to(t.device), t.val_loader), t.val_loader.labels.numpy()
    names, multilabel = [net.config.id2label[j] for j in range(net.config.num_labels)], net.config.multilabel
    temperatures = calibration.fit(logits.numpy(), labels, multilabel) if t.s.calibrate else None
    probs = calibration.probabilities(logits, multilabel, temperatures).numpy()
    before = calibration.ece_of(calibration.probabilities(logits, multilabel).numpy(), labels, names, multilabel)
    after = calibration.ece_of(probs, labels, names, multilabel)
    ece = {k: {"before": before[k], "after": after[k]} for k in before}
    out = {"calibration": {"bins": calibration.BINS, "validation_ece": ece}}
    if temperatures is not None:
        out["temperatures"] = calibration.by_name(temperatures, names, multilabel)
        print("temperatures fitted on validation: " + ", ".join(f"{k} {v:.3f}" for k, v in out["temperatures"].items())
              + "; validation ECE " + ", ".join(f"{k} {e['before']:.4f} -> {e['after']:.4f}" for k, e in ece.items()))
    if multilabel or len(names) == 2:  # three classes decide by the most probable
        out["thresholds"] = choose_thresholds(t, names, probs, labels)
        print("thresholds chosen on validation: " + ", ".join(f"{k} {v:.3f}" for k, v in out["thresholds"].items()))
    return out


def finish(t: Training):
    s, state = t.s, t.state
    if s.method == "pretrain":
        return finish_pretraining(t)
    summary = {"method": s.method, "wall_seconds": t.wall_seconds(), "steps": state["step"],
               "final_train_loss": state["epoch_loss"], "best_epoch": state["best_epoch"],
               "best_val_macro_f1": state["best_f1"], "peak_memory_mb": t.memory.mb(),
               "params_total": t.results["params_total"], "params_trainable": t.results["params_trainable"]}
    if t.main:
        best, tokenizer, info = runs.load_run(t.dir, merge=False)
        if s.method == "lora" and s.export_merged:
            pretrained.save_pretrained(best, t.dir / "merged", tokenizer_dir=t.dir, state_dict=lora.merged_state_dict(best))
        info.results.update(calibrate(t, best))  # the temperatures first, then the thresholds on what they give
        # The test split is scored once, for the model card; it never chose anything.
        test, _, _ = runs.load_test_split(t.dir, info)
        info.results["test"] = card.test_scores(best.to(t.device), tokenizer, info, test, s.eval_batch_size)
        runs.write_info(t.dir, info)
        if t.dir != t.final:  # a replacement, complete: it takes the old run's place only now
            runs.replace_run(t.dir, t.final)
            t.dir = t.final
        card.write_model_card(t.dir, summary)
        runs.write_summary(t.dir, summary)
        checkpoint.remove(t.dir)  # the run is complete: the best model is saved beside
    distributed.finish(t.world)
    return summary


def finish_pretraining(t: Training):
    """A pretraining run is finished once its last epoch's model is saved: no classifier, so no thresholds,
    no test scores and no model card; the summary marks it finished."""
    state = t.state
    summary = {"method": t.s.method, "wall_seconds": t.wall_seconds(), "steps": state["step"],
               "final_train_loss": state["epoch_loss"], "peak_memory_mb": t.memory.mb(),
               "params_total": t.results["params_total"], "params_trainable": t.results["params_trainable"]}
    if t.main:
        if t.dir != t.final:  # a replacement, complete: it takes the old run's place only now
            runs.replace_run(t.dir, t.final)
            t.dir = t.final
        runs.write_summary(t.dir, summary)
        checkpoint.remove(t.dir)
    distributed.finish(t.world)
    return summary


def train(s: Settings, run_dir) -> dict:
    """Train one model into run_dir; returns its summary. A run that fails before its first checkpoint
    leaves no folder behind; after it, the folder waits for --resume (run_folder.py)."""
    run_dir = Path(run_dir)
    t_start = time.time()
    with run_folder.lock(run_dir):  # one writer at a time, from the first check to the last rename
        work, existed = run_folder.where(s, run_dir)
        try:
            t = setup(s, run_dir, work)
            t.t_start = t_start  # the run's time includes loading the data and the model
            while t.state["epoch"] < s.epochs:
                seconds = train_epoch(t, t.state["epoch"])
                end_epoch(t, t.state["epoch"], seconds)
            return finish(t)
        except KeyboardInterrupt:  # Ctrl-C: one line that says what was kept
            run_folder.discard(work, existed)
            raise KeyboardInterrupt(run_folder.interrupted(run_dir, work)) from None
        except BaseException:
            run_folder.discard(work, existed)
            raise


# -----------------------------------------------------------------------------
# The command line (its flags: settings.build_parser)


def main(argv=None):
    args = settings.build_parser(__doc__).parse_args(argv)
    try:
        if args.command == "all":
            compare.run_all(args, train=train)
        else:
            train(settings.resolve(args, args.command), args.out)
    except KeyboardInterrupt as e:  # train() says what it kept
        sys.exit(str(e) or "interrupted; an interrupted run continues from its last checkpoint with the same command and --resume")
    except (TrainError, files.DataError, runs.RunError, FileNotFoundError, ValueError, ConnectionError) as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # read-only folder, a path under a file, a full disk
        sys.exit(f"error: {files.os_error_message(e)}")


if __name__ == "__main__":
    main()
