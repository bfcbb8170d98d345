"""Shared test data: a toy comment dataset that the tiny model learns in a few steps; the training
runs that the tests of train.py, the report and the modules around them share; and the fixture
files, fixtures and helpers that the tests of the data modules (wordpiece, readers, corpus, splits,
batching) share."""

import atexit
import csv
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

# The test models are tiny: one thread each is as fast as two, and keeps the suite quick when
# the machine is busy. OMP_NUM_THREADS reaches the train.py processes the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# The cache folder is the one place outside its folders where nanobert writes (downloads, the
# precision probe's answer): the tests, and the train.py processes they start, get their own.
os.environ["NANOBERT_CACHE"] = tempfile.mkdtemp(prefix="nanobert-test-cache-")
atexit.register(shutil.rmtree, os.environ["NANOBERT_CACHE"], ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "tests" / "fixtures" / "tiny-bert")


# The tiny BERT of tests/fixtures/tiny-bert and the outputs the reference library gave for it
# (make_tiny_bert.py beside it): the parity tests of model.py and pretrained.py.


@pytest.fixture(scope="module")
def ref():
    from safetensors.torch import load_file

    return load_file(Path(TINY) / "reference_outputs.safetensors")


def batch(ref):
    return ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]


def tiny(**kw):
    import pretrained  # imported here: tests/test_bad_inputs.py --write imports this file outside pytest

    return pretrained.from_pretrained(TINY, verbose=False, **kw).eval()

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


# ----------------------------------------------------------------------------------------------
# The data modules' fixtures: tests/fixtures/tokenizer (made by make_tokenizer_fixture.py with
# transformers) and tests/fixtures/data (made by make_data_fixtures.py, and make_group_fixtures.py
# for the grouped splits and the two-label dataset). Checks against the real datasets run only
# where the offline mirror ../shared exists beside the repository.

FIXTURES = ROOT / "tests" / "fixtures"
DATA = FIXTURES / "data"
TOKENIZER = FIXTURES / "tokenizer"
SHARED = ROOT.parent / "shared"

DAVIDSON_TINY = DATA / "davidson_tiny.csv"
HATE18_TINY = DATA / "hate18_tiny.zip"
DAVIDSON_NEAR_DUPS = DATA / "davidson_near_dups.csv"  # these three: made by make_group_fixtures.py
HATE18_AUTHORS = DATA / "hate18_authors.zip"
SPLIT_V1 = DATA / "split_v1.json"

needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="no ../shared/data mirror here")


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    # Never read a real mirror or write to ~/.cache from a test unless the test says so.
    monkeypatch.delenv("NANOBERT_DATA", raising=False)
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path / "cache"))


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


@pytest.fixture
def cased():
    import wordpiece  # imported here: tests/test_bad_inputs.py --write imports this file outside pytest

    return wordpiece.load_tokenizer(TOKENIZER / "cased")


@pytest.fixture
def tiny_mirror(tmp_path, monkeypatch):
    """A mirror folder holding the two fixtures as davidson and hate_speech18, accepted by their checksums."""
    import corpus

    mirror = tmp_path / "mirror"
    (mirror / "davidson").mkdir(parents=True)
    (mirror / "hate_speech18").mkdir()
    shutil.copy(DAVIDSON_NEAR_DUPS, mirror / corpus.FILES["davidson"])
    shutil.copy(HATE18_AUTHORS, mirror / corpus.FILES["hate_speech18"])
    monkeypatch.setitem(corpus.SHA256, "davidson", hashlib.sha256(DAVIDSON_NEAR_DUPS.read_bytes()).hexdigest())
    with zipfile.ZipFile(HATE18_AUTHORS) as archive:
        meta = archive.read("hate-speech-dataset-master/annotations_metadata.csv")
    monkeypatch.setitem(corpus.SHA256, "hate_speech18", hashlib.sha256(meta).hexdigest())
    return mirror


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """A teacher, an odd student of seeds 0 and 1, and LoRA, trained by train.py on 160 texts whose label
    one word gives away: {name: run folder}, shared by the tests of the report, the int8 measurement
    and the model card."""
    root = tmp_path_factory.mktemp("eval")
    toy = write_toy_csv(root / "toy.csv", names=("ok", "toxic"))
    common = ["--data", toy, "--label-map", '{"ok": 0, "toxic": 1}', "--batch-size", 8, "--no-progress", "--threads", 1]
    dirs = {name: root / "runs" / name for name in ("teacher", "odd", "odd-s1", "lora")}

    def start(*argv):
        return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, argv)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def wait(*procs):
        for p in procs:
            out = p.communicate(timeout=300)[0]
            assert p.returncode == 0, out

    wait(start("teacher", "--model", TINY, "--out", dirs["teacher"], "--epochs", 4, "--lr", 3e-3, *common))
    student = ["distill", "--teacher", dirs["teacher"], "--layers", "odd", "--epochs", 2, "--lr", 3e-3, *common]
    wait(start(*student, "--out", dirs["odd"]), start(*student, "--out", dirs["odd-s1"], "--seed", 1),
         start("lora", "--model", TINY, "--out", dirs["lora"], "--epochs", 2, "--lr", 1e-2, *common))
    return dirs


# -----------------------------------------------------------------------------
# Training runs: train.py in this process (run) or as a real one (cli), and a teacher trained once


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


@pytest.fixture(scope="session")
def two_label_run(tmp_path_factory):
    """A two-question (toxic, hate) teacher that has learnt the toy data: "idiot" is toxic, "vermin"
    toxic and hate (8 epochs: the tiny model needs them for "idiot")."""
    root = tmp_path_factory.mktemp("two")
    toy2 = write_toy_two_label_csv(root / "toy2.csv")
    run("teacher", "--model", TINY, *common(str(toy2), root / "two", "--label-column", "toxic,hate", "--epochs", 8,
                                            "--lr", 3e-3, "--threads", 1))
    return root / "two"
