"""
Which number format the model computes in: fp32, or bfloat16 with fp32 master weights; and
whether it runs the fast path (fast.py) or model.py as written.

    choice = precision.choose("auto", device)   # Choice("bf16", "this CPU multiplies bf16 natively (AMX)")
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

`auto` picks bf16 where the hardware multiplies bf16 natively: a CPU with AVX-512 BF16 or AMX
(Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later), or a CUDA GPU that supports
it (Ampere and later). Elsewhere bf16 is emulated and slower than fp32, and `auto` picks fp32.

bf16 is a fast-path thing: fast.py swaps in the modules that compute in it. With fast off
(`--fast off`), the plain model of model.py runs, in fp32: `auto` picks fp32, and bf16 is refused.
"""

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

import fast

PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Choice:
    precision: str  # "fp32" or "bf16": what the model computes in
    reason: str  # one sentence: why, for the log and run.json
    fast: bool = True  # the fast path (fast.py), or False: model.py as written, in fp32

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.precision]


def cpu_bf16_features(cpuinfo="/proc/cpuinfo") -> list[str] | None:
    """The CPU's native bf16 features among amx_bf16 and avx512_bf16 (Linux's names), or None
    when they cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


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


def choose(requested: str = "auto", device="cpu", fast: bool = True) -> Choice:
    """The precision to compute in, and why. `bf16` is honoured even where it is emulated; with
    fast off only fp32 is (the plain model computes in fp32)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: expected one of {', '.join(PRECISIONS)}")
    if not fast:
        if requested == "bf16":
            raise ValueError("--precision bf16 needs --fast on (bf16 is the fast path's); expected --precision fp32 "
                             "or auto with --fast off")
        return Choice("fp32", "fp32 as asked; --fast off" if requested == "fp32" else
                      "auto: --fast off runs the plain model, which computes in fp32", fast=False)
    native, why = native_bf16(device)
    if requested == "fp32":
        return Choice("fp32", "fp32 as asked")
    if requested == "bf16":
        return Choice("bf16", "bf16 as asked" + ("" if native else f"; {why}: it is emulated, slower than fp32"))
    return Choice("bf16" if native else "fp32", f"auto: {why}")


def is_quantized(net: nn.Module) -> bool:
    """An int8 model (quantize.py): its kernels take fp32 activations."""
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in net.modules())


def computed_in(net: nn.Module, choice: Choice) -> str:
    """What `net` computes in once prepared for `choice`: an int8 model, or the plain model (fast
    off), stays fp32 whatever is asked."""
    return "fp32" if is_quantized(net) or not choice.fast else choice.precision


def prepare(net: nn.Module, choice: Choice, inference: bool = False) -> nn.Module:
    """
    Make every BERT inside `net` compute in choice.dtype on the fast path (fast.prepare: its
    modules swapped for faster ones over the same parameters, which are not changed), or, with
    choice.fast off, run as model.py writes it (fast.unprepare). inference=True is for a model
    that is not trained (evaluation, a distillation teacher): it is put in eval mode and frozen
    (requires_grad False), so that its bf16 weights are cast once and kept, instead of at every
    call. (A trained weight is cast at every forward: the fused AdamW changes it in place without
    a trace that a cache could check.) An int8 model is left plain, in fp32. Returns net.
    """
    if choice.fast and not is_quantized(net):
        fast.prepare(net, DTYPES[computed_in(net, choice)])
    else:
        fast.unprepare(net)
    if inference:
        net.eval().requires_grad_(False)
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
