"""
The run folder: the one place that writes it and reads it back.

A run folder, as train.py leaves it:

    run.json                 {"format", "settings": what was asked, "results": what happened}
    metrics.jsonl            one record per logged step ({"kind": "step"}) and per epoch ({"kind": "epoch"})
    summary.json             written last: wall time, steps, best epoch, peak memory; its presence means finished
    README.md                the model card (card.py)
    config.json + model.safetensors + vocab.txt         a full model (teacher, student), or
    adapter_config.json + adapter_model.safetensors     a LoRA adapter on a named base model, or
    config.json + model-int8.safetensors                an int8 export (quantize.py's format)
                             (a pretraining run, train.py pretrain: the encoder and its masked-LM head, no classifier)
    checkpoint.safetensors   only while training: everything --resume needs

Read top to bottom:
  1. run.json: settings and results kept apart, and older flat files read as the same;
  2. the log and the summary;
  3. the model files: saving what a run trained, loading a run for inference (the int8 export: export.py);
  4. finding the run folders under a folder (what a run is called, and its seeds: names.py);
  5. the data a run was trained on: its split manifest and test part.
"""

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

import checkpoint
import corpus
import files
import lora
import model as M
import pretrained
import quantize
import splits
import wordpiece

FORMAT = "nanobert-run-2"
RUN_FILE, LOG_FILE, SUMMARY_FILE = "run.json", "metrics.jsonl", "summary.json"
CHECKPOINT_FILE, CARD_FILE = checkpoint.FILE, "README.md"
MODEL_FILES = ("model.safetensors", "config.json", lora.WEIGHTS_NAME, lora.CONFIG_NAME, quantize.WEIGHTS_NAME)

# In run.json files of nanobert before format 2 everything was one flat dict; these were results.
OLD_RESULT_KEYS = {"run_dir", "split_sha256", "data_sha256", "id2label", "params_total", "params_trainable",
                   "world_size", "teacher_layers", "torch", "train_size", "val_size", "command", "layer_importance",
                   "layer_ranking", "importance_seconds", "importance_n", "base_model", "quantized", "source_run"}


class RunError(ValueError):
    """A folder that is not the run it should be; the message names the folder or file."""


# -----------------------------------------------------------------------------
# 1. run.json


class RunInfo:
    """A run's settings and results. info[key] looks in the settings, then in the results."""

    def __init__(self, settings: dict, results: dict, folder=None):
        self.settings, self.results, self.dir = dict(settings), dict(results), folder and Path(folder)

    @classmethod
    def from_json(cls, raw: dict, folder=None):
        if "settings" in raw and "results" in raw:
            return cls(raw["settings"], raw["results"], folder)
        # A flat run.json of an earlier version (or a plain dict of fields, as tests write).
        return cls({k: v for k, v in raw.items() if k not in OLD_RESULT_KEYS},
                   {k: v for k, v in raw.items() if k in OLD_RESULT_KEYS}, folder)

    def __getitem__(self, key):
        if key in self.settings:
            return self.settings[key]
        return self.results[key]

    def __contains__(self, key):
        return key in self.settings or key in self.results

    def get(self, key, default=None):
        return self[key] if key in self else default

    def to_json(self):
        return {"format": FORMAT, "settings": self.settings, "results": self.results}


def as_info(info) -> RunInfo:
    return info if isinstance(info, RunInfo) else RunInfo.from_json(info)


def read_info(run_dir, required=()) -> RunInfo:
    """run.json of a run folder, with the `required` fields checked present."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no {RUN_FILE}); expected a folder written by train.py")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: not valid JSON ({e}); expected the settings train.py wrote") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k, {}), dict) for k in ("settings", "results")):
        raise RunError(f"{path}: not an object of settings and results; expected run.json as written by train.py")
    info = RunInfo.from_json(raw, run_dir)
    missing = [f for f in required if f not in info]
    if missing:
        raise RunError(f"{path}: missing field {missing[0]!r}; expected run.json as written by train.py")
    check_fields(info, path)
    return info


def is_count(value, least):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def is_label_names(value):
    """id2label as train.py writes it ({"0": name, "1": name}), or a list of names."""
    if isinstance(value, dict):
        value = [value.get(str(i)) for i in range(len(value))]
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


# The fields the readers use, and what each must be: a run.json edited by hand (or damaged) is refused
# here, naming the field, not met with a traceback deep in the code that reads it.
FIELD_CHECKS = {
    "max_length": (lambda v: is_count(v, 2), "a whole number of at least 2"),
    "epochs": (lambda v: is_count(v, 1), "a whole number above 0"),
    "split": (lambda v: isinstance(v, str) and v != "", "the path of a split manifest"),
    "split_sha256": (lambda v: isinstance(v, str), "a sha256 in hex"),
    "method": (lambda v: isinstance(v, str), "teacher, distill or lora"),
    "data": (lambda v: isinstance(v, str), "a dataset name or a data file"),
    "id2label": (is_label_names, 'an object {"0": name, "1": name, ...} or a list of names'),
    "thresholds": (lambda v: v is None or isinstance(v, dict), "an object of label -> threshold"),
    "temperatures": (lambda v: v is None or isinstance(v, dict) and all(type(t) in (int, float) and 0 < t < math.inf for t in v.values()),
                     "an object of label -> temperature above 0"),
}


def check_fields(info, path):
    for key, (ok, expected) in FIELD_CHECKS.items():
        if key in info and not ok(info[key]):
            shown = repr(info[key])
            raise RunError(f"{path}: field {key!r} is {shown[:60] + '…' if len(shown) > 60 else shown}; expected {expected}")


def label_names_of(info) -> list | None:
    """The class names of run.json's id2label (an object by class number, or a list), or None without one."""
    names = info.get("id2label")
    return [names[str(i)] for i in range(len(names))] if isinstance(names, dict) else names


def decision_threshold(info) -> float | None:
    """A two-class run's threshold on the probability of class 1, chosen on validation when it was
    trained (run.json "thresholds", keyed by the name of class 1, as a two-question run keys each of
    its labels), or None: more classes, two questions (a threshold per label), or a run made before
    two-class runs had one; those decide by the most probable class."""
    names = label_names_of(info)
    if info.get("problem_type") == "multi_label_classification" or not names or len(names) != 2:
        return None
    value = (info.get("thresholds") or {}).get(names[1])
    return None if value is None else float(value)


def write_info(run_dir, info: RunInfo):
    files.write_json(Path(run_dir) / RUN_FILE, info.to_json())


def is_finished(run_dir) -> bool:
    """summary.json is written last, after the best model: a run without it is still training, or died."""
    return (Path(run_dir) / SUMMARY_FILE).is_file()


def unfinished_note(run_dir, info=None) -> str | None:
    """'unfinished, epoch k of n' for a run without summary.json (interrupted, or still training): k the
    epochs its log has done, n the epochs asked for. None for a finished run."""
    if is_finished(run_dir):
        return None
    _, epochs = read_log(run_dir)
    done = max((e.get("epoch", 0) for e in epochs), default=0)
    return f"unfinished, epoch {done} of {(info or read_info(run_dir)).get('epochs', '?')}"


def check_classifier(run_dir, info):
    """A pretraining run holds an encoder with its masked-LM head: no classifier to label texts with."""
    if info.get("method") == "pretrain":
        raise RunError(f"{run_dir}: a pretraining run (train.py pretrain): an encoder without a classifier; expected a "
                       f"trained classifier: fine-tune one from it with `train.py teacher --model {run_dir}`")


def check_model_files(run_dir):
    if not is_lora_run(run_dir) and not (Path(run_dir) / "config.json").is_file():
        raise RunError(f"{run_dir}: no trained model (neither config.json + model.safetensors nor "
                       f"{lora.CONFIG_NAME}); expected a run that finished at least one epoch")


def check_finished(run_dir, allow_unfinished=False, can_allow=True) -> str | None:
    """The one check of every reader of a trained run (report, predict, behaviour, beyond, the API, the
    app): an unfinished run is refused unless allow_unfinished, and then its note is returned for every
    output to show. can_allow=False: there is no asking for it (an export). A run that saved no model
    yet is refused as such."""
    info = read_info(run_dir)  # a folder that is not a run, or a damaged run.json, is named first
    check_classifier(run_dir, info)
    check_model_files(run_dir)
    note = unfinished_note(run_dir, info)
    if note and not allow_unfinished:
        raise RunError(f"{run_dir}: {note} (no summary.json: interrupted, or still training); expected a finished run: "
                       "continue it with train.py and --resume" + (", or pass --allow-unfinished (Python: allow_unfinished=True)"
                                                                    " to use the best epoch saved so far" if can_allow else ""))
    return note


def is_lora_run(run_dir) -> bool:
    return (Path(run_dir) / lora.CONFIG_NAME).is_file()


def weights_file(run_dir) -> Path:
    """The file that holds what the run trained: the LoRA adapter, the whole model, or its int8 copy."""
    if quantize.is_quantized_dir(run_dir):
        return Path(run_dir) / quantize.WEIGHTS_NAME
    return Path(run_dir) / (lora.WEIGHTS_NAME if is_lora_run(run_dir) else "model.safetensors")


# -----------------------------------------------------------------------------
# 2. The log and the summary (the checkpoint: checkpoint.py)


def log(run_dir, kind, record):
    """Append one record of `kind` ("step" or "epoch") to metrics.jsonl."""
    with open(Path(run_dir) / LOG_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps({"kind": kind, **record}) + "\n")


def read_log(run_dir):
    """(step records, epoch records) of metrics.jsonl; a line cut short by a killed run is skipped."""
    steps, epochs = [], []
    path = Path(run_dir) / LOG_FILE
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        # Logs of earlier versions have no "kind": an epoch record is the one with validation scores.
        kind = record.get("kind") or ("epoch" if "val_macro_f1" in record else "step" if "loss" in record else None)
        (epochs if kind == "epoch" else steps if kind == "step" else []).append(record)
    return steps, epochs


def trim_log(run_dir, step, epoch):
    """Keep only what happened up to a checkpoint (optimizer step `step`, `epoch` epochs done): a resumed
    run logs the steps after the checkpoint again, and each must be in the log once."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return
    steps, epochs = read_log(run_dir)
    keep = [r for r in steps if r["step"] <= step] + [r for r in epochs if r["epoch"] <= epoch]
    keep.sort(key=lambda r: (r["step"], r.get("kind") == "epoch"))
    files.write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def write_summary(run_dir, summary: dict):
    files.write_json(Path(run_dir) / SUMMARY_FILE, summary)


def read_summary(run_dir) -> dict | None:
    try:
        return json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def training_cost(run_dir, epochs):
    """(seconds, final training loss) from summary.json, or from the log of an unfinished run."""
    summary = read_summary(run_dir)
    if summary is not None:
        return summary.get("wall_seconds"), summary.get("final_train_loss")
    if not epochs:
        return None, None
    return sum(e.get("epoch_seconds", 0) for e in epochs), epochs[-1].get("train_loss")


# -----------------------------------------------------------------------------
# 3. Model files


def save_model(net, run_dir, tokenizer_dir, base_model=None):
    """What the run trained: a LoRA adapter (on base_model) with the tokenizer, or the whole model."""
    if base_model is not None:
        lora.save_adapter(net, run_dir, base_model=base_model)
        pretrained.copy_tokenizer_files(tokenizer_dir, run_dir)
    else:
        pretrained.save_pretrained(net, run_dir, tokenizer_dir=tokenizer_dir)


def load_run(run_dir, merge=True, verbose=False):
    """
    (model, tokenizer, RunInfo) for a run folder written by train.py: a full checkpoint (teacher,
    student), a LoRA adapter on its base model (merged for inference by default), or an int8 model
    written by `eval.py export` (CPU only). The model is in eval mode. It loads an unfinished run as
    well (training reloads its own best epoch): the readers call check_finished first.
    """
    run_dir = Path(run_dir)
    info = read_info(run_dir)
    check_classifier(run_dir, info)
    check_base(run_dir, info)
    check_model_files(run_dir)
    try:
        if is_lora_run(run_dir):
            # A LoRA run holds only the adapter: load its base model, then the adapter onto it.
            base = lora.read_adapter_config(run_dir)["base_model_name_or_path"]
            names = label_names_of(info)
            net = pretrained.from_pretrained(base, id2label=names and dict(enumerate(names)), verbose=verbose)
            net.config.problem_type = info.get("problem_type")  # the adapter's head answers the run's questions
            lora.load_adapter(net, run_dir, base)
            if merge:
                lora.merge_all(net)
        elif quantize.is_quantized_dir(run_dir):
            net = quantize.load_quantized(run_dir)
        else:
            net = pretrained.from_pretrained(str(run_dir), verbose=verbose)
        tokenizer = wordpiece.load_tokenizer(run_dir)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as e:
        raise RunError(f"{run_dir}: cannot load the trained model ({e})") from None
    # A token id past the embedding table would fail in the middle of a batch, not here.
    tokens = max(tokenizer.get_vocab().values()) + 1
    if tokens > net.config.vocab_size:
        raise RunError(f"{run_dir / 'vocab.txt'}: {tokens} tokens, but the model embeds {net.config.vocab_size} "
                       f"(vocab_size in config.json); expected at most {net.config.vocab_size}")
    return net.eval(), tokenizer, info


def base_weights(base) -> Path:
    """The weights a LoRA adapter changes: those of its base, a trained run folder or a pretrained model
    (a name, resolved as from_pretrained resolves it: the embedded package, a mirror, the cache)."""
    folder = pretrained.resolve_model_dir(base)
    return weights_file(folder) if (folder / RUN_FILE).is_file() else folder / "model.safetensors"


def check_base(run_dir, info):
    """A LoRA adapter is a change to one set of weights: on any other it computes something else. Refuse
    to load it when its base's weights are not those it was trained on (run.json's base_sha256).
    Runs without the record (older ones, full models) pass; a base that cannot be found is left to the
    loader to name."""
    recorded = info.results.get("base_sha256")
    if not recorded or not is_lora_run(run_dir):
        return
    try:
        base = lora.read_adapter_config(run_dir)["base_model_name_or_path"]
        now = files.sha256_file(base_weights(base))
    except (OSError, ValueError, KeyError):
        return
    if now != recorded:
        raise RunError(f"{run_dir}: its base {base} has changed since the adapter was trained on it (sha256 {now[:12]}…, "
                       f"run.json says {recorded[:12]}…); expected the same weights: retrain the adapter with "
                       f"`{retrain_command(run_dir, info)}`")


def retrain_command(run_dir, info) -> str:
    """The command that trains the run again in its folder: the one run.json recorded, with --overwrite."""
    head, _, rest = str(info.results.get("command") or "").partition(" ")
    if Path(head).name != "train.py" or not rest.startswith(f"{info.get('method')} "):  # not recorded, or `all`
        parent = f"--base {info['base']}" if info.get("base") else f"--model {info.get('model')}"
        rest = f"{info.get('method')} {parent} --out {run_dir}"
    rest = re.sub(r" --resume\b", "", rest)
    return f"python train.py {rest}" + ("" if "--overwrite" in rest.split() else " --overwrite")


def plain_model(net):
    """A model without LoRA layers: the adapters folded into the weights (or net itself)."""
    if not lora.lora_layers(net):
        return net
    plain = M.BertForSequenceClassification(net.config)
    plain.load_state_dict(lora.merged_state_dict(net))
    return plain.eval()


# -----------------------------------------------------------------------------
# 4. Finding runs


def find_runs(root):
    """(finished run folders, unfinished ones) under root: the folder itself, its subfolders, and theirs."""
    root = Path(root)
    finished, unfinished = [], []
    for path in [root / RUN_FILE, *sorted(root.glob(f"*/{RUN_FILE}")), *sorted(root.glob(f"*/*/{RUN_FILE}"))]:
        if path.is_file():
            (finished if is_finished(path.parent) else unfinished).append(path.parent)
    return finished, unfinished


# -----------------------------------------------------------------------------
# 5. The data a run was trained on


def label_map_of(info):
    label_map = info.get("label_map")
    return json.loads(label_map) if isinstance(label_map, str) else label_map


def load_run_data(info, mirror=None, group_column=None):
    """The whole dataset a run was trained on, loaded with the run's own options (and a CSV's group column)."""
    return corpus.load_dataset(info["data"], mirror=mirror or info.get("data_mirror"), three_class=info.get("three_class", False),
                               normalize=info.get("normalize", True), text_column=info.get("text_column", "text"),
                               label_column=info.get("label_column", "label"), label_map=label_map_of(info),
                               group_column=group_column, multilabel=info.get("multilabel", False))


def find_manifest(run_dir, info):
    written = Path(info["split"])
    # run.json keeps the path as train.py was given it, relative to where it ran; the default
    # place of the manifest is beside the run folders, so look there too.
    for path in (written, Path(run_dir).parent / written.name):
        if path.is_file():
            return path
    raise RunError(f"{run_dir}: split manifest {written} not found (nor {Path(run_dir).parent / written.name}); "
                   "expected the manifest the run was trained on")


def load_test_split(run_dir, info):
    """(test Dataset, manifest path, manifest): the held-out part of the run's data, as its manifest says."""
    return load_split_part(run_dir, info, "test")


def load_split_part(run_dir, info, name):
    """(Dataset, manifest path, manifest): one part ('train', 'validation' or 'test') of the run's data,
    as its manifest says, whole."""
    path = find_manifest(run_dir, info)
    manifest = splits.load_manifest(path)
    if manifest["manifest_sha256"] != info["split_sha256"]:
        raise RunError(f"{path}: sha256 {manifest['manifest_sha256'][:12]}…, but {run_dir} was trained on split "
                       f"{info['split_sha256'][:12]}…; expected the run's own manifest")
    # max_train / max_val only ever limited what training saw: a part read here is whole. A CSV
    # split by a group column (its manifest's options say which) keeps its groups: the report's clusters.
    group_column = (manifest.get("options") or {}).get("group_column")
    return splits.apply_split(load_run_data(info, group_column=group_column), manifest)[name], path, manifest


def subset_for_quick_runs(part, limit, seed):
    """A fixed subset of `limit` texts of a split part (the same for every model with the same settings)."""
    if not limit or limit >= len(part):
        return part
    keep = np.sort(np.random.default_rng(seed).permutation(len(part))[:limit])
    return part.subset(keep.tolist())


def staging_dir(run_dir) -> Path:
    """Where a run that replaces a finished one trains (--overwrite): beside it, hidden, until it is done."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f".{run_dir.name}.new")


def replace_run(staging, run_dir):
    """Put a finished replacement in its place: the old run moves aside, the new one in, the old one goes.
    Up to this moment the old run was whole; a crash between the two renames leaves both, hidden and not."""
    staging, run_dir = Path(staging), Path(run_dir)
    old = run_dir.with_name(f".{run_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(run_dir, old)
    os.replace(staging, run_dir)
    shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(run_dir):
    """A process killed in the middle of files.atomic_write leaves its hidden .tmp file: remove them."""
    for path in Path(run_dir).glob(".*.tmp"):
        path.unlink(missing_ok=True)


def remove_files(run_dir, names):
    for name in names:
        try:
            os.unlink(Path(run_dir) / name)
        except FileNotFoundError:
            pass
