"""
LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), from scratch.

A frozen linear layer y = x W^T + b gets a trainable low-rank update:

    y = x W^T + b + dropout(x) A^T B^T * (alpha / r)        A: (r, in), B: (out, r)

Only A and B are trained: r * (in + out) numbers per layer instead of in * out. B starts
at zero, so a freshly wrapped model computes exactly what the base model computes and
training starts from the pretrained function. After training, B A * alpha / r can be
folded into W ("merging"), and inference then costs the same as the plain model.

This file knows nn.Linear and nothing about BERT: layers are chosen by module-name suffix.

Compatibility with the reference library (peft 0.21): the adapter folder is what peft's
save_pretrained writes for a LoRA sequence classifier: adapter_config.json with peft's field
names, adapter_model.safetensors with keys `base_model.model.<module>.lora_A.weight` (r, in),
`...lora_B.weight` (out, r), and the extra trainable modules (`modules_to_save`, e.g. the
classifier head) as `base_model.model.classifier.weight`, i.e. peft's prefix + our own
state-dict key. Checked both ways by tests/fixtures/lora/make_lora_fixture.py: a peft adapter
loads here with logits within 1e-5 of peft's (tests/test_lora.py), and an adapter saved here
loads with peft's PeftModel.from_pretrained and gives the same logits (within 1e-5) and the
same merge_and_unload weights (within 1e-6). peft variants that compute something else (DoRA,
rsLoRA, LoRA biases, per-layer ranks, regex targets) are refused when reading a config.
"""

import json
import math
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import files

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # peft's wrappers: PeftModel.base_model (a LoraModel) .model (ours)

# -----------------------------------------------------------------------------
# The layer


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update B A, scaled by alpha / r."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        self.in_features, self.out_features = base.in_features, base.out_features
        # The base layer's own Parameter objects, not copies: no memory is duplicated and the
        # state-dict keys stay `<name>.weight` / `<name>.bias`, exactly those of the plain model.
        self.weight = base.weight  # (out, in)
        self.bias = base.bias  # (out,) or None
        # Frozen: autograd then computes no (out, in) weight gradient for them at all.
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        # nn.Linear submodules rather than bare Parameters so that the tensors are called
        # lora_A.weight and lora_B.weight, as in peft.
        kw = dict(bias=False, device=self.weight.device, dtype=self.weight.dtype)
        self.lora_A = nn.Linear(self.in_features, r, **kw)  # weight (r, in)
        self.lora_B = nn.Linear(r, self.out_features, **kw)  # weight (out, r)
        # Dropout on the LoRA input only; the base path sees x untouched. nn.Dropout(0) would
        # still copy x on every training step, hence Identity.
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()
        # A new module starts in training mode; take the wrapped layer's, or injecting into
        # a model in eval() would switch on the LoRA dropout.
        self.train(base.training)

    def reset_lora_parameters(self):
        # A random and B zero: the update B A starts at zero (the wrapped model equals the base
        # model), yet dL/dB = dL/dy (A x)^T is not zero, so training can move. With both at
        # zero neither would ever get a gradient. Same initialisation as peft and loralib.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):  # (..., in) -> (..., out)
        # What the plain model runs. The fast path (fast.py) computes the same inside BERT's fused
        # q/k/v product; tests/test_fast.py holds the two equal.
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y  # B A is already inside weight: the cost of the plain layer
        # (..., in) -> (..., r) -> (..., out): the (out, in) matrix B A is never formed.
        z = self.lora_B(self.lora_A(self.lora_dropout(x)))
        # In place, y + scaling * z in one kernel; F.linear does not keep y for its backward.
        return y.add_(z, alpha=self.scaling)

    def delta_weight(self) -> torch.Tensor:
        # (out, r) @ (r, in) -> (out, in), in the same order of operations as peft.
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self):
        """Fold B A * scaling into weight. Explicit only: train() / eval() never merge."""
        if not self.merged:
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        """Take B A * scaling back out of weight (equal to before up to fp32 rounding)."""
        # While merged, forward does not use A and B, so they get no gradients and stay the
        # values that were added: subtracting them restores the base weight.
        if self.merged:
            self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"r={self.r}, alpha={self.alpha}, merged={self.merged}")


# -----------------------------------------------------------------------------
# Putting LoRA into a model


def _matches(name: str, suffix: str) -> bool:
    # The rule peft uses for a list of names: the whole name, or its last dotted parts.
    # So "output.dense" matches both "attention.output.dense" and "layer.0.output.dense".
    return name == suffix or name.endswith("." + suffix)


def _patterns(names) -> str:
    # 'bert.encoder.layer.3.attention.self.query' -> 'bert.encoder.layer.*.attention.self.query'
    return ", ".join(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names))


def _as_list(names) -> list:
    return [] if names is None else [names] if isinstance(names, str) else list(names)


def lora_layers(model: nn.Module) -> list:
    """(name, LoRALinear) for every LoRA layer in the model, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def inject_lora(model: nn.Module, targets=("query", "key", "value"), r: int = 8, alpha: float = 16,
                dropout: float = 0.1, trainable=("classifier",)) -> list:
    """
    Wrap every nn.Linear whose name ends in one of `targets` in a LoRALinear, freeze all other
    parameters except those of the modules named by `trainable`, and return the wrapped names.
    The settings are kept in model.lora_config (peft's field names) for save_adapter.
    """
    targets, trainable = _as_list(targets), _as_list(trainable)
    if not (isinstance(r, int) and not isinstance(r, bool) and r > 0):
        raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"LoRA alpha must be a positive number, got {alpha!r}")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout!r}")
    if not targets:
        raise ValueError("LoRA targets are empty; expected module-name suffixes such as 'query'")
    if lora_layers(model):
        raise ValueError("model already has LoRA layers; inject_lora once per model")
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    for t in targets:
        if not any(_matches(n, t) for n in linears):
            raise ValueError(f"LoRA target {t!r} matches no nn.Linear; the model's linear layers are: {_patterns(linears)}")
    owners = [n for n, m in modules.items() if n and any(True for _ in m.parameters(recurse=False))]
    for t in trainable:
        if not any(_matches(n, t) for n in modules if n):
            raise ValueError(f"trainable module {t!r} matches no module; modules with parameters are: {_patterns(owners)}")

    model.requires_grad_(False)
    chosen = [n for n in linears if any(_matches(n, t) for t in targets)]
    for name in chosen:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, LoRALinear(modules[name], r, alpha, dropout))
    for name in modules:
        if name and any(_matches(name, t) for t in trainable):
            modules[name].requires_grad_(True)
    model.lora_config = dict(r=r, lora_alpha=alpha, lora_dropout=dropout,
                             target_modules=targets, modules_to_save=trainable)
    return chosen


def lora_report(model: nn.Module) -> str:
    """One line, e.g. 'LoRA r=8 alpha=16 on 36 layers (query, key, value) + classifier: trainable 221,954 of ...'."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    line = f"trainable {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
    cfg = getattr(model, "lora_config", None)
    if cfg is None:
        return line
    extras = "".join(f" + {m}" for m in cfg["modules_to_save"])
    return (f"LoRA r={cfg['r']} alpha={cfg['lora_alpha']} on {len(lora_layers(model))} layers "
            f"({', '.join(cfg['target_modules'])}){extras}: {line}")


def merge_all(model: nn.Module) -> int:
    """Merge every LoRA layer (see LoRALinear.merge); returns how many."""
    layers = lora_layers(model)
    for _, layer in layers:
        layer.merge()
    return len(layers)


def unmerge_all(model: nn.Module) -> int:
    layers = lora_layers(model)
    for _, layer in layers:
        layer.unmerge()
    return len(layers)


def merged_state_dict(model: nn.Module) -> dict:
    """
    The state dict of the plain model, with every LoRA update folded into its weight and no
    LoRA tensors left: ready for pretrained.save_pretrained(model, folder, state_dict=...).
    The model itself is left as it was (merged or not).
    """
    state = model.state_dict()
    for name, layer in lora_layers(model):
        del state[f"{name}.lora_A.weight"], state[f"{name}.lora_B.weight"]
        if not layer.merged:
            with torch.no_grad():
                state[f"{name}.weight"] = layer.weight + layer.delta_weight().to(layer.weight.dtype)
    return state


# -----------------------------------------------------------------------------
# Adapter files: only what was trained, in peft's layout


def lora_state_dict(model: nn.Module) -> dict:
    """The trained tensors, under the model's own keys: every lora_A / lora_B, and the trainable extras."""
    cfg = getattr(model, "lora_config", None)
    if cfg is None:
        raise ValueError("model has no LoRA layers; call inject_lora (or load_adapter) first")
    state = model.state_dict()
    keys = [f"{n}.lora_{ab}.weight" for n, _ in lora_layers(model) for ab in "AB"]
    extras = [n for n, _ in model.named_modules() if n and any(_matches(n, m) for m in cfg["modules_to_save"])]
    keys += [k for k in state if any(k.startswith(e + ".") for e in extras) and k not in keys]
    return {k: state[k] for k in keys}


def save_adapter(model: nn.Module, folder, base_model: str, task_type: str = "SEQ_CLS"):
    """Write adapter_model.safetensors (LoRA tensors + trainable extras) and adapter_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # clone: safetensors refuses tensors that share memory with others.
    tensors = {PEFT_PREFIX + k: v.detach().contiguous().clone() for k, v in lora_state_dict(model).items()}
    config = {"peft_type": "LORA", "task_type": task_type, "base_model_name_or_path": str(base_model),
              **model.lora_config, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
              "use_dora": False, "init_lora_weights": True, "inference_mode": True}
    # Weights first: a config is only ever found next to complete weights.
    files.atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    files.atomic_write(folder / CONFIG_NAME, lambda p: Path(p).write_text(text, encoding="utf-8"))


# peft options that would make peft compute something other than LoRALinear does; each must
# be absent or at its neutral value.
UNSUPPORTED = ("use_dora", "use_rslora", "fan_in_fan_out", "lora_bias", "rank_pattern", "alpha_pattern",
               "layers_to_transform", "layer_replication", "exclude_modules", "target_parameters",
               "trainable_token_indices", "use_qalora", "alora_invocation_tokens")


def read_adapter_config(folder) -> dict:
    """adapter_config.json, checked field by field."""
    path = Path(folder) / CONFIG_NAME
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found; expected an adapter folder written by save_adapter (or peft)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(cfg).__name__}")

    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    checks = {
        "peft_type": (lambda v: v == "LORA", "'LORA'"),
        "base_model_name_or_path": (lambda v: isinstance(v, str) and v != "", "the base model's name or path"),
        "r": (lambda v: number(v) and v == int(v) and v > 0, "a positive integer"),
        "lora_alpha": (lambda v: number(v) and v > 0, "a positive number"),
        "lora_dropout": (lambda v: number(v) and 0 <= v < 1, "a number in [0, 1)"),
        "target_modules": (lambda v: isinstance(v, list) and v and all(isinstance(t, str) for t in v),
                           "a non-empty list of module-name suffixes (a regex string is not supported)"),
    }
    for field, (ok, expected) in checks.items():
        if field not in cfg:
            raise ValueError(f"{path}: missing field {field!r}; expected {expected}")
        if not ok(cfg[field]):
            raise ValueError(f"{path}: field {field!r} is {cfg[field]!r}; expected {expected}")
    cfg["r"] = int(cfg["r"])
    mts = cfg.setdefault("modules_to_save", None)
    if not (mts is None or isinstance(mts, list) and all(isinstance(m, str) for m in mts)):
        raise ValueError(f"{path}: field 'modules_to_save' is {mts!r}; expected a list of module names or null")
    if cfg.get("bias", "none") != "none":
        raise ValueError(f"{path}: field 'bias' is {cfg['bias']!r}; only 'none' is supported")
    for field in UNSUPPORTED:
        if cfg.get(field) not in (None, False, {}, []):
            raise ValueError(f"{path}: field {field!r} is {cfg[field]!r}; not supported by nanobert's LoRA")
    return cfg


def _same_base(a: str, b: str) -> bool:
    # The same name, or two spellings of one local folder.
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return a == b or (pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve())


def load_adapter(model: nn.Module, folder, base_model: str) -> dict:
    """
    Load an adapter (saved here or by peft) into a model of base `base_model`. A plain model
    gets LoRA injected with the adapter's settings; a model that already has LoRA layers must
    have the same ones. Returns the adapter config. When the tensors do not fit (names, shapes),
    a plain model is left with LoRA layers injected: start again from a fresh one.
    """
    folder = Path(folder)
    cfg = read_adapter_config(folder)
    where = folder / CONFIG_NAME
    if not _same_base(cfg["base_model_name_or_path"], str(base_model)):
        raise ValueError(f"{where}: adapter was trained on base model {cfg['base_model_name_or_path']!r}, not {str(base_model)!r}")
    weights = folder / WEIGHTS_NAME  # read before the model is changed
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: not found; expected the adapter's tensors beside {CONFIG_NAME}")
    tensors = files.read_safetensors(weights)
    # peft adds 'classifier' and 'score' to modules_to_save of every classifier; keep the ones
    # this model has. A head the file has and the model lacks still fails below, by tensor name.
    names = [n for n, _ in model.named_modules() if n]
    extras = list(dict.fromkeys(m for m in cfg["modules_to_save"] or [] if any(_matches(n, m) for n in names)))
    if getattr(model, "lora_config", None) is None:
        inject_lora(model, cfg["target_modules"], cfg["r"], cfg["lora_alpha"], cfg["lora_dropout"], extras)
    else:
        # Dropout only matters in training and may differ; the rest decides what the tensors mean.
        # Lists compare as sets: peft writes target_modules in no particular order.
        def norm(v):
            return sorted(set(v)) if isinstance(v, list) else v

        have, want = model.lora_config, dict(cfg, modules_to_save=extras)
        diffs = [f"{f}: adapter {norm(want[f])!r}, model {norm(have[f])!r}"
                 for f in ("r", "lora_alpha", "target_modules", "modules_to_save") if norm(want[f]) != norm(have[f])]
        if diffs:
            raise ValueError(f"{where}: adapter does not fit the model's LoRA layers ({'; '.join(diffs)})")
    if any(layer.merged for _, layer in lora_layers(model)):
        raise ValueError(f"{folder}: the model's LoRA layers are merged; unmerge_all(model) before loading an adapter")

    own = lora_state_dict(model)
    for key, value in tensors.items():
        name = key[len(PEFT_PREFIX):] if key.startswith(PEFT_PREFIX) else None
        if name not in own:
            raise ValueError(f"{weights}: unexpected tensor {key!r}; expected {PEFT_PREFIX}<module>.lora_A/B.weight or a modules_to_save tensor of this model")
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"{weights}: {key!r} has shape {tuple(value.shape)}, the model's is {tuple(own[name].shape)} (a different base model?)")
    missing = [PEFT_PREFIX + k for k in own if PEFT_PREFIX + k not in tensors]
    if missing:
        raise ValueError(f"{weights}: missing {len(missing)} tensors, e.g. {missing[0]!r}")
    with torch.no_grad():
        for key, value in tensors.items():
            own[key[len(PEFT_PREFIX):]].copy_(value)  # state-dict tensors share memory with the parameters
    return cfg
