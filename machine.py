"""
The machine a model runs on: what its CPU says it has, and how fast it runs the model's own work,
measured once and kept.

    machine.describe()                   # "Intel(R) Xeon(R) ..., 2 cores, AMX-BF16 ...; 2 threads, torch 2.13.0"
    machine.matmul_ratio(384, 1536)      # {"ratio": 6.1, ...}: bf16's products against fp32's (precision.py's auto)
    machine.best_batch_size(layer, torch.bfloat16)   # 64: the labelling batch size (classifier.py)

A CPU flag says what the CPU has, not what runs faster on it: with AMX, bf16's matrix products
run several times fp32's; with AVX-512 BF16 alone they can run slower than fp32's. So the choices
that depend on speed are made by measuring the model's own shapes, through the kernels the model
will run. Each measurement takes well under a second and is kept as a small JSON file in the
cache folder (files.cache_root(): $NANOBERT_CACHE, else ~/.cache/nanobert), under a key of what
its answer depends on: the CPU (model and flags), torch, the threads, the environment variables
that change the kernels, and what was measured. The next run on the same machine reads it.
"""

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import fast
import files

# -----------------------------------------------------------------------------
# What the CPU says it has


def cpu_flags(cpuinfo="/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux's names: amx_bf16, avx512_bf16, avx512_vnni, ...), or None
    when they cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return flags


def cpu_model(cpuinfo="/proc/cpuinfo") -> str:
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The units that multiply matrices, as every figure of bench.py names them.
UNITS = {"AMX-BF16": "amx_bf16", "AMX-INT8": "amx_int8", "AVX-512 BF16": "avx512_bf16", "AVX-512 VNNI": "avx512_vnni",
         "AVX-VNNI": "avx_vnni"}


def info() -> dict:
    """What a speed figure depends on: the CPU, its matrix units, the threads, torch."""
    flags = cpu_flags() or set()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "units": [name for name, flag in UNITS.items() if flag in flags], "isa": torch.backends.cpu.get_cpu_capability()}


def describe(m: dict | None = None) -> str:
    """One line: 'Intel(R) Xeon(R) ..., 2 cores, AMX-BF16 AMX-INT8 ...; 2 threads, torch 2.13.0'."""
    m = m or info()
    units = " ".join(m["units"]) or f"no AMX, AVX-512 BF16 or VNNI ({m['isa']})"
    return f"{m['cpu']}, {m['cores']} cores, {units}; {m['threads']} threads, torch {m['torch']}"


# -----------------------------------------------------------------------------
# Measured once, kept

KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE", "ATEN_CPU_CAPABILITY")  # they change the kernels


def key(**measured) -> dict:
    """What a measurement's answer depends on: the machine it runs on, and `measured` (the shapes, the dtype)."""
    flags = " ".join(sorted(cpu_flags() or ()))
    return {"cpu": cpu_model(), "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}, **measured}


def cached(kind: str, what: dict, measure) -> dict:
    """
    measure() (a dict of numbers) for the machine it runs on and `what`, read from the cache folder when it
    was measured before: <cache>/machine/<kind>-<digest>.json. Returns the numbers plus "cache"
    (the file, or None where the folder cannot be written: measured, not kept) and "cached"
    (read from it). A file that cannot be read, or that holds another key, is measured again.
    """
    k = key(**what)
    digest = hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:16]
    path = files.cache_root() / "machine" / f"{kind}-{digest}.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved["key"] == k and isinstance(saved["result"], dict):
            return {**saved["result"], "cache": str(path), "cached": True}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, damaged or another machine's: measure
    result = measure()
    try:
        files.write_json(path, {"key": k, "result": result})
    except OSError:
        path = None
    return {**result, "cache": path and str(path), "cached": False}


# -----------------------------------------------------------------------------
# bf16 against fp32 at the model's shapes (precision.py's auto)

PROBE_TOKENS = 1024  # rows of each product: a batch of 32 texts of 32 tokens (a labelling batch of tweets)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def probe_matmuls(hidden: int, ffn: int, tokens: int = PROBE_TOKENS, repeats: int = 8) -> dict:
    """
    Seconds of one layer's big matrix products for `tokens` tokens, {"fp32": s, "bf16": s}, through
    the kernels the fast path uses (fast.matmul_bias: oneDNN's inner product with the bias and
    the GELU or the add fused, for bf16; F.linear, for fp32): q/k/v (H -> 3H), the FFN's first
    (H -> FFN, GELU) and second (FFN -> H, the residual added). Each runs `repeats` times, fp32 and
    bf16 back to back, after a warm-up; the best time counts (on a shared CPU other work only
    ever adds time).

    On one thread: the ratio is the matrix units' (AMX or AVX-512 against AVX-512 FMA), which is
    what differs between CPUs, and one thread is what a busy machine can still lend whole. On a
    2-core CPU loaded by other work, at 2 threads fp32's kernels (MKL) ran 2-4x slower than at
    one and bf16's (oneDNN) did not, so the probe measured bf16 1.2-1.9x faster where, with oneDNN
    held to AVX-512 BF16 (ONEDNN_MAX_CPU_ISA, the CPU without AMX), it is 0.5x; at one thread it
    measured 0.5x every time.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _probe_matmuls(hidden, ffn, tokens, repeats)
    finally:
        torch.set_num_threads(threads)


def _probe_matmuls(hidden, ffn, tokens, repeats):
    g = torch.Generator().manual_seed(0)
    x, h = torch.randn(tokens, hidden, generator=g), torch.randn(tokens, ffn, generator=g)  # (N, H), (N, FFN)
    products = [(x, 3 * hidden, None, None), (x, ffn, F.gelu, None), (h, hidden, None, x)]  # (input, out, act, add)
    weights = [(torch.randn(n, a.size(1), generator=g) * a.size(1) ** -0.5, torch.randn(n, generator=g))
               for a, n, _, _ in products]
    cast = {name: [(a.to(dt), w.to(dt), b.to(dt), act, None if add is None else add.to(dt))
                   for (a, _, act, add), (w, b) in zip(products, weights, strict=True)] for name, dt in DTYPES.items()}
    best = {name: [float("inf")] * len(products) for name in DTYPES}
    with torch.inference_mode():
        for rep in range(repeats + 1):  # rep 0: the warm-up (oneDNN makes its kernels on first use)
            for i in range(len(products)):
                for name, args in cast.items():  # fp32 and bf16 back to back: the same load on the machine
                    a, w, b, act, add = args[i]
                    t = time.perf_counter()
                    fast.matmul_bias(a, w, b, act, add)
                    if rep:
                        best[name][i] = min(best[name][i], time.perf_counter() - t)
    return {name: sum(times) for name, times in best.items()}


def matmul_ratio(hidden: int, ffn: int) -> dict:
    """How much faster bf16's matrix products run than fp32's here, at these shapes (probe_matmuls,
    measured once per machine): {"ratio": fp32 s / bf16 s, "fp32_ms", "bf16_ms", "cache", "cached"}."""
    def measure():
        s = probe_matmuls(hidden, ffn)
        return {"ratio": round(s["fp32"] / s["bf16"], 3), "fp32_ms": round(s["fp32"] * 1e3, 3),
                "bf16_ms": round(s["bf16"] * 1e3, 3)}
    return cached("matmul", {"shapes": [PROBE_TOKENS, hidden, ffn], "probe_threads": 1}, measure)


# -----------------------------------------------------------------------------
# The labelling batch size (classifier.py)
#
# Texts sorted by length (batching.Loader(by_length=True)) waste little on padding at any batch
# size; what the size still changes is how the kernels run. Measured on a CPU with AMX, 1 thread,
# 2,000 tweets (sentences per CPU-second at 16 / 64 / 256 a batch): bf16 550 / 658 / 554, where
# the matrix units want long products; fp32 174 / 161 / 131 and int8 310 / 273 / 198, where a
# small batch keeps the activations in cache. So it is measured, on one layer of the model.

BATCH_SIZES = (16, 32, 64, 128)
TYPICAL_TOKENS = 32  # a tweet is ~25 tokens


def time_batch_sizes(layer, hidden: int, dtype, sizes=BATCH_SIZES, tokens=TYPICAL_TOKENS, repeats=2) -> dict:
    """Seconds per text of `layer` (one encoder layer of the model, prepared as it will run, taking
    (B, T, hidden) in `dtype`) at each batch size, {size: s}: the best of `repeats` after a warm-up."""
    g = torch.Generator().manual_seed(0)
    best = {b: float("inf") for b in sizes}
    with torch.inference_mode():
        xs = {b: torch.randn(b, tokens, hidden, generator=g).to(dtype) for b in sizes}  # (B, T, H)
        for rep in range(repeats + 1):  # rep 0: the warm-up
            for b in sizes:
                t = time.perf_counter()
                layer(xs[b])
                if rep:
                    best[b] = min(best[b], (time.perf_counter() - t) / b)
    return best


def best_batch_size(layer, hidden: int, dtype, what: dict | None = None) -> dict:
    """{"batch_size": the fastest per text of BATCH_SIZES (within 3% of it, the smaller: less
    memory), "per_text_ms": {size: ms}, "cache", "cached"}; measured once per machine and `what`
    (the model's shapes and kind of arithmetic: what the key must tell apart)."""
    def measure():
        seconds = time_batch_sizes(layer, hidden, dtype)
        fastest = min(seconds.values())
        size = min(b for b, s in seconds.items() if s <= fastest * 1.03)
        return {"batch_size": size, "per_text_ms": {str(b): round(s * 1e3, 4) for b, s in seconds.items()}}
    return cached("batch", {"dtype": str(dtype).removeprefix("torch."), "hidden": hidden, **(what or {})}, measure)
