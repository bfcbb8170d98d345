"""Shared test data: a toy comment dataset that the tiny model learns in a few steps, and the
training runs that the tests of train.py and the modules around it share."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# The test models are tiny: one thread each is as fast as two, and keeps the suite quick when
# the machine is busy. OMP_NUM_THREADS reaches the train.py processes the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

NEUTRAL = ("you are the people day it was on for with his they at be this from have or by one had not but what "
           "all were when we there can an your which their said if do will each about how up out them").split()


def write_toy_csv(path, names=(0, 1), n=160):
    """n short texts of common words; the label is given away by one word (bad/terrible vs good/great/love)."""
    rng = random.Random(0)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for i in range(n):
            y = i % 2
            words = rng.sample(NEUTRAL, 6) + [rng.choice(["bad", "terrible"] if y else ["good", "great", "love"])]
            rng.shuffle(words)
            w.writerow([" ".join(words) + f" {i}", names[y]])
    return path


@pytest.fixture(scope="session")
def toy(tmp_path_factory):
    return str(write_toy_csv(tmp_path_factory.mktemp("toy") / "toy.csv"))


def write_toy_two_label_csv(path, n=240):
    """Texts for the two questions (toxic, hate), each given away by a word: "idiot" is toxic only,
    "vermin" toxic and hate, else neither. One row in three leaves toxic unannotated (an empty cell),
    as hate_speech18 does for its texts that are not hate."""
    rng = random.Random(1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "toxic", "hate"])
        for i in range(n):
            kind = i % 3
            word = ["good", "idiot", "vermin"][kind]
            words = rng.sample(NEUTRAL, 6) + [word]
            rng.shuffle(words)
            toxic, hate = [(0, 0), (1, 0), (1, 1)][kind]
            w.writerow([" ".join(words) + f" {i}", "" if i % 3 == 0 and i % 2 else toxic, hate])
    return path


@pytest.fixture(scope="session")
def toy2(tmp_path_factory):
    return str(write_toy_two_label_csv(tmp_path_factory.mktemp("toy2") / "toy2.csv"))


# -----------------------------------------------------------------------------
# Training runs: train.py in this process (run) or as a real one (cli), and a teacher trained once


ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-bert")


def run(*argv):
    import train

    train.main([str(a) for a in argv])


def common(toy, out, *extra):
    return ["--data", toy, "--out", out, "--batch-size", 8, "--no-progress", "--log-every", 1, *extra]


def epochs(run_dir):
    return [r for r in map(json.loads, open(Path(run_dir) / "metrics.jsonl")) if "val_macro_f1" in r]


def cli(*argv, env=None):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, argv)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="session")
def teacher_run(toy, tmp_path_factory):
    """A 3-layer teacher that has learnt the toy data; students and LoRA runs of it go beside it."""
    out = tmp_path_factory.mktemp("runs") / "teacher"
    run("teacher", "--model", TINY, *common(toy, out, "--epochs", 4, "--lr", 3e-3))
    return out
