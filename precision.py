"""
Which number format the model computes in: fp32, or bfloat16 with fp32 master weights; and
whether it runs the fast path (fast.py) or model.py as written.

    choice = precision.choose("auto", device, config=net.config)   # measured: Choice("bf16", "auto: ... 6.1x ...")
    precision.prepare(net, choice)              # training: the model computes in bf16, its parameters stay fp32
    precision.prepare(teacher, choice, inference=True)   # a fixed model: frozen, its bf16 weights cast once
    precision.choose("auto", device, fast=False)         # Choice("fp32", ..., fast=False): model.py as written

In bf16 the parameters stay fp32: they are what the optimizer updates (the master weights) and
what checkpoints hold. The model casts its activations to bf16 once, after the embeddings, and
each weight where it is used (fast.py, "Arithmetic precision"); the gradients come back fp32.
So the training loop is the fp32 loop, without torch.autocast:

    loss = F.cross_entropy(net(ids, mask, types).logits.float(), labels)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
    opt.step()                                  # torch.optim.AdamW(..., fused=True), as in fp32
    opt.zero_grad(set_to_none=True)

bf16 keeps 8 bits of mantissa (about 3 significant digits): hidden states and logits differ
from fp32 by ~1e-2 (tests/test_precision.py bounds it); the head (pooler, classifier) computes
in fp32, so logits and probabilities are fp32 tensors.

`auto` on a CPU decides by measurement, not by a CPU flag: a CPU flag says that bf16 is native,
not that it is faster. With AMX (Intel Sapphire Rapids and later) bf16's matrix products run
several times fp32's; with AVX-512 BF16 alone (Cooper Lake, AMD Zen 4) they can run slower than
fp32's, and the whole step with them. So `auto` times the model's own matrix products in both
(machine.matmul_ratio, well under a second), keeps the answer in the cache folder per machine
(CPU, flags, torch, threads), and picks bf16 only where it wins by MARGIN. On a CUDA GPU
it picks bf16 where the GPU supports it natively (Ampere and later). `auto` never picks int8:
int8 is an export (quantize.py) whose quality the report measures.

bf16 is a fast-path thing: fast.py swaps in the modules that compute in it. With fast off
(`--fast off`), the plain model of model.py runs, in fp32: `auto` picks fp32, and bf16 is refused.
"""

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass, field

import torch
import torch.nn as nn

import fast
import machine

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Choice:
    precision: str  # "fp32" or "bf16": what the model computes in
    reason: str  # one sentence: why, for the log and run.json
    fast: bool = True  # the fast path (fast.py), or False: model.py as written, in fp32
    probe: dict | None = field(default=None, compare=False)  # auto on a CPU: what was measured (machine.matmul_ratio)

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def cpu_bf16_features(cpuinfo="/proc/cpuinfo") -> list[str] | None:
    """The CPU's native bf16 features among amx_bf16 and avx512_bf16, or None when they cannot be read."""
    flags = machine.cpu_flags(cpuinfo)
    return None if flags is None else [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def native_bf16(device) -> tuple[bool, str]:
    """(whether `device` multiplies bf16 matrices natively, a sentence saying why)."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"{torch.cuda.get_device_name(device)} supports bf16 natively"
        return False, f"{torch.cuda.get_device_name(device)} has no native bf16"
    if device.type != "cpu":
        return False, f"no bf16 check for device {device.type!r}"
    features = cpu_bf16_features()
    if features is None:
        return False, "cannot read this CPU's features (no /proc/cpuinfo)"
    if features:
        names = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}
        return True, f"this CPU multiplies bf16 natively ({', '.join(names[f] for f in features)})"
    return False, f"this CPU has no native bf16 (no AVX-512 BF16 or AMX; torch sees {torch.backends.cpu.get_cpu_capability()})"


# -----------------------------------------------------------------------------
# auto on a CPU: measured
#
# bf16 only where the model's matrix products run at least MARGIN times faster in it
# (machine.matmul_ratio). Measured with the 6-layer model's shapes: 5.8-6.0x on a CPU with AMX;
# 0.68-0.72x on the same CPU with oneDNN held to AVX-512 BF16 (ONEDNN_MAX_CPU_ISA: a CPU without
# AMX; such a CPU measured 159 against 232 GFLOP/s, 0.69x). The margin matters only for a CPU near
# 1x: there bf16 gains little in the products and less in a whole step (LayerNorm, softmax, GELU,
# the embeddings and the casts of the trained weights gain less or lose), within what a busy
# machine makes the probe err by, and it costs precision (logits ~1e-2 from fp32). 1.25x in the
# products is still >= 1.1x in a step whose products are 60% of it.

MARGIN = 1.25
DEFAULT_SHAPES = (384, 1536)  # hidden size and FFN width of the default model (all-MiniLM-L6-v2)


def check(requested: str, fast: bool = True):
    """A ValueError, before anything is loaded, for a precision that cannot be: an unknown name, or
    bf16 with fast off (the plain model computes in fp32)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if not fast and requested == "bf16":
        raise ValueError("--precision bf16 needs --fast on (bf16 is the fast path's); expected --precision fp32 "
                         "or auto with --fast off")


def choose(requested: str = "auto", device="cpu", fast: bool = True, config=None) -> Choice:
    """The precision to compute in, and why. `bf16` is honoured even where it is emulated; with
    fast off only fp32 is (the plain model computes in fp32). auto on a CPU measures (machine.matmul_ratio)
    at the shapes of `config` (a BertConfig: hidden_size, intermediate_size; None: the default
    model's)."""
    check(requested, fast)
    if not fast:
        return Choice("fp32", "fp32 as asked; --fast off" if requested == "fp32" else
                      "auto: --fast off runs the plain model, which computes in fp32", fast=False)
    if requested == "fp32":
        return Choice("fp32", "fp32 as asked")
    native, why = native_bf16(device)
    if requested == "bf16":
        return Choice("bf16", "bf16 as asked" + ("" if native else f"; {why}: it is emulated, slower than fp32"))
    if torch.device(device).type != "cpu":
        return Choice("bf16" if native else "fp32", f"auto: {why}")
    shapes = (config.hidden_size, config.intermediate_size) if config is not None else DEFAULT_SHAPES
    probe = machine.matmul_ratio(*shapes)
    wins = probe["ratio"] >= MARGIN
    where = f"cached in {probe['cache']}" if probe["cached"] else \
        f"measured, kept in {probe['cache']}" if probe["cache"] else "measured, not cached (cache folder not writable)"
    reason = (f"auto: bf16's matrix products ran {probe['ratio']:.2f}x fp32's here at H={shapes[0]}, FFN={shapes[1]} "
              f"({'at least' if wins else 'under'} the {MARGIN}x bf16 needs; {where})")
    return Choice("bf16" if wins else "fp32", reason, probe=probe)


def is_quantized(net: nn.Module) -> bool:
    """An int8 model (quantize.py): its kernels take fp32 activations."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in net.modules())


def computed_in(net: nn.Module, choice: Choice) -> str:
    """What `net` computes in once prepared for `choice`: an int8 model, or the plain model (fast
    off), stays fp32 whatever is asked."""
    return "fp32" if is_quantized(net) or not choice.fast else choice.precision


def prepare(net: nn.Module, choice: Choice, inference: bool = False, keep_masters: bool = True) -> nn.Module:
    """
    Make every BERT inside `net` compute in choice.dtype on the fast path (fast.prepare: its
    modules swapped for faster ones over the same parameters, which are not changed), or, with
    choice.fast off, run as model.py writes it (fast.unprepare). inference=True is for a model
    that is not trained (evaluation, a distillation teacher): it is put in eval mode and frozen
    (requires_grad False), so that its bf16 weights are cast once and kept, instead of at every
    call. (A trained weight is cast at every forward: the fused AdamW changes it in place without
    a trace that a cache could check.) keep_masters=False, with inference, is for a model that
    only labels texts (classifier.py): its encoder's weights are then stored in bf16 alone, with
    no fp32 master beside them (fast.store_in_compute_dtype). An int8 model is left plain, in
    fp32. Returns net.
    """
    if choice.fast and not is_quantized(net):
        fast.prepare(net, DTYPES[computed_in(net, choice)])
    else:
        fast.unprepare(net)
    if inference:
        net.eval().requires_grad_(False)
        if not keep_masters and choice.fast and not is_quantized(net):
            fast.store_in_compute_dtype(net, DTYPES[computed_in(net, choice)])
    return net


def keep_freed_memory() -> bool:
    """
    Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS. By
    default it hands back every block over 32 MB (it maps those with mmap) and the top of its
    heap; a training step frees and allocates the same ~400 MB of activations and gradients
    each time (the word-embedding gradient alone is 47 MB), so each step page-faults it all in
    again: 100k faults a step here, ~15% of a bf16 step. With this, none after the first steps.
    Process-wide; the peak memory is unchanged (the same blocks are reused). Linux/glibc only:
    elsewhere it does nothing and returns False.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
