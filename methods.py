"""
The model each method trains, built before its first step:

    teacher   the pretrained encoder with a new classification head (pretrained.from_pretrained)
    distill   a student made of some of a teacher run's layers (distill.make_student); with
              --layers auto, the layers the teacher needs most, measured on validation first;
              with --ensemble, trained towards several teachers at once (distill.EnsembleTeacher)
    lora      adapters on a pretrained model, or on a trained run (--base), the rest frozen
    pretrain  the pretrained encoder with BERT's masked-LM head (the checkpoint's, or a fresh one),
              for continued pretraining on the training texts (mlm.py); its run folder is then a
              --model for teacher or lora

A run this one builds on (--teacher, --base) is checked first: trained on the same split, and a
full fp32 model (not an int8 export, not a LoRA adapter). Its weights' sha256 goes into the results:
a LoRA adapter is a change to its base's weights, and every reader of the run checks that the base is
still the one (runs.check_base); a student keeps its teacher's for provenance only (its own weights
do not depend on the teacher once trained).
"""

import time
from pathlib import Path

import torch

import batching
import distill
import files
import lora
import pretrained
import runs
import wordpiece
from settings import Settings, TrainError, parent_run


def build_model(s: Settings, dataset, manifest, val_part, device, run_dir, results):
    """(model, tokenizer folder, teacher or None) for the method."""
    check_model_run(s)
    if s.method == "pretrain":
        return pretrained.from_pretrained(s.model, masked_lm=True), pretrained.resolve_model_dir(s.model), None
    if s.method == "distill":  # a student has its teacher's head, and so its problem type
        return build_student(s, manifest, val_part, device, run_dir, results)
    if s.method == "lora":
        net, folder = build_lora(s, dataset, manifest, results)
        return net, folder, None
    net = pretrained.from_pretrained(s.model, id2label=dict(enumerate(dataset.label_names)))
    set_problem_type(net, dataset)
    return net, pretrained.resolve_model_dir(s.model), None


def check_model_run(s: Settings):
    """--model may be a run folder (a pretraining run's, train.py pretrain): then a finished one, not
    the last epoch an interrupted run saved."""
    folder = Path(s.model).expanduser()
    if s.method != "distill" and not s.base and (folder / runs.RUN_FILE).is_file() and not runs.is_finished(folder):
        raise TrainError(f"--model {s.model}: a run folder, {runs.unfinished_note(folder)} (no summary.json); expected a "
                         "finished run: continue it with its command and --resume")


def set_problem_type(net, dataset):
    """Two questions (toxic, hate) are two sigmoids, written as transformers' multi-label problem type."""
    net.config.problem_type = "multi_label_classification" if dataset.multilabel else None


def set_dropout(net, p):
    """Override every dropout probability (e.g. 0 for an exactly reproducible comparison)."""
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout):  # attention's too: an nn.Dropout, in the plain model and the fast one
            m.p = p


def load_parent(s: Settings, flag, folder, manifest):
    """A trained run this one builds on (--teacher, --base), checked to share the split and to hold
    a full fp32 model."""
    info = parent_run(flag, folder)
    what = {"teacher": "teacher", "ensemble": "teacher", "base": "base run"}[flag]
    if info.get("quantized"):
        raise TrainError(f"{folder}: an int8 export (eval.py export); expected a run with fp32 weights as the {what}")
    if runs.is_lora_run(folder):
        raise TrainError(f"{folder}: a LoRA run; expected a run with a full model (teacher or student) as the {what}")
    net, _, info = runs.load_run(folder)
    if info["split_sha256"] != manifest["manifest_sha256"]:
        raise TrainError(f"{folder}: the {what} was trained on another split "
                         f"({info['split_sha256'][:12]}… vs {manifest['manifest_sha256'][:12]}…); expected the same")
    return net


# -----------------------------------------------------------------------------
# distill: a student from the teacher's layers


def build_student(s: Settings, manifest, val_part, device, run_dir, results):
    if not s.teacher:
        raise TrainError("distill needs --teacher RUN_DIR (a teacher run written by `train.py teacher`)")
    teacher = load_parent(s, "teacher", s.teacher, manifest).requires_grad_(False)
    results["teacher_sha256"] = files.sha256_file(runs.weights_file(s.teacher))
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
    student = distill.make_student(teacher, results["teacher_layers"])
    if s.ensemble:
        teacher = distill.EnsembleTeacher([teacher, *load_ensemble(s, teacher, manifest, results)], s.temperature)
    return student, Path(s.teacher), teacher


def load_ensemble(s: Settings, teacher, manifest, results):
    """--ensemble: the other teachers, each checked like --teacher and to answer the same questions."""
    others, names = [], teacher.config.id2label
    folders = [f.strip() for f in s.ensemble.split(",") if f.strip()]
    for folder in folders:
        if Path(folder).resolve() == Path(s.teacher).resolve():
            raise TrainError(f"--ensemble {folder}: that is --teacher itself; expected other teacher runs (its other seeds)")
        other = load_parent(s, "ensemble", folder, manifest).requires_grad_(False)
        if other.config.id2label != names or other.config.problem_type != teacher.config.problem_type:
            raise TrainError(f"--ensemble {folder}: answers {list(other.config.id2label.values())}, --teacher "
                             f"{list(names.values())}; expected teachers of the same labels")
        others.append(other)
    if not others:
        raise TrainError(f"--ensemble {s.ensemble!r}: no run folder named; expected comma-separated teacher runs")
    results["ensemble_sha256"] = ",".join(files.sha256_file(runs.weights_file(f)) for f in folders)
    return others


def rank_teacher_layers(s: Settings, teacher, val_part, device, results):
    """--layers auto: each teacher layer's importance (distill.layer_importance) on a fixed subset of
    the validation split, printed and kept in the run's results."""
    if s.importance_texts < 1:
        raise TrainError(f"--importance-texts {s.importance_texts}: expected at least 1 validation text")
    part = runs.subset_for_quick_runs(val_part, s.importance_texts, s.split_seed)
    loader = batching.Loader(part.texts, part.labels, wordpiece.load_tokenizer(s.teacher), s.max_length, s.eval_batch_size)
    batches = [tuple(b[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids")) for b in loader]
    t0 = time.time()
    scores = distill.layer_importance(teacher.to(device), batches)
    ranking = sorted(range(1, len(scores) + 1), key=lambda i: -scores[i - 1])
    results.update(layer_importance=scores, layer_ranking=ranking, importance_seconds=time.time() - t0, importance_n=len(part))
    print(f"layer importance on {len(part)} validation texts ({results['importance_seconds']:.0f}s; KL of the teacher "
          "without the layer from the teacher):")
    print("  " + ", ".join(f"{i}: {scores[i - 1]:.4f}" for i in ranking) + "  (most important first)")
    return scores


# -----------------------------------------------------------------------------
# lora: adapters on a pretrained model or a trained run


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
    results["base_sha256"] = files.sha256_file(runs.base_weights(s.model))  # the weights the adapter changes
    return net, model_dir
