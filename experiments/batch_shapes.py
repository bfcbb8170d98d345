"""
Why inference batches come in few shapes: the resident memory of a model fed batches of many
distinct shapes (B, T), against the same model fed the few shapes of batching's few_shapes.

    python experiments/batch_shapes.py [--model NAME_OR_FOLDER] [--batches 2000] [--precision auto]

Three feeds of random token ids, each in a fresh process (a process keeps what it has made):
  many     B and T drawn at random (T 4..64, B up to 128 and 2,048 token positions): the shapes that
           sorted batches of a long file meet over time, without few_shapes
  few      the same draws, T rounded up to a multiple of 16 and B down to a power of two, as
           few_shapes does (batching.BucketBatchSampler)
  fixed    8 shapes, over and over
Printed: the distinct shapes met so far and the resident memory, every 250 batches, and the peak.
One thread: the figure is memory, not speed. oneDNN, which computes the products on the CPU (fp32
and bf16 alike), makes kernels for each shape it meets and keeps up to 1,024 of them (its primitive
cache; ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 keeps none, and then many shapes cost no memory, only time).
"""

import argparse
import random
import resource
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FIXED = [(128, 16), (64, 32), (32, 48), (32, 64), (8, 16), (4, 64), (16, 32), (2, 48)]


def resident_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def shape(feed: str, i: int, rng: random.Random, step=16, max_tokens=2048, batch_size=128):
    if feed == "fixed":
        return FIXED[i % len(FIXED)]
    t = rng.randint(4, 64)
    b = rng.randint(1, max(1, min(batch_size, max_tokens // t)))
    if feed == "few":
        t = -(-t // step) * step
        b = 1 << (min(b, max(1, max_tokens // t)).bit_length() - 1)
    return b, t


def feed_model(feed: str, model: str, batches: int, precision: str):
    import torch

    import precision as P
    import pretrained

    torch.set_num_threads(1)
    net = pretrained.from_pretrained(model, verbose=False).eval()
    P.prepare(net, P.choose(precision, torch.device("cpu"), fast=True, config=net.config), inference=True, keep_masters=False)
    rng, seen = random.Random(0), set()
    with torch.no_grad():
        for i in range(batches):
            b, t = shape(feed, i, rng)
            seen.add((b, t))
            ids = torch.randint(1000, net.config.vocab_size, (b, t))
            net(ids, torch.ones_like(ids), torch.zeros_like(ids))
            if i % 250 == 0 or i == batches - 1:
                print(f"  {feed:6s} batch {i:5d}: {len(seen):5d} shapes, {resident_mib():6.0f} MiB", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{feed}: {len(seen)} distinct shapes in {batches} batches, peak {peak:.0f} MiB")


def main():
    import pretrained

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=pretrained.DEFAULT_MODEL)
    ap.add_argument("--batches", type=int, default=2000)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--feed", choices=["many", "few", "fixed"], help="one feed in this process (the others: one each)")
    a = ap.parse_args()
    if a.feed:
        return feed_model(a.feed, a.model, a.batches, a.precision)
    for feed in ("many", "few", "fixed"):
        subprocess.run([sys.executable, __file__, "--feed", feed, "--model", a.model, "--batches", str(a.batches),
                        "--precision", a.precision], check=True)


if __name__ == "__main__":
    main()
