"""
Speed of nanobert's BERT on the machine it runs on: a training step (forward + backward + AdamW) and
inference, for 12- and 6-layer hidden-384 models at batch 32 x 64 tokens, full fine-tuning and
LoRA (r=8 on query, key, value), fp32 and bf16, and int8 inference (every linear layer
dynamically quantised, quantize.py; the reference gets torch's quantize_dynamic alike).
nanobert's bf16 is its own path (precision.py: bf16 arithmetic, fp32 master weights, the
training loop of train.py); the reference's bf16 is torch.autocast, as its users run it.

    python bench.py                 # nanobert
    python bench.py --reference     # the same cases side by side with transformers (+ peft), if installed
    python bench.py --reference --rounds 3   # each case 3 times, nanobert and reference in turn
    python bench.py --only int8-infer,infer   # some cases only
    python bench.py --compile       # the model under torch.compile (both implementations)
    python bench.py --reference --malloc keep    # both keep freed memory for reuse (the allocator alike)
    python bench.py --profile 12:train:bf16      # where one nanobert step's time goes

Each case runs in a fresh process, so that its peak memory (max RSS) is its own. FLOPs are
counted as 2 x (non-embedding parameters) x tokens for a forward pass plus attention's
4 x B x T^2 x H per layer, and three times that for a training step; "of peak" divides the
achieved FLOP/s by the best matmul throughput of that dtype measured here, at the model's own
linear-layer shapes (the bf16 peak is what this CPU's bf16 units, e.g. AMX, reach). The
machine may be shared: with --rounds R every case runs R times, the implementations in turn,
and the table gives the median of the rounds and the speed-up as the median of the per-round
ratios.

The reference stack is not a dependency of nanobert: install transformers and peft by hand
to compare; they are imported only for --reference.
"""

import argparse
import importlib
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

import lora
import model as M
import precision
import quantize

B, T, H, HEADS, FFN, VOCAB = 32, 64, 384, 12, 1536, 30522


def matmul_peak(dtype=torch.float32):
    """Best GFLOP/s of the model's own linear-layer shapes (forward: q/k/v fused, FFN in and out)
    in `dtype`, and for fp32 also of a large square matmul."""
    best = 0.0
    shapes = [(B * T, H, 3 * H), (B * T, H, FFN), (B * T, FFN, H)]
    for m, k, n in shapes + ([(2048, 2048, 2048)] if dtype == torch.float32 else []):
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(10):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        best = max(best, 2 * m * k * n / min(times) / 1e9)
    return best


def flops(layers, mode):
    params = layers * (4 * H * H + 2 * H * FFN)  # the linear layers of the encoder
    attention = layers * 4 * B * T * T * H
    forward = 2 * params * B * T + attention
    # Backward costs two forwards (gradients of activations and of weights); LoRA freezes the
    # weights, which saves the weight gradients: about one forward.
    return {"train": 3, "lora-train": 2}.get(mode, 1) * forward


def build(impl, layers, use_lora):
    """(model, forward(ids, mask) -> logits) for nanobert or the reference implementation."""
    torch.manual_seed(0)
    kw = dict(hidden_size=H, num_hidden_layers=layers, num_attention_heads=HEADS, intermediate_size=FFN, vocab_size=VOCAB)
    if impl == "nanobert":
        net = M.BertForSequenceClassification(M.BertConfig(**kw))
        if use_lora:
            lora.inject_lora(net, ("query", "key", "value"), r=8, alpha=16, dropout=0.1)
        return net, build_forward(impl, net)
    transformers = importlib.import_module("transformers")
    net = transformers.BertForSequenceClassification(transformers.BertConfig(**kw, num_labels=2))
    if use_lora:
        peft = importlib.import_module("peft")
        net = peft.get_peft_model(net, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, task_type="SEQ_CLS",
                                                       target_modules=["query", "key", "value"]))
    return net, build_forward(impl, net)


def build_forward(impl, net):
    if impl == "nanobert":
        return lambda ids, mask: net(ids, mask).logits
    return lambda ids, mask: net(input_ids=ids, attention_mask=mask).logits


def make_step(impl, layers, mode, bf16, compile_=False, keep_memory=True):
    """One step of a case, as a function; mode: train, lora-train, infer, lora-merged-infer, int8-infer.
    keep_memory: glibc keeps freed memory for reuse (precision.keep_freed_memory, as train.py does)."""
    use_lora = mode.startswith("lora")
    if keep_memory:
        precision.keep_freed_memory()
    net, forward = build(impl, layers, use_lora)
    ids = torch.randint(1000, VOCAB, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    labels = torch.randint(0, 2, (B,))
    # The reference computes bf16 under autocast; nanobert in its own bf16 path (precision.py).
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16 and impl != "nanobert")
    choice = precision.Choice("bf16" if bf16 else "fp32", "bench")
    if mode.endswith("train"):
        if impl == "nanobert":
            precision.prepare(net, choice)
        net.train()
        # Both loops step torch's fused AdamW (train.py's optimizer): the comparison is of the models.
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5, fused=True)

        def step():
            with autocast:
                loss = F.cross_entropy(forward(ids, mask).float(), labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        if mode == "int8-infer":
            net = quantize.quantize_dynamic(net.eval())  # in place for both: peak RSS holds one model
            forward = build_forward(impl, net)
        if mode == "lora-merged-infer":
            if impl == "nanobert":
                lora.merge_all(net)
            else:
                net = net.merge_and_unload()
                forward = build_forward(impl, net)
        net.eval()
        if impl == "nanobert":
            precision.prepare(net, choice, inference=True)

        def step():
            with torch.inference_mode(), autocast:
                forward(ids, mask)
    if compile_:
        # torch.compile (inductor): fuses the elementwise work around the matmuls into generated
        # C++ kernels. The first steps compile (tens of seconds); the warm-up below pays for that.
        forward = build_forward(impl, torch.compile(net))
    return step


def run_case(impl, layers, mode, bf16, repeats, compile_=False, keep_memory=False):
    """Time one case in this process: the median of `repeats` steps after two of warm-up."""
    step = make_step(impl, layers, mode, bf16, compile_, keep_memory)
    step()
    step()  # warm-up: allocations, optimizer state, kernel choices
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"impl": impl, "layers": layers, "mode": mode, "dtype": "bf16" if bf16 else "fp32", "compiled": compile_,
            "seconds": statistics.median(times), "best_seconds": min(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# What the profile counts as matrix products: the ops that run the GEMMs (oneDNN or MKL) themselves.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise",
              "mkldnn::_linear_pointwise.binary", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_case(layers, mode, dtype, repeats, peak):
    """Where a nanobert step's time goes (torch.profiler): the top ops by their own time, and the share of
    the matrix products. Their FLOP/s bound the whole step's: if the products alone run at X% of the
    matmul peak, the step cannot run faster than X% of it, whatever the other ops cost."""
    step = make_step("nanobert", layers, mode, dtype == "bf16")
    step()
    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(repeats):
            step()
        seconds = (time.perf_counter() - t) / repeats
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / repeats  # the profiler's own seconds per step
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6 / repeats
    work = flops(layers, mode) / 1e9
    print(f"{layers}-layer {mode} {dtype}: {seconds:.3f} s a step under the profiler ({total:.3f} s of op time); "
          f"matrix products {matmul:.3f} s = {matmul / total:.0%} of the op time")
    print(f"  the step: {work / seconds:.0f} GFLOP/s = {work / seconds / peak:.0%} of the {peak:.0f} GFLOP/s {dtype} peak; "
          f"the products alone: {work / matmul:.0f} GFLOP/s = {work / matmul / peak:.0%} of it (the step's ceiling "
          "if everything else took no time)")


MALLOC = {"own": "nanobert keeps freed memory, the reference glibc's default", "default": "glibc's default for both",
          "keep": "both keep freed memory"}
CASES = [(12, "train"), (12, "infer"), (6, "train"), (6, "infer"), (12, "lora-train"), (12, "lora-merged-infer"),
         (12, "int8-infer"), (6, "int8-infer")]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", action="store_true", help="also time transformers (+ peft), side by side")
    parser.add_argument("--no-bf16", action="store_true", help="fp32 only")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions per case (median reported)")
    parser.add_argument("--only", help="comma-separated cases to run (train, infer, lora-train, lora-merged-infer, "
                        "int8-infer); default all")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (both implementations)")
    parser.add_argument("--rounds", type=int, default=1, help="run every case this many times, the implementations "
                        "in turn; medians of the rounds are reported (default 1)")
    parser.add_argument("--malloc", choices=MALLOC, default="own", help="own: each as it runs by itself (nanobert keeps "
                        "freed memory for reuse, precision.keep_freed_memory; the reference has glibc's default, which "
                        "hands it back to the OS); default: both glibc's default; keep: both keep it (default own)")
    parser.add_argument("--keep-memory", action="store_true", help=argparse.SUPPRESS)  # internal, with --case
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--profile", metavar="LAYERS:MODE:DTYPE", help="profile one nanobert case instead, e.g. "
                        "12:train:bf16: the top ops and the share of the matrix products")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        impl, layers, mode, dtype = args.case.split(":")
        r = run_case(impl, int(layers), mode, dtype == "bf16", args.repeats, args.compile, args.keep_memory)
        print(json.dumps({**r, "dtype": dtype}))
        return

    if args.profile:
        try:
            layers, mode, dtype = args.profile.split(":")
            layers = int(layers)
        except ValueError:
            parser.error(f"--profile {args.profile!r}: expected LAYERS:MODE:DTYPE, e.g. 12:train:bf16")
        if (layers, mode) not in CASES or dtype not in ("fp32", "bf16"):
            parser.error(f"--profile {args.profile!r}: expected one of the cases {CASES} and fp32 or bf16")
        profile_case(layers, mode, dtype, args.repeats, matmul_peak(precision.DTYPES[dtype]))
        return

    modes = {mode for _, mode in CASES}
    unknown = sorted(set(args.only.split(",")) - modes) if args.only else []
    if unknown:
        parser.error(f"--only {unknown[0]!r}: expected some of {', '.join(sorted(modes))}")
    peaks = {"fp32": matmul_peak(), "bf16": None if args.no_bf16 else matmul_peak(torch.bfloat16)}
    print(f"matmul peak measured here at the model's shapes: fp32 {peaks['fp32']:.0f} GFLOP/s"
          + ("" if args.no_bf16 else f", bf16 {peaks['bf16']:.0f} GFLOP/s ({peaks['bf16'] / peaks['fp32']:.1f}x)")
          + f"; {torch.get_num_threads()} threads, torch {torch.__version__}" + (", torch.compile" if args.compile else "")
          + f"; malloc: {MALLOC[args.malloc]}")
    impls = ["nanobert"] + (["reference"] if args.reference else [])
    dtypes = ["fp32"] + ([] if args.no_bf16 else ["bf16"])
    results = []
    print(f"{'impl':10} {'model':9} {'case':18} {'dtype':5} {'s/batch':>8} {'tokens/s':>9} {'of peak':>8} {'peak RSS':>9}")
    for layers, mode in CASES:
        if args.only and mode not in args.only.split(","):
            continue
        # int8 is its own number format: no bf16 on top of it.
        for dtype in dtypes if mode != "int8-infer" else ["int8"]:
            rounds = {impl: [] for impl in impls}
            for _ in range(args.rounds):
                for impl in impls:  # side by side: the same case back to back
                    out = subprocess.run([sys.executable, __file__, "--case", f"{impl}:{layers}:{mode}:{dtype}",
                                          "--repeats", str(args.repeats)] + ["--compile"] * args.compile
                                         + ["--keep-memory"] * (args.malloc == "keep" or (args.malloc == "own" and impl == "nanobert")),
                                         capture_output=True, text=True)
                    if out.returncode:
                        sys.exit(f"case {impl} {layers} {mode} {dtype} failed:\n{out.stderr[-2000:]}")
                    rounds[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
            for impl in impls:
                runs = rounds[impl]
                r = {**runs[0], "seconds": statistics.median(x["seconds"] for x in runs),
                     "best_seconds": min(x["best_seconds"] for x in runs),
                     "peak_rss_mb": statistics.median(x["peak_rss_mb"] for x in runs),
                     "rounds_seconds": [x["seconds"] for x in runs]}
                r["tokens_per_s"] = B * T / r["seconds"]
                # Of the peak of its own dtype; for int8 that fraction means nothing (its own units).
                peak = peaks.get(dtype)
                r["fraction_of_peak"] = None if peak is None else flops(layers, mode) / r["seconds"] / 1e9 / peak
                if impl == "nanobert" and "reference" in rounds:
                    r["speedup_over_reference"] = statistics.median(
                        ref["seconds"] / own["seconds"] for ref, own in zip(rounds["reference"], runs, strict=True))
                results.append(r)
                print(f"{impl:10} {layers:2d}-layer  {mode:18} {dtype:5} {r['seconds']:8.3f} {r['tokens_per_s']:9.0f} "
                      f"{'n/a' if r['fraction_of_peak'] is None else format(r['fraction_of_peak'], '.0%'):>8} "
                      f"{r['peak_rss_mb']:7.0f}MB", flush=True)
    if args.reference:
        print("\nspeed-up of nanobert over the reference (" + ("median of per-round ratios" if args.rounds > 1
              else "median seconds") + "):")
        for r in results:
            if "speedup_over_reference" in r:
                print(f"  {r['layers']:2d}-layer {r['mode']:18} {r['dtype']}: {r['speedup_over_reference']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_peak_gflops": peaks["fp32"], "bf16_matmul_peak_gflops": peaks["bf16"], "batch": [B, T],
                       "threads": torch.get_num_threads(), "rounds": args.rounds, "malloc": MALLOC[args.malloc],
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
