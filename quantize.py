"""
A model to deploy on a CPU: every nn.Linear of a trained classifier with int8 weights.

Dynamic quantisation (torch.ao.quantization.quantize_dynamic): each weight matrix is stored
as int8 with one fp32 scale per output row (per-channel, symmetric: w ~= scale[o] * q[o, i]),
and at every call the activations are quantised on the fly, batch by batch, so nothing needs
calibrating. The int8 matrix products run on the CPU's integer units (fbgemm / oneDNN), the
rest (embeddings, LayerNorm, softmax, GELU) stays fp32. Linear layers hold about two thirds of
a small BERT's weights; the word embeddings hold most of the rest and are kept as they are.

The folder it writes is the Hugging Face layout with the weights under another name:

    config.json              the model's config + "quantization_config": {"quant_method": "nanobert-dynamic-int8", ...}
    model-int8.safetensors   <linear>.weight as int8 (out, in), <linear>.weight_scale fp32 (out,),
                             everything else fp32 under its usual name
    vocab.txt, ...           the tokenizer files

Plain safetensors that any tool can read (no pickle, no torch packed parameters). The
reference library has no reader for this format. Given a model.safetensors it would load the
int8 numbers as if they were fp32 weights, with only a warning about the scales (transformers
5.23 does); under another name it refuses the folder instead. Use the fp32 folder to leave
the project.

torch 2.13 warns that torch.ao.quantization will move to the torchao package; the calls used
here are the documented eager-mode API and still work, so the warning is silenced here.
"""

import copy
import json
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

import files
import machine
import model as M
import pretrained

METHOD = "nanobert-dynamic-int8"
WEIGHTS_NAME = "model-int8.safetensors"
QUANTIZATION = {"quant_method": METHOD, "weights": "int8, symmetric, one scale per output row",
                "activations": "quantised per batch at run time", "layers": "every nn.Linear"}


# -----------------------------------------------------------------------------
# The int8 kernels: torch has several, and which is fastest depends on the CPU
#
# torch.backends.quantized.engine picks the library behind the int8 layers: "x86" (torch's
# default on x86), "fbgemm" or "onednn". Measured labelling 1,500 tweets with a 6-layer int8
# model, 1 thread (sentences per CPU-second): on a CPU with AMX-INT8, x86 329, fbgemm 347, onednn
# 484 (oneDNN runs AMX's int8 tiles); with oneDNN held to AVX-512 VNNI (ONEDNN_MAX_CPU_ISA),
# 308 / 305 / 315. So the engine is measured on the model's own shapes (machine.cached), once per
# machine, and set for the process before the first int8 model is built: a layer's weights are
# packed for the engine that is set when it is made, so it is chosen once and kept.

ENGINES = ("x86", "fbgemm", "onednn")
ENGINE_MARGIN = 1.05  # another engine than torch's default only where it is this much faster
_engine = None  # the engine this process chose


def time_engines(hidden: int, ffn: int, tokens: int = 1024, repeats: int = 3) -> dict:
    """Seconds of the FFN's two int8 products (H -> FFN, FFN -> H) for `tokens` tokens under each
    engine torch has here, {engine: s}: the best of `repeats` after a warm-up, engines in turn."""
    g = torch.Generator().manual_seed(0)
    x, h = torch.randn(tokens, hidden, generator=g), torch.randn(tokens, ffn, generator=g)
    before, layers = torch.backends.quantized.engine, {}
    try:
        for engine in (e for e in ENGINES if e in torch.backends.quantized.supported_engines):
            torch.backends.quantized.engine = engine
            layers[engine] = quantize_layers(nn.Sequential(nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)))
        best = {e: float("inf") for e in layers}
        with torch.inference_mode():
            for rep in range(repeats + 1):
                for engine, (up, down) in layers.items():
                    torch.backends.quantized.engine = engine
                    t = time.perf_counter()
                    up(x), down(h)
                    if rep:
                        best[engine] = min(best[engine], time.perf_counter() - t)
    finally:
        torch.backends.quantized.engine = before
    return best


def use_fastest_engine(hidden: int, ffn: int) -> str:
    """Set torch's int8 engine to the one measured fastest here at these shapes (once per machine,
    kept in the cache folder; once per process: later models get the same), and return it."""
    global _engine
    if _engine is None:
        def measure():
            seconds = time_engines(hidden, ffn)
            default = torch.backends.quantized.engine
            fastest = min(seconds, key=seconds.get)
            keep = default in seconds and seconds[default] <= seconds[fastest] * ENGINE_MARGIN
            return {"engine": default if keep else fastest, "ms": {e: round(v * 1e3, 3) for e, v in seconds.items()}}
        chosen = machine.cached("int8-engine", {"shapes": [hidden, ffn]}, measure)["engine"]
        _engine = chosen if chosen in torch.backends.quantized.supported_engines else torch.backends.quantized.engine
        torch.backends.quantized.engine = _engine
    return _engine


def quantize_layers(net: nn.Module) -> nn.Module:
    """Every nn.Linear of net replaced, in place, by its int8 dynamic counterpart, packed for the
    engine set now; returns net."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            net, {nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def quantize_dynamic(net: nn.Module) -> nn.Module:
    """Every nn.Linear of a BERT net replaced, in place, by its int8 dynamic counterpart, for the
    engine measured fastest here (use_fastest_engine); returns net."""
    config = net.config
    use_fastest_engine(config.hidden_size, config.intermediate_size)
    return quantize_layers(net)


def quantize(net: M.BertForSequenceClassification) -> nn.Module:
    """An int8 copy of a plain (fp32, no LoRA layers) classifier, for CPU inference; net is left as it was."""
    if any(type(m).__name__ == "LoRALinear" for m in net.modules()):
        raise ValueError("the model still has LoRA layers; fold them in first (lora.merged_state_dict)")
    qnet = quantize_dynamic(copy.deepcopy(net).cpu().eval())
    qnet.quantization = dict(QUANTIZATION)
    return qnet


def quantized_linears(qnet: nn.Module) -> list:
    """(name, module) for every dynamically quantised linear layer."""
    return [(n, m) for n, m in qnet.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]


def _is_under(key: str, names) -> bool:
    return any(key.startswith(n + ".") for n in names)


def int8_state_dict(qnet: nn.Module) -> dict:
    """Plain tensors: int8 weights with their scales for the linear layers, fp32 for the rest."""
    linear = dict(quantized_linears(qnet))
    tensors = {k: v.contiguous().clone() for k, v in qnet.state_dict().items() if not _is_under(k, linear)}
    for name, module in linear.items():
        w = module.weight()  # a per-channel quantised tensor (out, in)
        # torch keeps symmetric per-channel weights as "affine" with zero points of 0.
        if w.qscheme() not in (torch.per_channel_affine, torch.per_channel_symmetric) or w.q_per_channel_zero_points().any():
            raise ValueError(f"{name}: expected symmetric per-channel int8 weights, got {w.qscheme()}")
        tensors[f"{name}.weight"] = w.int_repr().contiguous()
        tensors[f"{name}.weight_scale"] = w.q_per_channel_scales().float().contiguous()
        tensors[f"{name}.bias"] = module.bias().detach().contiguous().clone()
    return tensors


def save_quantized(qnet: nn.Module, folder, tokenizer_dir):
    """Write config.json (with "quantization_config"), model-int8.safetensors and the tokenizer files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = int8_state_dict(qnet)
    files.atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    config = json.dumps({**qnet.config.to_dict(), "quantization_config": qnet.quantization}, indent=2)
    files.atomic_write(folder / "config.json", lambda p: Path(p).write_text(config + "\n", encoding="utf-8"))
    pretrained.copy_tokenizer_files(tokenizer_dir, folder)


def is_quantized_dir(folder) -> bool:
    try:
        return "quantization_config" in json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def load_quantized(folder) -> nn.Module:
    """The int8 model saved by save_quantized, ready for CPU inference."""
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    quantization = raw.pop("quantization_config", None)
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method != METHOD:
        raise ValueError(f"{folder / 'config.json'}: quantization_config.quant_method {method!r}; expected {METHOD!r} "
                         "(an int8 model written by quantize.py)")
    path = folder / WEIGHTS_NAME
    tensors = files.read_safetensors(path)
    # The skeleton: a plain model of this config, quantised, then given the stored values.
    qnet = quantize_dynamic(M.BertForSequenceClassification(M.BertConfig.from_dict(raw)).eval())
    linear = dict(quantized_linears(qnet))
    own = {k: v for k, v in qnet.state_dict().items() if not _is_under(k, linear)}  # views of the fp32 tensors
    expected = set(own) | {f"{n}.{k}" for n in linear for k in ("weight", "weight_scale", "bias")}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise ValueError(f"{path}: {'missing' if missing else 'unexpected'} key {key!r}; expected an int8 model "
                         "written by quantize.py for this config")
    for key, value in own.items():
        if value.shape != tensors[key].shape:
            raise ValueError(f"{path}: {key} has shape {tuple(tensors[key].shape)}; expected {tuple(value.shape)}")
        value.copy_(tensors[key])
    for name, module in linear.items():
        q, scale, bias = tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"], tensors[f"{name}.bias"]
        shape = (module.out_features, module.in_features)
        if q.dtype != torch.int8 or tuple(q.shape) != shape or tuple(scale.shape) != shape[:1]:
            raise ValueError(f"{path}: {name}.weight is {q.dtype} {tuple(q.shape)} with scales {tuple(scale.shape)}; "
                             f"expected int8 {shape} with scales ({shape[0]},)")
        if tuple(bias.shape) != shape[:1]:
            raise ValueError(f"{path}: {name}.bias has shape {tuple(bias.shape)}; expected ({shape[0]},)")
        # Re-quantising q * scale with the same scales gives back exactly q.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            weight = torch.quantize_per_channel(q.float() * scale[:, None], scale.double(),
                                                torch.zeros(shape[0], dtype=torch.long), 0, torch.qint8)
        module.set_weight_bias(weight, bias)
    qnet.quantization = quantization
    qnet.source_dir = folder
    return qnet
