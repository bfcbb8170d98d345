"""
Speed of nanobert's BERT on this machine: a training step (forward + backward + AdamW) and
inference, for 12- and 6-layer hidden-384 models at batch 32 x 64 tokens, full fine-tuning and
LoRA (r=8 on query, key, value), fp32 and bfloat16 autocast, and int8 inference (every linear
layer dynamically quantised, quantize.py; the reference gets torch's quantize_dynamic alike).

    python bench.py                 # nanobert
    python bench.py --reference     # the same cases side by side with transformers (+ peft), if installed
    python bench.py --only int8-infer,infer   # some cases only
    python bench.py --compile       # the model under torch.compile (both implementations)

Each case runs in a fresh process, so that its peak memory (max RSS) is its own. FLOPs are
counted as 2 x (non-embedding parameters) x tokens for a forward pass plus attention's
4 x B x T^2 x H per layer, and three times that for a training step; "of peak" divides the
achieved FLOP/s by the best fp32 matmul throughput measured here.

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
import quantize

B, T, H, HEADS, FFN, VOCAB = 32, 64, 384, 12, 1536, 30522


def matmul_peak():
    """Best fp32 GFLOP/s of a few large matmuls and of the model's own linear-layer shapes."""
    best = 0.0
    for m, k, n in [(2048, 2048, 2048), (B * T, H, FFN), (B * T, FFN, H)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
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


def run_case(impl, layers, mode, bf16, repeats, compile_=False):
    """Time one case in this process; mode: train, lora-train, infer, lora-merged-infer, int8-infer."""
    use_lora = mode.startswith("lora")
    net, forward = build(impl, layers, use_lora)
    ids = torch.randint(1000, VOCAB, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    labels = torch.randint(0, 2, (B,))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    if mode.endswith("train"):
        net.train()
        # nanobert's loop uses the fused AdamW; the reference loop the default one, as its users do.
        opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-5,
                                **({"fused": True} if impl == "nanobert" else {}))

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

        def step():
            with torch.inference_mode(), autocast:
                forward(ids, mask)
    if compile_:
        # torch.compile (inductor): fuses the elementwise work around the matmuls into generated
        # C++ kernels. The first steps compile (tens of seconds); the warm-up below pays for that.
        forward = build_forward(impl, torch.compile(net))
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
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        impl, layers, mode, dtype = args.case.split(":")
        r = run_case(impl, int(layers), mode, dtype == "bf16", args.repeats, args.compile)
        print(json.dumps({**r, "dtype": dtype}))
        return

    modes = {mode for _, mode in CASES}
    unknown = sorted(set(args.only.split(",")) - modes) if args.only else []
    if unknown:
        parser.error(f"--only {unknown[0]!r}: expected some of {', '.join(sorted(modes))}")
    peak = matmul_peak()
    print(f"fp32 matmul peak measured here: {peak:.0f} GFLOP/s, {torch.get_num_threads()} threads, torch {torch.__version__}"
          + (", torch.compile" if args.compile else ""))
    impls = ["nanobert"] + (["reference"] if args.reference else [])
    dtypes = ["fp32"] + ([] if args.no_bf16 else ["bf16"])
    results = []
    print(f"{'impl':10} {'model':9} {'case':18} {'dtype':5} {'s/batch':>8} {'tokens/s':>9} {'of peak':>8} {'peak RSS':>9}")
    for layers, mode in CASES:
        if args.only and mode not in args.only.split(","):
            continue
        # int8 is its own number format: no bf16 autocast on top of it.
        for dtype in dtypes if mode != "int8-infer" else ["int8"]:
            for impl in impls:  # side by side: the same case back to back
                out = subprocess.run([sys.executable, __file__, "--case", f"{impl}:{layers}:{mode}:{dtype}",
                                      "--repeats", str(args.repeats)] + ["--compile"] * args.compile,
                                     capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"case {impl} {layers} {mode} {dtype} failed:\n{out.stderr[-2000:]}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r["tokens_per_s"] = B * T / r["seconds"]
                # Of the fp32 peak: for int8 that fraction means nothing (its own units are faster).
                r["fraction_of_peak"] = None if dtype == "int8" else flops(layers, mode) / r["seconds"] / 1e9 / peak
                results.append(r)
                print(f"{impl:10} {layers:2d}-layer  {mode:18} {dtype:5} {r['seconds']:8.3f} {r['tokens_per_s']:9.0f} "
                      f"{'n/a' if r['fraction_of_peak'] is None else format(r['fraction_of_peak'], '.0%'):>8} "
                      f"{r['peak_rss_mb']:7.0f}MB", flush=True)
    if args.reference:
        print("\nspeed-up of nanobert over the reference (median seconds):")
        for r in results:
            if r["impl"] == "nanobert":
                ref = next(x for x in results if x["impl"] == "reference" and
                           (x["layers"], x["mode"], x["dtype"]) == (r["layers"], r["mode"], r["dtype"]))
                print(f"  {r['layers']:2d}-layer {r['mode']:18} {r['dtype']}: {ref['seconds'] / r['seconds']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_peak_gflops": peak, "batch": [B, T], "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
