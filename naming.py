"""
Naming runs: what a run is called in a report ("odd", "lora on odd", "teacher int8"), and which runs are
seeds of one model (model_key: the settings that make the model; group_runs: the runs that share it).
"""

import json
from pathlib import Path

import distill
from runs import RunError, as_info, read_info

# Settings that say how a run was executed, not what model it makes: runs that agree on every
# other setting are seeds (or re-runs) of one model, and a report shows their mean ± std.
EXECUTION_SETTINGS = {"seed", "out", "split", "teacher", "base", "data_mirror", "preset", "progress", "resume",
                      "overwrite", "threads", "device", "checkpoint_every", "log_every", "eval_batch_size", "fast"}

# Settings added in later versions, with the value that makes the model an older run made without them.
ADDED_LATER = {"perturb": 0.0, "calibrate": True}


def teacher_depth(info):
    """Layers of the teacher a student was cut from, or None when its run folder is not at hand."""
    try:
        return json.loads((Path(info["teacher"]) / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"]
    except (KeyError, TypeError, OSError, ValueError):
        return None


def method_label(info):
    """How a run is named in the report: teacher, odd, even, bottom, top, 'auto (1,2,12)',
    'layers 1,2,12', lora, 'lora on odd'; ' int8' after an exported int8 model."""
    info = as_info(info)
    label = str(info.get("method"))
    if info.get("method") == "distill":
        label = student_label(info)
    elif info.get("method") == "lora" and info.get("base"):
        try:
            label = "lora on " + method_label(read_info(info["base"]))
        except RunError:  # the base moved away: name it by its folder
            label = "lora on " + Path(info["base"]).name
    return label + (" int8" if info.get("quantized") else "")


def student_label(info):
    layers = list(info.get("teacher_layers") or [])
    spelled = str(info.get("layers", ""))
    if spelled.startswith("auto"):
        return f"auto ({','.join(map(str, layers))})"
    depth = teacher_depth(info)
    named = ("odd", "even", "bottom", "top")
    if depth is None:  # the teacher moved away: trust the spelling
        return spelled if spelled in named else "layers " + ",".join(map(str, layers))
    # The run's own word first: with a 2-layer teacher, bottom is also odd.
    for name in sorted(named, key=lambda n: n != spelled):
        if distill.parse_layers(name, depth) == layers:
            return name
    return "layers " + ",".join(map(str, layers))


def model_key(info):
    """What makes a run's model: its settings less the EXECUTION_SETTINGS and less what does not
    apply to it (a setting that is None, the model of a LoRA run on a trained base, importance_texts
    unless the layers were chosen by importance), plus whether it is an int8 export and the precision
    it was trained in (what `auto` chose: bf16 and fp32 runs are compared, not pooled). Runs of older
    versions, without newer settings, group with new ones."""
    info = as_info(info)
    key = {k: v for k, v in info.settings.items() if k not in EXECUTION_SETTINGS and v is not None}
    key.pop("bf16", None)
    # Settings added later: at their defaults they make the same model as older runs made without them,
    # so those group with new ones (calibration changes no weight and no decision; the mask rate is
    # pretraining's alone).
    for name, default in ADDED_LATER.items():
        if key.get(name, default) == default:
            key.pop(name, None)
    if info.get("method") != "pretrain":
        key.pop("mask_rate", None)
    key["precision"] = info.get("precision_chosen") or ("bf16" if info.get("bf16") else "fp32")
    if info.get("base"):
        key.pop("model", None)  # the base run's folder: differs seed by seed
    if not str(info.get("layers", "")).startswith("auto") or info.get("method") != "distill":
        key.pop("importance_texts", None)
    if info.get("quantized"):
        key["quantized"] = info["quantized"]
    return json.dumps(key, sort_keys=True, default=str)


def group_runs(infos, names, notes=None):
    """[{'label', 'method', 'names'}]: runs that differ only in how they were executed (seeds of one
    model, model_key), in the order given. notes: per run, None or what its label must say (an
    unfinished run's "unfinished, epoch 1 of 3"); a run with a note is grouped only with its like."""
    groups = {}
    for info, name, note in zip(infos, names, notes or [None] * len(names), strict=True):
        info = as_info(info)
        key = model_key(info)
        label = method_label(info) + (f" ({note})" if note else "")
        groups.setdefault((key, note), {"label": label, "method": info["method"], "names": [], "key": json.loads(key)})
        groups[key, note]["names"].append(name)
    groups = list(groups.values())
    # Two arms of one method (say teachers at two learning rates, or in fp32 and bf16) get the settings
    # that tell them apart.
    # The first three such settings, or all of them where three leave two labels alike.
    # A folder is shown by its name (runs/unseen/davidson/mlm: mlm) unless that leaves two labels alike.
    base = [g["label"] for g in groups]
    for most, short in ((3, True), (3, False), (None, True), (None, False)):
        labels = []
        for g, label in zip(groups, base, strict=True):
            same = [h["key"] for h, other in zip(groups, base, strict=True) if other == label]
            keys = sorted(k for k in set().union(*same) if len({json.dumps(s.get(k), default=str) for s in same}) > 1)
            shown = ", ".join(f"{k}={shown_value(g['key'].get(k), short)}" for k in keys[:most])
            labels.append(label + (f" ({shown})" if keys else ""))
        if len(set(labels)) == len(labels):
            break
    return [{**{k: v for k, v in g.items() if k != "key"}, "label": label} for g, label in zip(groups, labels, strict=True)]


def shown_value(value, short=True):
    """A setting's value in a label: a path (or a comma-separated list of them) by its last part."""
    if short and isinstance(value, str) and "/" in value:
        return ",".join(Path(part).name for part in value.split(","))
    return value


def run_names(run_dirs):
    """A short unique name per run folder: its name, with its parent's where two share one."""
    run_dirs = [Path(d) for d in run_dirs]
    names = [d.name for d in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{d.parent.name}-{d.name}" for d in run_dirs]
    if len(set(names)) < len(names):
        names = [f"{n}-{i}" for i, n in enumerate(names)]
    return ["".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in n) for n in names]
