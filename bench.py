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
    python bench.py --label RUN --input tweets.csv --rounds 3   # labelling a CSV end to end, beside
                                    # transformers and ONNX Runtime (fp32, dynamic int8) where installed

Each case runs in a fresh process, so that its peak memory (max RSS) is its own. FLOPs are
counted as 2 x (non-embedding parameters) x tokens for a forward pass plus attention's
4 x B x T^2 x H per layer, and three times that for a training step; "of peak" divides the
achieved FLOP/s by the best matmul throughput of that dtype measured here, at the model's own
linear-layer shapes (the bf16 peak is what this CPU's bf16 units, e.g. AMX, reach). The
machine may be shared: with --rounds R every case runs R times, the implementations in turn,
and the table gives the median of the rounds and the speed-up as the median of the per-round
ratios.

--label times what a user waits for to label a file: `eval.py predict --input` in a fresh
process (start-up, reading, tokenising, the model, writing included), in the precision `auto`
picks, in fp32 and with its int8 export; beside it, on the same saved run, the loop a user of
the reference stack writes (tokenise 64 texts, forward, softmax; the loop only, no start-up or
file I/O): transformers fp32 eager, and ONNX Runtime fp32 and dynamic int8 on the same model
exported to ONNX. Their batches in file order, as such a loop is written, and sorted by length,
as nanobert batches (--sorted-reference). Every figure is printed with the machine it was
measured on (CPU, AMX / AVX-512 BF16 / VNNI, threads, torch).

The reference stack is not a dependency of nanobert: install transformers and peft (and
onnxruntime, onnx for --label) by hand to compare; they are imported only for --reference and
--label.
"""

import argparse
import csv
import importlib
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lora
import machine
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
    print(machine.describe())
    print(events.table(sort_by="self_cpu_time_total", row_limit=20))
    total = sum(e.self_cpu_time_total for e in events) / 1e6 / repeats  # the profiler's own seconds per step
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / 1e6 / repeats
    work = flops(layers, mode) / 1e9
    print(f"{layers}-layer {mode} {dtype}: {seconds:.3f} s a step under the profiler ({total:.3f} s of op time); "
          f"matrix products {matmul:.3f} s = {matmul / total:.0%} of the op time")
    print(f"  the step: {work / seconds:.0f} GFLOP/s = {work / seconds / peak:.0%} of the {peak:.0f} GFLOP/s {dtype} peak; "
          f"the products alone: {work / matmul:.0f} GFLOP/s = {work / matmul / peak:.0%} of it (the step's ceiling "
          "if everything else took no time)")


# -----------------------------------------------------------------------------
# Labelling a file end to end (--label)

LABEL_BATCH, LABEL_MAX_LENGTH = 64, 64  # the reference loops' batch and cut: what such a loop is written with


def timed_child(argv, threads):
    """(wall seconds, CPU seconds of the child) of a command run to its end."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before, t = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    wall, after = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed:\n{out.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out.stdout


def api_label(run_dir, texts, threads):
    """nanobert's loop, as the reference's is timed: the Classifier API labelling `texts` once loaded
    (tokenising, sorting by length, the model; no start-up, no file I/O): (wall s, CPU s)."""
    torch.set_num_threads(threads)
    classifier = importlib.import_module("classifier")
    clf = classifier.Classifier.from_run(run_dir)
    clf.predict_proba(texts[:8])  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    clf.predict_proba(texts)
    return time.perf_counter() - wall, time.process_time() - cpu


def reference_label(impl, run_dir, onnx_dir, texts, threads, sort):
    """The reference loop over `texts` (impl: transformers, ort-fp32, ort-int8): (wall s, CPU s)."""
    if impl == "nanobert-api":
        return api_label(run_dir, texts, threads)
    torch.set_num_threads(threads)
    transformers = importlib.import_module("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(run_dir)
    if impl == "transformers":
        net = transformers.AutoModelForSequenceClassification.from_pretrained(run_dir).eval()

        def forward(ids, mask):
            with torch.inference_mode():
                return torch.softmax(net(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits, -1)
    else:
        ort = importlib.import_module("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(Path(onnx_dir) / ("model-int8.onnx" if impl == "ort-int8" else "model.onnx")),
                                       options, providers=["CPUExecutionProvider"])

        def forward(ids, mask):
            return torch.softmax(torch.from_numpy(session.run(None, {"input_ids": ids, "attention_mask": mask})[0]), -1)
    order = list(range(len(texts)))
    forward(*[torch.ones(2, 8, dtype=torch.long).numpy()] * 2)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    if sort:
        lengths = [len(x) for x in tok(texts, truncation=True, max_length=LABEL_MAX_LENGTH)["input_ids"]]
        order.sort(key=lambda i: -lengths[i])
    probs = torch.empty(len(texts), 2)
    for start in range(0, len(order), LABEL_BATCH):
        rows = order[start:start + LABEL_BATCH]
        enc = tok([texts[i] for i in rows], padding=True, truncation=True, max_length=LABEL_MAX_LENGTH, return_tensors="np")
        probs[rows] = forward(enc["input_ids"].astype("int64"), enc["attention_mask"].astype("int64"))[:, :2].float()
    return time.perf_counter() - wall, time.process_time() - cpu


def export_onnx(run_dir, out_dir):
    """The run exported to ONNX through transformers (model.onnx) and dynamically quantised to int8 by
    ONNX Runtime (model-int8.onnx): what a user who wants CPU throughput does."""
    transformers = importlib.import_module("transformers")
    quantization = importlib.import_module("onnxruntime.quantization")
    net = transformers.AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}}
    torch.onnx.export(net, (ids, torch.ones_like(ids)), str(Path(out_dir) / "model.onnx"), input_names=["input_ids", "attention_mask"],
                      output_names=["logits"], dynamic_axes=axes, opset_version=17, dynamo=False)
    quantization.quantize_dynamic(str(Path(out_dir) / "model.onnx"), str(Path(out_dir) / "model-int8.onnx"),
                                  weight_type=quantization.QuantType.QInt8)


def label_bench(args):
    """nanobert's `predict --input` (auto, fp32, int8 export) and the reference loops, in turn, `rounds` times."""
    here = Path(__file__).resolve().parent
    texts = [row[args.text_column] for row in csv.DictReader(open(args.input, newline="", encoding="utf-8"))]
    threads = args.threads or torch.get_num_threads()
    work = Path(tempfile.mkdtemp(prefix="nanobert-bench-"))
    eval_py = [sys.executable, str(here / "eval.py")]
    timed_child(eval_py + ["export", args.label, "--out", str(work / "int8"), "--no-measure"], threads)
    nanobert = {f"nanobert {name}": eval_py + ["predict", "--run", run, "--input", args.input, "--text-column", args.text_column,
                                               "--output", str(work / "out.csv"), "--no-progress"] + flags
                for name, run, flags in (("auto", args.label, []), ("fp32", args.label, ["--precision", "fp32"]),
                                         ("int8 export", str(work / "int8"), []))}
    impls = ["nanobert-api"]
    if importlib.util.find_spec("transformers"):
        impls.append("transformers")
        if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnx"):
            export_onnx(args.label, work)
            impls += ["ort-fp32", "ort-int8"]
    reference = {f"{impl} ({order})": [sys.executable, __file__, "--label-case", impl, "--label", args.label, "--input", args.input,
                                       "--text-column", args.text_column, "--onnx-dir", str(work), "--threads", str(threads)]
                 + ["--sorted-reference"] * (order == "sorted")
                 for impl in impls for order in (["sorted"] if impl == "nanobert-api" else
                                                 ["file order"] + ["sorted"] * args.sorted_reference)}
    print(f"labelling {len(texts)} texts of {args.input} with {args.label}; {machine.describe({**machine.info(), 'threads': threads})}")
    # One untimed run of each first: it measures the machine once (the precision probe, the batch size, the
    # int8 engine: machine.py), as a user's first run does; the rounds see what every later run sees.
    for argv in nanobert.values():
        timed_child(argv, threads)
    rounds = {name: [] for name in [*nanobert, *reference]}
    for _ in range(args.rounds):
        for name, argv in nanobert.items():
            wall, cpu, _ = timed_child(argv, threads)
            rounds[name].append({"seconds": wall, "cpu_seconds": cpu})
        for name, argv in reference.items():
            rounds[name].append(json.loads(timed_child(argv, threads)[2].strip().splitlines()[-1]))
    results = {}
    for name, runs in rounds.items():
        per_s = statistics.median(len(texts) / r["seconds"] for r in runs)
        ratio = statistics.median(r["seconds"] / a["seconds"] for r, a in zip(runs, rounds["nanobert auto"], strict=True))
        results[name] = {"sentences_per_s": per_s, "sentences_per_cpu_s": statistics.median(len(texts) / r["cpu_seconds"] for r in runs),
                         "auto_speedup": ratio, "rounds_seconds": [r["seconds"] for r in runs]}
        print(f"{name:32} {per_s:7.0f} sentences/s  {results[name]['sentences_per_cpu_s']:7.0f} per CPU-second  "
              f"nanobert auto: {ratio:.2f}x", flush=True)
    print(f"(medians of {args.rounds} rounds; ratios: the median of each round's ratio, the cases run in turn. nanobert auto, "
          "fp32, int8 export: `eval.py predict --input` in a fresh process, start-up and file I/O included; nanobert-api "
          "(auto) and the others: the loop only)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": {**machine.info(), "threads": threads}, "texts": len(texts),
                                               "input": args.input, "run": args.label, "rounds": args.rounds,
                                               "results": results}, indent=2) + "\n")


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
    parser.add_argument("--label", metavar="RUN", help="label --input end to end with this run folder (a full model: "
                        "a teacher or student, or a LoRA run's merged/), beside the reference stack where installed")
    parser.add_argument("--input", help="--label: the .csv file to label")
    parser.add_argument("--text-column", default="text", help="--label: the column holding the texts (default text)")
    parser.add_argument("--threads", type=int, help="--label: CPU threads for every case (default: torch's choice)")
    parser.add_argument("--sorted-reference", action="store_true", help="--label: also time the reference loops with "
                        "their batches sorted by length, as nanobert's")
    parser.add_argument("--label-case", help=argparse.SUPPRESS)  # internal: one reference loop in this process
    parser.add_argument("--onnx-dir", help=argparse.SUPPRESS)  # internal, with --label-case
    args = parser.parse_args()
    if args.label_case:
        texts = [row[args.text_column] for row in csv.DictReader(open(args.input, newline="", encoding="utf-8"))]
        wall, cpu = reference_label(args.label_case, args.label, args.onnx_dir, texts, args.threads, args.sorted_reference)
        print(json.dumps({"seconds": wall, "cpu_seconds": cpu}))
        return
    if args.label:
        if not args.input:
            parser.error("--label needs --input FILE.csv, the texts to label")
        return label_bench(args)
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
          + f"; {machine.describe()}" + (", torch.compile" if args.compile else "")
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
            json.dump({"machine": machine.info(), "matmul_peak_gflops": peaks["fp32"], "bf16_matmul_peak_gflops": peaks["bf16"], "batch": [B, T],
                       "threads": torch.get_num_threads(), "rounds": args.rounds, "malloc": MALLOC[args.malloc],
                       "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
