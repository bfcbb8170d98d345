"""Every bad input and fault a user can run into, one table of cases run through the real entry
points (train.main, eval.main, the Python API, the web page, a real Ctrl-C to a real process; a full
disk as the system reports it): each gets a one-line error naming the flag, file or field and what was
expected, or, where going on is right, a printed note. No traceback reaches the user, and a run
(finished or interrupted) or an input file that a failed command targets is left byte for byte.

docs/bad-inputs.md is rendered from this table and the messages the cases get; the last test
checks that it is up to date. Regenerate it with

    .venv/bin/python tests/test_bad_inputs.py --write

A case marked `xfail` is one whose message is not yet right: the table holds the message it should
give (the expected fragments), and the doc shows that as "not yet".
"""

import builtins
import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import write_toy_csv

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny-bert"
DOC = ROOT / "docs" / "bad-inputs.md"
WRITE_ENV = "NANOBERT_BAD_INPUTS_DOC"  # set by --write: the rendered doc goes to this file instead of being compared
MESSAGES: dict[str, str] = {}  # case id -> the message it got (normalised), filled as the cases pass


def main_of(tool):
    """train.main or eval.main, imported here: run as a script (--write), this file starts before pytest
    puts the repository on the import path."""
    import importlib

    return importlib.import_module(tool).main


# -----------------------------------------------------------------------------
# The workspace of one case: its own tmp folder, and copies of the runs trained once per module


@dataclass
class Ctx:
    tmp: Path  # this case's folder
    shared: Path  # the module's folder: toy.csv and runs/{split.json,teacher,odd,lora,teacher-int8,interrupted}
    monkeypatch: pytest.MonkeyPatch

    @property
    def toy(self):
        return self.shared / "toy.csv"

    def run(self, name):
        """A copy of one of the shared runs under tmp/runs/, free to damage."""
        dest = self.tmp / "runs" / name
        if not dest.exists():
            shutil.copytree(self.shared / "runs" / name, dest)
        return dest

    def write(self, name, content):
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    def edit_json(self, path, change):
        raw = json.loads(Path(path).read_text())
        change(raw)
        Path(path).write_text(json.dumps(raw))


def with_flags(base, extra):
    """base argv with extra's flags: a flag base has already takes extra's value (so the command reads as a
    user would type it), the others are added at the end."""
    argv, extra, i = list(base), list(extra), 0
    while i < len(extra):
        flag = extra[i]
        takes_value = i + 1 < len(extra) and not str(extra[i + 1]).startswith("--")
        if str(flag).startswith("--") and flag in argv and takes_value:
            j = argv.index(flag)
            if j + 1 < len(argv) and not str(argv[j + 1]).startswith("--"):
                argv[j + 1] = extra[i + 1]
                i += 2
                continue
        argv.append(flag)
        i += 1
    return argv


def teacher_argv(c, *extra, out=None):
    return with_flags(["teacher", "--model", TINY, "--data", c.toy, "--out", out or c.tmp / "run", "--batch-size", 8,
                       "--epochs", 1, "--no-progress"], extra)


def distill_argv(c, *extra, out=None):
    teacher = None if "--teacher" in extra else c.run("teacher")  # a case that names its own teacher copies none
    return with_flags(["distill", "--teacher", teacher, "--out", out or c.tmp / "run", "--batch-size", 8, "--epochs", 1,
                       "--no-progress"], extra)


def pretraining_run(c, finished=True):
    """A masked-LM pretraining run of the tiny model (train.py pretrain, one epoch) in the case's folder, on the
    shared split; finished=False: as Ctrl-C leaves it after epoch 1 of 3 (its model saved, no summary.json)."""
    run = c.tmp / "runs" / "mlm"
    if not run.exists():
        train_quietly(c, "pretrain", "--model", TINY, "--data", c.toy, "--out", run, "--batch-size", 8, "--epochs", 1,
                      "--no-progress", "--split", c.shared / "runs" / "split.json")
    if not finished:
        (run / "summary.json").unlink(missing_ok=True)
        c.edit_json(run / "run.json", lambda raw: raw["settings"].update(epochs=3))
    return run


def csv_rows(c, name, header, rows):
    return c.write(name, "\n".join([header, *rows]) + "\n")


def toy_with(c, name, **kw):
    return write_toy_csv(c.tmp / name, **kw)


def model_copy(c, change=None, drop=()):
    """A copy of the tiny model folder, its config.json changed (a function or replacement text), files dropped."""
    folder = c.tmp / "model"
    if folder.exists():  # made by the case's setup already
        return folder
    shutil.copytree(TINY, folder)
    if callable(change):
        c.edit_json(folder / "config.json", change)
    elif change is not None:
        (folder / "config.json").write_text(change)
    for name in drop:
        (folder / name).unlink()
    return folder


def truncate(path, keep=1000):
    path.write_bytes(path.read_bytes()[:keep])


def read_only_parent(c):
    parent = c.tmp / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    if os.access(parent, os.W_OK):
        parent.chmod(0o755)
        pytest.skip("this user can write into a read-only folder (root): nothing to refuse here")


def different_split(c):
    c.edit_json(c.run("odd") / "run.json", lambda raw: raw["results"].update(split_sha256="f" * 64))


def no_gpu(c):
    c.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# The interrupted run of the shared runs: a teacher of 3 epochs killed (kill -9) in its second epoch,
# after its first checkpoint (step 16). This is the command it was started with, into a copy of it.
def interrupted_argv(c, *extra, command="teacher"):
    return with_flags([command, "--model", TINY, "--data", c.toy, "--out", c.run("interrupted"), "--batch-size", 8,
                       "--epochs", 3, "--lr", 3e-3, "--no-progress", "--split", c.shared / "runs" / "split.json"], extra)


def train_quietly(c, *argv):
    """A training run a case starts from, recorded as a user's `train.py ...` (its run.json's command)."""
    argv = [str(a) for a in argv]
    with c.monkeypatch.context() as mp, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        mp.setattr(sys, "argv", ["train.py", *argv])
        main_of("train")(argv)


def lora_on_retrained_base(c):
    """LoRA on a trained run (--base), then that base trained again (--overwrite, another seed)."""
    train_quietly(c, "lora", "--base", c.run("teacher"), "--out", c.tmp / "runs" / "lora-on-teacher", "--epochs", 1,
                  "--lr", 1e-2, "--no-progress")
    train_quietly(c, *teacher_argv(c, "--overwrite", "--seed", 1, "--split", c.shared / "runs" / "split.json",
                                   out=c.run("teacher")))


def lora_on_changed_model(c):
    """LoRA on a model folder (--model), then that folder's weights changed (an update of the model)."""
    from safetensors.torch import load_file, save_file

    folder = model_copy(c)
    train_quietly(c, "lora", "--model", folder, "--data", c.toy, "--split", c.shared / "runs" / "split.json",
                  "--out", c.tmp / "runs" / "lora-own", "--epochs", 1, "--lr", 1e-2, "--batch-size", 8, "--no-progress")
    weights = load_file(folder / "model.safetensors")
    name = next(k for k in weights if k.endswith("query.weight"))
    weights[name] = weights[name] + 0.01
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def killed_before_first_checkpoint(c):
    """A run into tmp/run killed (kill -9) at its second step: its run.json and its lock's record stay."""
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, teacher_argv(c))], cwd=ROOT, capture_output=True,
                       text=True, env={**os.environ, "NANOBERT_CRASH_AT_STEP": "2"}, timeout=300)
    assert p.returncode == -9, p.stderr


def disk_full(c):
    """Every safetensors file written from now on fails as a full disk makes it fail."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **kw):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    c.monkeypatch.setattr(safetensors.torch, "serialize_file", full)
def unfinished(c, name="teacher"):
    """A copy of a run as Ctrl-C leaves it after epoch 1 of 3: its best model so far saved, no summary.json."""
    run = c.run(name)
    (run / "summary.json").unlink(missing_ok=True)  # idempotent: the doc asks a case for its command again
    c.edit_json(run / "run.json", lambda raw: raw["settings"].update(epochs=3))
    return run


def own_export(c):
    """The copy of teacher-int8 as the export of the copy of teacher (the shared one names the shared teacher)."""
    c.edit_json(c.run("teacher-int8") / "run.json", lambda raw: raw["results"].update(source_run=str(c.run("teacher"))))


def no_space():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name


def full_disk(c):
    """Every file written through files.atomic_write meets a full disk."""
    import files

    real = files.atomic_write

    def full(path, write):
        def fail(tmp):
            raise no_space()

        return real(path, fail)

    c.monkeypatch.setattr(files, "atomic_write", full)


def full_disk_for_safetensors(c):
    """Saving safetensors meets a full disk: safetensors raises its own error, with the system's words in it."""
    from safetensors import SafetensorError

    import quantize

    def save_file(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    own_export(c)
    c.monkeypatch.setattr(quantize, "save_file", save_file)


class FullFile:
    """A file opened for writing whose disk fills up at the `full`-th write, halfway through it."""

    def __init__(self, f, full):
        self.f, self.full, self.writes = f, full, 0

    def write(self, data):
        self.writes += 1
        if self.writes == self.full:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise no_space()
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def full_disk_for_labelling(c):
    """predict --input: the disk fills up while the second window of rows is written (header, window 1, window 2)."""
    import labelling

    def opener(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        return FullFile(f, 3) if "w" in mode else f

    c.monkeypatch.setattr(labelling, "open", opener, raising=False)
    many_rows(c)


def many_rows(c, n=3000):
    """in.csv: n short texts, a few windows of predict --input."""
    return csv_rows(c, "in.csv", "id,text", [f"{i},you are {'good' if i % 2 else 'bad'} {i}" for i in range(n)])


def interrupt(module, name):
    """Ctrl-C in the middle of module.name (a KeyboardInterrupt where the work is: the place Ctrl-C lands)."""
    def setup(c):
        import importlib

        target = importlib.import_module(module)
        real = getattr(target, name)

        def stopped(*args, **kwargs):
            real(*args, **kwargs)
            raise KeyboardInterrupt

        c.monkeypatch.setattr(target, name, stopped)
    return setup


def partial_rows_are_whole(c):
    """What Ctrl-C left of predict --input: the first rows of the input, whole and in order, under the partial name."""
    assert not (c.tmp / "out.csv").exists()
    rows = (c.tmp / "out.partial.csv").read_text().splitlines()
    assert rows[0] == "id,text,label,score,p_0,p_1" and len(rows) > 1 and (len(rows) - 1) % 1024 == 0, len(rows)
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(len(rows) - 1)]
    assert all(len(r.split(",")) == 6 for r in rows[1:])


def nothing_left(*names):
    def check(c):
        for name in names:
            assert not (c.tmp / name).exists(), f"{name} left behind"
    return check


# -----------------------------------------------------------------------------
# The cases


@dataclass(frozen=True)
class Case:
    id: str
    mistake: str  # what the user did, as they would say it
    tool: str  # "train", "eval" (in-process main), "train-ctrl-c" / "eval-ctrl-c" (a real SIGINT to a real
    # process), "api" (Python: an expression of Classifier and run), "app"
    argv: Callable  # Ctx -> argv list (for "app": the runs folder; for "api": [run folder, expression])
    expect: tuple  # fragments the (normalised) message must contain
    setup: Callable | None = None  # Ctx -> None: prepares files in tmp
    keep: Callable | None = None  # Ctx -> a finished run the command must leave byte for byte
    note: bool = False  # going on is right: exit 0 and a printed note that holds `expect`
    stdin: str | None = None
    xfail: str | None = None  # what happens now, while the message is not yet right
    busy: Callable | None = None  # Ctx -> argv of a train.py process that trains while the case runs
    env: dict | None = None  # train-ctrl-c: the process's environment; NANOBERT_CRASH_SIGNAL=INT: it gets its Ctrl-C itself
    doc_expected_only: bool = False  # depends on the machine (root): the doc shows the expected fragments
    ready: Callable | None = None  # "eval-ctrl-c": Ctx -> bool, true once the work has started (then SIGINT)
    after: Callable | None = None  # Ctx -> None: asserts what the failed command left (or did not leave)
    then: str | None = None  # the doc: what happens while the command runs ("Ctrl-C while it labels")
    kept_as: str | None = None  # the doc: what `keep` is, where not "the file" or "the finished run"


def case(id, mistake, tool, argv, expect, **kw):
    return Case(id, mistake, tool, argv, (expect,) if isinstance(expect, str) else tuple(expect), **kw)


CASES = [
    # --- train.py: settings that cannot work, refused before anything is loaded or written
    case("max-train-0", "`--max-train 0`", "train", lambda c: teacher_argv(c, "--max-train", 0),
         "--max-train 0: expected a number above 0"),
    case("max-train-negative", "`--max-train -5`", "train", lambda c: teacher_argv(c, "--max-train", -5),
         "--max-train -5: expected a number above 0"),
    case("accum-0", "`--accum 0`", "train", lambda c: teacher_argv(c, "--accum", 0), "--accum 0: expected a number above 0"),
    case("lr-0", "`--lr 0`", "train", lambda c: teacher_argv(c, "--lr", 0), "--lr 0.0: expected a number above 0"),
    case("threads-negative", "`--threads -1`", "train", lambda c: teacher_argv(c, "--threads", -1),
         "--threads -1: expected a number above 0"),
    case("epochs-0", "`--epochs 0`", "train", lambda c: teacher_argv(c, "--epochs", 0),
         "--epochs 0: expected a number above 0"),
    case("batch-size-0", "`--batch-size 0`", "train", lambda c: teacher_argv(c, "--batch-size", 0),
         "--batch-size 0: expected a number above 0"),
    case("warmup-2", "`--warmup 2` (a fraction of the steps, not a count)", "train", lambda c: teacher_argv(c, "--warmup", 2),
         "--warmup 2.0: expected a number in [0, 1]"),
    case("epochs-not-a-number", "`--epochs two`", "train", lambda c: teacher_argv(c, "--epochs", "two"),
         "argument --epochs: invalid int value: 'two'"),
    case("max-length-1", "`--max-length 1`", "train", lambda c: teacher_argv(c, "--max-length", 1),
         "--max-length 1: expected at least 2"),
    case("max-length-too-long", "`--max-length 10000`, beyond the model's positions", "train",
         lambda c: teacher_argv(c, "--max-length", 10000),
         "--max-length 10000: the model has 128 positions; expected at most 128"),
    case("resume-and-overwrite", "`--resume` and `--overwrite` together", "train",
         lambda c: teacher_argv(c, "--resume", "--overwrite"), "--resume and --overwrite: expected one of them"),
    case("device-cuda-no-gpu", "`--device cuda` on a machine without a GPU", "train", lambda c: teacher_argv(c, "--device", "cuda"),
         "--device: device 'cuda': torch sees no CUDA GPU; expected cpu or auto", setup=no_gpu),
    case("device-unknown", "`--device gpu0` (not a device name)", "train", lambda c: teacher_argv(c, "--device", "gpu0"),
         "--device: device 'gpu0': expected cpu, cuda, cuda:N or auto"),
    case("precision-unknown", "`--precision fp16` (not one nanobert computes in)", "train",
         lambda c: teacher_argv(c, "--precision", "fp16"), "--precision 'fp16': expected one of auto, fp32, bf16"),
    case("mask-rate-0", "`pretrain --mask-rate 0`", "train",
         lambda c: ["pretrain", "--model", TINY, "--data", c.toy, "--out", c.tmp / "run", "--mask-rate", 0, "--no-progress"],
         "--mask-rate 0.0: expected a number above 0"),
    case("target-recall-0", "`--target-recall 0` (a recall that every threshold reaches)", "train",
         lambda c: teacher_argv(c, "--target-recall", 0), "--target-recall 0.0: expected a number in (0, 1]"),
    case("target-precision-and-recall", "`--target-precision 0.9` and `--target-recall 0.8` together", "train",
         lambda c: teacher_argv(c, "--target-precision", 0.9, "--target-recall", 0.8),
         "--target-precision 0.9 and --target-recall 0.8: expected one of them (a threshold is chosen for one target)"),
    # --- train.py: the data
    case("label-map-not-json", "`--label-map` that is not JSON", "train", lambda c: teacher_argv(c, "--label-map", "{ok: 0}"),
         "--label-map '{ok: 0}': not valid JSON"),
    case("label-map-not-object", "`--label-map` that is JSON but not an object", "train",
         lambda c: teacher_argv(c, "--label-map", "[0, 1]"), "--label-map '[0, 1]': expected a JSON object of label -> id"),
    case("label-map-gap", "`--label-map` with ids that leave a gap (0 and 2)", "train",
         lambda c: teacher_argv(c, "--label-map", '{"0": 0, "1": 2}'), ("toy.csv", "label_map ids [0, 2], expected 0..K-1 without gaps")),
    case("label-map-missing-label", "`--label-map` that misses a label of the file", "train",
         lambda c: teacher_argv(c, "--label-map", '{"0": 0}'), ("toy.csv", "label(s) in column 'label' not usable", "expected one of ['0']")),
    case("labels-are-words", "a CSV whose labels are words, without `--label-map`", "train",
         lambda c: teacher_argv(c, "--data", toy_with(c, "words.csv", names=("ok", "toxic"))),
         ("words.csv", "not usable", "expected an integer 0..K-1")),
    case("one-class", "a CSV where every text has the same label", "train",
         lambda c: teacher_argv(c, "--data", toy_with(c, "one.csv", names=(0, 0))), ("--data <tmp>/one.csv", "expected at least two classes")),
    case("labels-1-2", "a CSV whose labels are 1 and 2 (no 0)", "train",
         lambda c: teacher_argv(c, "--data", toy_with(c, "one-two.csv", names=(1, 2))),
         ("--data <tmp>/one-two.csv", "'0': 0", "each with examples")),
    case("header-only", "a CSV with a header and no rows", "train",
         lambda c: teacher_argv(c, "--data", csv_rows(c, "empty.csv", "text,label", [])), ("<tmp>/empty.csv", "expected")),
    case("empty-file", "an empty CSV file", "train", lambda c: teacher_argv(c, "--data", c.write("blank.csv", "")),
         "<tmp>/blank.csv: empty file; expected a CSV header with columns ['text', 'label']"),
    case("too-few-rows", "a CSV of four rows: nothing left for validation", "train",
         lambda c: teacher_argv(c, "--data", csv_rows(c, "four.csv", "text,label", ["a b,0", "c d,1", "e f,0", "g h,1"])),
         ("--data <tmp>/four.csv", "expected some in each")),
    case("no-label-column", "a CSV without the label column", "train",
         lambda c: teacher_argv(c, "--data", csv_rows(c, "nolabel.csv", "text,class", ["you are good,0", "you are bad,1"])),
         "missing column(s) ['label']; expected ['text', 'label'], found ['text', 'class']"),
    case("wrong-text-column", "`--text-column` naming a column the CSV lacks", "train",
         lambda c: teacher_argv(c, "--text-column", "comment"), "missing column(s) ['comment']"),
    case("ragged-csv", "a CSV row with more fields than the header", "train",
         lambda c: teacher_argv(c, "--data", csv_rows(c, "ragged.csv", "text,label", ["a b,0", "c,d,1"])),
         "<tmp>/ragged.csv line 3: 3 fields, expected 2"),
    case("jsonl-bad-line", "a JSONL file with a line that is not JSON", "train",
         lambda c: teacher_argv(c, "--data", c.write("bad.jsonl", '{"text": "a", "label": 0}\n{"text": "b", label: 1}\n')),
         "<tmp>/bad.jsonl line 2: not valid JSON"),
    case("jsonl-not-object", "a JSONL line that is a list, not an object", "train",
         lambda c: teacher_argv(c, "--data", c.write("list.jsonl", '{"text": "a", "label": 0}\n["b", 1]\n')),
         "<tmp>/list.jsonl line 2: found list, expected a JSON object"),
    case("data-unknown-name", "`--data` naming no known dataset", "train", lambda c: teacher_argv(c, "--data", "davidsen"),
         "'davidsen': expected 'davidson', 'hate_speech18' or a path to a .csv or .jsonl file"),
    case("data-missing-file", "`--data` naming a CSV file that does not exist", "train",
         lambda c: teacher_argv(c, "--data", c.tmp / "missing.csv"), "<tmp>/missing.csv: file not found"),
    case("data-txt-file", "`--data` naming a .txt file", "train",
         lambda c: teacher_argv(c, "--data", c.write("comments.txt", "you are good\n")), "expected 'davidson', 'hate_speech18' or a path"),
    case("split-not-json", "`--split` naming a file that is not a split manifest", "train",
         lambda c: teacher_argv(c, "--split", c.write("split.json", "not json")), "<tmp>/split.json: not valid JSON"),
    # --- train.py: the model
    case("model-missing", "`--model` naming a folder that does not exist", "train",
         lambda c: teacher_argv(c, "--model", c.tmp / "nowhere"), "<tmp>/nowhere: no such model folder"),
    case("model-config-wrong-type", "a model folder whose config.json has `\"hidden_size\": \"big\"`", "train",
         lambda c: teacher_argv(c, "--model", model_copy(c, lambda raw: raw.update(hidden_size="big"))),
         "<tmp>/model/config.json: field 'hidden_size' is 'big'; expected a whole number"),
    case("model-config-not-json", "a model folder whose config.json is not JSON", "train",
         lambda c: teacher_argv(c, "--model", model_copy(c, "{\n  \"hidden_size\": 32,\n")), "<tmp>/model/config.json: not valid JSON"),
    case("model-no-weights", "a model folder without model.safetensors", "train",
         lambda c: teacher_argv(c, "--model", model_copy(c, drop=["model.safetensors"])),
         "<tmp>/model/model.safetensors: not found; expected model.safetensors in the folder"),
    case("model-truncated-weights", "a model folder whose model.safetensors was cut short (a broken download)", "train",
         lambda c: teacher_argv(c, "--model", model_copy(c)), "<tmp>/model/model.safetensors: not a readable safetensors file",
         setup=lambda c: truncate(model_copy(c) / "model.safetensors")),
    case("model-no-vocab", "a model folder without vocab.txt", "train",
         lambda c: teacher_argv(c, "--model", model_copy(c, drop=["vocab.txt"])), "<tmp>/model/vocab.txt: not found"),
    # --- train.py: the runs a run builds on
    case("teacher-missing", "`--teacher` naming a folder that does not exist", "train",
         lambda c: distill_argv(c, "--teacher", c.tmp / "nowhere"), "--teacher <tmp>/nowhere: <tmp>/nowhere: not a run folder"),
    case("teacher-is-lora", "`--teacher` naming a LoRA run", "train", lambda c: distill_argv(c, "--teacher", c.run("lora")),
         "<tmp>/runs/lora: a LoRA run; expected a run with a full model (teacher or student) as the teacher"),
    case("teacher-is-int8", "`--teacher` naming an int8 export", "train",
         lambda c: distill_argv(c, "--teacher", c.run("teacher-int8")), "an int8 export (eval.py export); expected a run with fp32 weights"),
    case("teacher-other-split", "`--teacher` trained on another split than `--split`", "train",
         lambda c: distill_argv(c, "--split", c.tmp / "other.json", "--split-seed", 7),
         "the teacher was trained on another split"),
    case("ensemble-missing", "`--ensemble` naming a folder that does not exist", "train",
         lambda c: distill_argv(c, "--ensemble", c.tmp / "nowhere"), "--ensemble <tmp>/nowhere: <tmp>/nowhere: not a run folder"),
    case("ensemble-is-the-teacher", "`--ensemble` naming `--teacher` itself", "train",
         lambda c: distill_argv(c, "--ensemble", c.run("teacher")),
         "that is --teacher itself; expected other teacher runs (its other seeds)"),
    case("ensemble-is-lora", "`--ensemble` naming a LoRA run", "train", lambda c: distill_argv(c, "--ensemble", c.run("lora")),
         "<tmp>/runs/lora: a LoRA run; expected a run with a full model (teacher or student) as the teacher"),
    case("select-label-one-class", "`--select-label hate` on data of one class per text", "train",
         lambda c: teacher_argv(c, "--select-label", "hate"),
         "--select-label hate: expected one of the labels of a multi-label task (this one has one class per text)"),
    case("base-is-lora", "`lora --base` naming a LoRA run", "train",
         lambda c: ["lora", "--base", c.run("lora"), "--out", c.tmp / "run", "--no-progress"],
         "a LoRA run; expected a run with a full model (teacher or student) as the base run"),
    case("base-and-model", "`lora --base RUN --model MODEL` together", "train",
         lambda c: ["lora", "--base", c.run("teacher"), "--model", TINY, "--out", c.tmp / "run", "--no-progress"],
         "--base and --model both name the model to adapt; expected one of them"),
    case("layers-13", "`--layers 13` for a 3-layer teacher", "train", lambda c: distill_argv(c, "--layers", "13"),
         "--layers '13': layer 13 out of range; the teacher has layers 1..3"),
    case("layers-1-9", "`--layers 1,9` for a 3-layer teacher", "train", lambda c: distill_argv(c, "--layers", "1,9"),
         "layer 9 out of range; the teacher has layers 1..3"),
    case("layers-auto-9", "`--layers auto:9` for a 3-layer teacher", "train", lambda c: distill_argv(c, "--layers", "auto:9"),
         "--layers 'auto:9': expected auto or auto:K with K in 1..3"),
    case("layers-word", "`--layers first` (not a layer choice)", "train", lambda c: distill_argv(c, "--layers", "first"),
         "--layers 'first': expected odd, even, bottom, top, auto[:K] or comma-separated layer numbers"),
    case("layers-unsorted", "`--layers 3,1` (out of order)", "train", lambda c: distill_argv(c, "--layers", "3,1"),
         "--layers '3,1': list the layers in increasing order"),
    case("importance-texts-0", "`--layers auto --importance-texts 0`", "train",
         lambda c: distill_argv(c, "--layers", "auto", "--importance-texts", 0),
         "--importance-texts 0: expected at least 1 validation text"),
    case("all-layers", "`train.py all --layers 1,2`", "train",
         lambda c: ["all", "--model", TINY, "--data", c.toy, "--runs", c.tmp / "runs", "--layers", "1,2", "--no-progress"],
         "--layers 1,2: `all` trains the odd and even students"),
    case("teacher-is-pretraining", "`--teacher` naming a pretraining run (`train.py pretrain`)", "train",
         lambda c: distill_argv(c, "--teacher", c.tmp / "runs" / "mlm"),
         "<tmp>/runs/mlm: a pretraining run (train.py pretrain): an encoder without a classifier; expected a trained classifier",
         setup=pretraining_run, keep=lambda c: c.tmp / "runs" / "mlm", kept_as="the pretraining run"),
    case("model-unfinished-pretraining", "`teacher --model` naming a pretraining run interrupted after epoch 1 of 3", "train",
         lambda c: teacher_argv(c, "--model", c.tmp / "runs" / "mlm"),
         "--model <tmp>/runs/mlm: a run folder, unfinished, epoch 1 of 3 (no summary.json); expected a finished run: "
         "continue it with its command and --resume", setup=lambda c: pretraining_run(c, finished=False)),
    # --- train.py: presets
    case("preset-unknown-key", "a preset file with an unknown key", "train",
         lambda c: teacher_argv(c, "--preset", c.write("mine.toml", "learning_rate = 0.001\n")),
         "preset <tmp>/mine.toml: unknown setting 'learning_rate'; expected one of the train.py flags"),
    case("preset-unknown-name", "`--preset` naming no preset", "train", lambda c: teacher_argv(c, "--preset", "quik"),
         ("<repo>/presets/quik.toml: no such preset; expected one of [", "] or a .toml file")),
    case("preset-not-toml", "a preset file that is not TOML", "train",
         lambda c: teacher_argv(c, "--preset", c.write("broken.toml", "epochs = \n")), "<tmp>/broken.toml: not valid TOML"),
    # --- train.py: the run folder; a finished run is never changed
    case("resume-no-checkpoint", "`--resume` for a run that never started", "train", lambda c: teacher_argv(c, "--resume"),
         "<tmp>/run/checkpoint.safetensors: no checkpoint to resume from; run without --resume to start afresh"),
    case("resume-finished", "`--resume` on a finished run", "train",
         lambda c: teacher_argv(c, "--resume", out=c.run("teacher")),
         "the run is finished (summary.json); nothing to resume", keep=lambda c: c.run("teacher")),
    case("out-finished", "training into a finished run's folder without `--overwrite`", "train",
         lambda c: teacher_argv(c, out=c.run("teacher")),
         "--out <tmp>/runs/teacher: holds a finished run; expected a new folder, or --overwrite to replace it",
         keep=lambda c: c.run("teacher")),
    case("overwrite-bad-layers", "`--overwrite` of a finished student with `--layers 13`", "train",
         lambda c: distill_argv(c, "--layers", "13", "--overwrite", out=c.run("odd")),
         "layer 13 out of range", keep=lambda c: c.run("odd")),
    case("overwrite-bad-max-length", "`--overwrite` of a finished run with a `--max-length` the model cannot take", "train",
         lambda c: teacher_argv(c, "--overwrite", "--max-length", 10000, out=c.run("teacher")),
         "--max-length 10000: the model has 128 positions", keep=lambda c: c.run("teacher")),
    case("overwrite-missing-data", "`--overwrite` of a finished run with a `--data` file that does not exist", "train",
         lambda c: teacher_argv(c, "--overwrite", "--data", c.tmp / "missing.csv", out=c.run("teacher")),
         "<tmp>/missing.csv: file not found", keep=lambda c: c.run("teacher")),
    case("out-not-a-run", "`--out` naming a folder of other files", "train", lambda c: teacher_argv(c, out=c.tmp / "docs"),
         "--out <tmp>/docs: not empty and not a run folder; expected a new or empty folder",
         setup=lambda c: c.write("docs/notes.txt", "mine\n")),
    case("out-is-file", "`--out` naming a file", "train", lambda c: teacher_argv(c, out=c.tmp / "afile"),
         "--out <tmp>/afile: a file; expected a folder for the run", setup=lambda c: c.write("afile", "mine\n")),
    case("out-under-file", "`--out` inside a path where a file stands", "train",
         lambda c: teacher_argv(c, out=c.tmp / "afile" / "run"), ("--out <tmp>/afile/run", "<tmp>/afile"),
         setup=lambda c: c.write("afile", "mine\n")),
    case("out-read-only", "`--out` in a folder the user cannot write", "train",
         lambda c: teacher_argv(c, out=c.tmp / "locked" / "run"), ("--out <tmp>/locked/run", "not writable"),
         setup=read_only_parent, doc_expected_only=True),
    case("split-under-file", "`--split` inside a path where a file stands", "train",
         lambda c: teacher_argv(c, "--split", c.tmp / "afile" / "split.json"), ("--split <tmp>/afile/split.json", "<tmp>/afile"),
         setup=lambda c: c.write("afile", "mine\n")),
    case("all-runs-under-file", "`train.py all --runs` inside a path where a file stands", "train",
         lambda c: ["all", "--model", TINY, "--data", c.toy, "--runs", c.tmp / "afile" / "runs", "--no-progress"],
         ("--runs <tmp>/afile/runs", "<tmp>/afile"), setup=lambda c: c.write("afile", "mine\n")),
    case("ctrl-c", "Ctrl-C while training, before the first checkpoint", "train-ctrl-c", lambda c: teacher_argv(c, "--epochs", 3),
         "interrupted before the first checkpoint: nothing kept", env={"NANOBERT_CRASH_AT_STEP": "5", "NANOBERT_CRASH_SIGNAL": "INT"}),
    case("ctrl-c-overwrite", "Ctrl-C in the second epoch of an `--overwrite` of a finished run", "train-ctrl-c",
         lambda c: teacher_argv(c, "--epochs", 3, "--overwrite", "--split", c.shared / "runs" / "split.json", out=c.run("teacher")),
         "interrupted; kept the checkpoint at step 16 (1 of 3 epochs done); the finished run in <tmp>/runs/teacher is "
         "unchanged: the same command with --resume continues from it", keep=lambda c: c.run("teacher"),
         env={"NANOBERT_CRASH_AT_STEP": "20", "NANOBERT_CRASH_SIGNAL": "INT"}),
    case("disk-full-saving", "a full disk while saving the model (safetensors' own error, not an OSError)", "train",
         lambda c: teacher_argv(c), "<tmp>/run/model.safetensors: no space left on device", setup=disk_full),
    # --- train.py: one writer per folder, and a run keeps its word
    case("second-writer", "training into a folder that another process is training into (`--overwrite` in two terminals)",
         "train", lambda c: teacher_argv(c, "--overwrite", out=c.run("teacher")),
         ("<tmp>/runs/teacher: being written by process <pid> (`train.py teacher", "since <time>); one writer at a time"),
         busy=lambda c: teacher_argv(c, "--overwrite", "--epochs", 100000, "--threads", 1, out=c.run("teacher")),
         keep=lambda c: c.run("teacher")),
    case("note-stale-lock", "a run killed (`kill -9`) before its first checkpoint, started again with `--overwrite`", "train",
         lambda c: teacher_argv(c, "--overwrite"),
         ("note: <tmp>/run: took over the lock of process <pid> (`train.py teacher", "which ended without releasing it"),
         note=True, setup=killed_before_first_checkpoint),
    case("out-unfinished", "training again into an interrupted run's folder without `--resume` or `--overwrite`", "train",
         lambda c: teacher_argv(c, "--max-train", 64, out=c.run("interrupted")),
         "--out <tmp>/runs/interrupted: holds an unfinished run, stopped at step 16 with 1 of 3 epochs done; expected "
         "--resume to continue it, or --overwrite to start it again", keep=lambda c: c.run("interrupted")),
    case("out-unfinished-no-checkpoint", "training again into a run killed before its first checkpoint", "train",
         lambda c: teacher_argv(c), ("--out <tmp>/run: holds an unfinished run, stopped before its first checkpoint",
                                     "expected --overwrite to start it again"), setup=killed_before_first_checkpoint),
    case("resume-other-lr", "`--resume` with another `--lr` than the run started with", "train",
         lambda c: interrupted_argv(c, "--resume", "--lr", "1e-6"),
         "--resume <tmp>/runs/interrupted: --lr 1e-06 (run.json: 0.003) differs from the settings the run started with; "
         "a resumed run keeps them: expected the same, or --overwrite to start again with the new ones",
         keep=lambda c: c.run("interrupted")),
    case("resume-other-split", "`--resume` with another `--split` and `--split-seed` (it would train on test texts)", "train",
         lambda c: interrupted_argv(c, "--resume", "--split", c.tmp / "other.json", "--split-seed", 5),
         ("--split '<tmp>/other.json' (run.json: '<tmp>/runs/split.json'), --split-seed 5 (run.json: 0) differ",
          "expected the same"), keep=lambda c: c.run("interrupted")),
    case("resume-other-model", "`--resume` with another `--model`", "train",
         lambda c: interrupted_argv(c, "--resume", "--model", model_copy(c)),
         "--model '<tmp>/model' (run.json: '<tiny-bert>') differs", keep=lambda c: c.run("interrupted")),
    case("resume-other-subcommand", "`--resume` of a teacher run with `train.py lora`", "train",
         lambda c: interrupted_argv(c, "--resume", command="lora"),
         "--resume <tmp>/runs/interrupted: the run was started by `train.py teacher`, this is `train.py lora`; expected "
         "`train.py teacher ... --resume`, or --overwrite to train a lora run in its place", keep=lambda c: c.run("interrupted")),
    # --- train.py: notes, and training goes on
    case("note-latin1", "a CSV with Latin-1 bytes (not UTF-8)", "train",
         lambda c: teacher_argv(c, "--data", c.tmp / "latin1.csv"), "invalid UTF-8 byte sequence(s) replaced by U+FFFD", note=True,
         setup=lambda c: c.write("latin1.csv", c.toy.read_text().replace("you", "caf\u00e9").encode("latin-1"))),
    case("note-empty-texts", "a CSV with empty texts", "train",
         lambda c: teacher_argv(c, "--data", c.tmp / "gaps.csv"), "dropped 2 empty or whitespace-only text(s)", note=True,
         setup=lambda c: c.write("gaps.csv", (c.toy.read_text() + ",0\n   ,1\n"))),
    case("note-duplicates", "a CSV with the same text twice", "train",
         lambda c: teacher_argv(c, "--data", c.tmp / "dups.csv"), "removed 1 duplicate text(s)", note=True,
         setup=lambda c: c.write("dups.csv", c.toy.read_text() + c.toy.read_text().splitlines()[1] + "\n")),
    # --- eval.py: runs that are not what they should be
    case("report-not-a-run", "`eval.py` on a folder that is not a run", "eval", lambda c: [c.tmp],
         "<tmp>: not a run folder (no run.json); expected a folder written by train.py"),
    case("predict-missing-run", "`predict --run` naming a folder that does not exist", "eval",
         lambda c: ["predict", "--run", c.tmp / "nowhere", "hi"], "<tmp>/nowhere: not a run folder"),
    case("run-json-not-json", "a run whose run.json is not JSON", "eval", lambda c: ["predict", "--run", c.run("teacher"), "hi"],
         "<tmp>/runs/teacher/run.json: not valid JSON", setup=lambda c: (c.run("teacher") / "run.json").write_text("{not json")),
    case("run-json-missing-field", "a run whose run.json lacks `split_sha256`", "eval",
         lambda c: [c.run("teacher"), "--out", c.tmp / "report"], "run.json: missing field 'split_sha256'",
         setup=lambda c: c.edit_json(c.run("teacher") / "run.json", lambda raw: raw["results"].pop("split_sha256"))),
    case("run-without-model", "a run folder without its model files", "eval",
         lambda c: [c.run("teacher"), "--out", c.tmp / "report"], "<tmp>/runs/teacher: no trained model",
         setup=lambda c: [(c.run("teacher") / n).unlink() for n in ("config.json", "model.safetensors")]),
    case("run-damaged-weights", "a run whose model.safetensors was cut short", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "hi"],
         ("<tmp>/runs/teacher: cannot load the trained model", "not a readable safetensors file"),
         setup=lambda c: truncate(c.run("teacher") / "model.safetensors")),
    case("run-config-wrong-type", "a run whose config.json has `\"hidden_size\": \"big\"`", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "hi"], "field 'hidden_size' is 'big'; expected a whole number",
         setup=lambda c: c.edit_json(c.run("teacher") / "config.json", lambda raw: raw.update(hidden_size="big"))),
    case("lora-without-adapter", "a LoRA run without its adapter weights", "eval",
         lambda c: ["predict", "--run", c.run("lora"), "hi"], "adapter_model.safetensors: not found",
         setup=lambda c: (c.run("lora") / "adapter_model.safetensors").unlink()),
    case("lora-adapter-config-bad", "a LoRA run whose adapter_config.json says `\"r\": 0`", "eval",
         lambda c: ["predict", "--run", c.run("lora"), "hi"], "adapter_config.json: field 'r' is 0; expected a positive integer",
         setup=lambda c: c.edit_json(c.run("lora") / "adapter_config.json", lambda raw: raw.update(r=0))),
    case("lora-base-retrained", "`predict` with a LoRA run whose `--base` run was trained again since", "eval",
         lambda c: ["predict", "--run", c.tmp / "runs" / "lora-on-teacher", "hi"],
         ("<tmp>/runs/lora-on-teacher: its base <tmp>/runs/teacher has changed since the adapter was trained on it",
          "retrain the adapter with `python train.py lora --base <tmp>/runs/teacher --out <tmp>/runs/lora-on-teacher", "--overwrite`"),
         setup=lora_on_retrained_base, keep=lambda c: c.tmp / "runs" / "lora-on-teacher"),
    case("lora-base-model-changed", "`eval.py report` of a LoRA run whose `--model` folder's weights changed since", "eval",
         lambda c: [c.tmp / "runs" / "lora-own", "--out", c.tmp / "report"],
         ("<tmp>/runs/lora-own: its base <tmp>/model has changed since the adapter was trained on it",
          "`python train.py lora --model <tmp>/model"), setup=lora_on_changed_model, keep=lambda c: c.tmp / "runs" / "lora-own"),
    case("run-json-temperature-0", "a run whose run.json has a temperature of 0", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "hi"],
         "run.json: field 'temperatures' is {'1': 0}; expected an object of label -> temperature above 0",
         setup=lambda c: c.edit_json(c.run("teacher") / "run.json", lambda raw: raw["results"].update(temperatures={"1": 0}))),
    case("run-no-vocab", "a run without its vocab.txt", "eval", lambda c: ["predict", "--run", c.run("teacher"), "hi"],
         "vocab.txt: not found", setup=lambda c: (c.run("teacher") / "vocab.txt").unlink()),
    case("predict-pretraining-run", "`predict --run` naming a pretraining run (`train.py pretrain`): no classifier", "eval",
         lambda c: ["predict", "--run", c.tmp / "runs" / "mlm", "hi"],
         "<tmp>/runs/mlm: a pretraining run (train.py pretrain): an encoder without a classifier; expected a trained "
         "classifier: fine-tune one from it with `train.py teacher --model <tmp>/runs/mlm`",
         setup=pretraining_run, keep=lambda c: c.tmp / "runs" / "mlm", kept_as="the pretraining run"),
    # --- eval.py report
    case("report-different-splits", "`eval.py` on two runs trained on different splits", "eval",
         lambda c: [c.run("teacher"), c.run("odd"), "--out", c.tmp / "report"],
         ("<tmp>/runs/odd and <tmp>/runs/teacher were trained on different splits", "expected one test set for all"),
         setup=different_split),
    case("report-same-run-twice", "`eval.py` given the same run twice", "eval",
         lambda c: [c.run("teacher"), c.run("teacher"), "--out", c.tmp / "report"],
         "<tmp>/runs/teacher: given twice; expected each run once"),
    case("report-split-missing", "`eval.py` on a run whose split manifest was deleted", "eval",
         lambda c: [c.run("teacher"), "--out", c.tmp / "report"], ("split manifest", "not found"),
         setup=lambda c: c.edit_json(c.run("teacher") / "run.json",
                                     lambda raw: raw["settings"].update(split=str(c.tmp / "gone" / "split.json")))),
    case("report-out-under-file", "`eval.py report --out` inside a path where a file stands", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "afile" / "report", "--no-plots", "--resamples", 10,
                    "--latency-sentences", 2], ("--out <tmp>/afile/report", "<tmp>/afile"),
         setup=lambda c: c.write("afile", "mine\n")),
    case("predict-precision-unknown", "`eval.py predict --precision half`", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--precision", "half", "some text"],
         ("--precision", "invalid choice: 'half'", "auto", "fp32", "bf16")),
    case("report-threads-0", "`eval.py report --threads 0`", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--threads", 0, "--no-plots"],
         ("--threads 0", "expected")),
    case("report-threads-negative", "`eval.py report --threads -1`", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--threads", -1, "--no-plots"],
         ("--threads -1", "expected")),
    case("report-batch-size-0", "`eval.py report --batch-size 0`", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--batch-size", 0, "--no-plots"],
         ("--batch-size 0", "expected")),
    case("report-resamples-negative", "`eval.py report --resamples -5`", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--resamples", -5, "--no-plots"],
         ("--resamples -5", "expected")),
    case("report-latency-negative", "`eval.py report --latency-sentences -1`", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--latency-sentences", -1, "--no-plots"],
         ("--latency-sentences -1", "expected")),
    # --- eval.py predict
    case("predict-empty-text", "`predict` with an empty text", "eval", lambda c: ["predict", "--run", c.run("teacher"), "  "],
         "empty text to predict; expected at least one non-blank text"),
    case("predict-empty-stdin", "`predict` with nothing on stdin", "eval", lambda c: ["predict", "--run", c.run("teacher")],
         "empty text to predict; expected at least one non-blank text", stdin=""),
    case("predict-device-cuda", "`predict --device cuda` on a machine without a GPU", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--device", "cuda", "hi"], "device 'cuda': torch sees no CUDA GPU",
         setup=no_gpu),
    case("input-missing", "`predict --input` naming a file that does not exist", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.tmp / "nope.csv", "--output", c.tmp / "out.csv"],
         "--input <tmp>/nope.csv: file not found"),
    case("input-unknown-column", "`predict --input` with a `--text-column` the file lacks", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.toy, "--text-column", "body", "--output", c.tmp / "out.csv"],
         "--text-column 'body': not a column of <tmp>/toy.csv; expected one of ['text', 'label']"),
    case("input-without-output", "`predict --input` without `--output`", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.toy], "--input needs --output FILE"),
    case("output-is-input", "`predict --output` the same file as `--input`", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.tmp / "in.csv", "--output", c.tmp / "in.csv"],
         "--output <tmp>/in.csv: the same file as --input; expected another file",
         setup=lambda c: shutil.copy(c.toy, c.tmp / "in.csv"), keep=lambda c: c.tmp / "in.csv"),
    case("output-under-file", "`predict --output` inside a path where a file stands", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.toy, "--output", c.tmp / "afile" / "out.csv"],
         ("--output <tmp>/afile", "<tmp>/afile is a file"), setup=lambda c: c.write("afile", "mine\n")),
    case("input-txt", "`predict --input` naming a .txt file", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.write("in.txt", "hi\n"), "--output", c.tmp / "out.csv"],
         "--input <tmp>/in.txt: expected a .csv or .jsonl file"),
    case("output-txt", "`predict --output` naming a .txt file", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.toy, "--output", c.tmp / "out.txt"],
         "--output <tmp>/out.txt: expected a .csv or .jsonl file"),
    case("input-jsonl-bad-line", "`predict --input` a JSONL file with a line that is not JSON", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.write("in.jsonl", '{"text": "a"}\n{text: b}\n'),
                    "--output", c.tmp / "out.jsonl"], "--input <tmp>/in.jsonl line 2: not valid JSON"),
    case("input-and-texts", "`predict --input FILE` and texts as arguments", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.toy, "--output", c.tmp / "out.csv", "hi"],
         "texts given both as arguments and with --input; expected one of them"),
    # --- eval.py predict: notes, and labelling goes on
    case("note-blank-text", "`predict` with a blank text among others", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "you are good", " "], "note: skipped 1 blank text(s)", note=True),
    case("note-blank-rows", "`predict --input` with blank rows", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", csv_rows(c, "in.csv", "text", ["you are good", '" "', "you are bad"]),
                    "--output", c.tmp / "out.csv", "--no-progress"],
         "labelled 2 of 3 rows into <tmp>/out.csv; 1 blank row(s) left without a label", note=True),
    case("note-too-long", "`predict` with a text longer than the run's max length", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), " ".join(["good"] * 100)], ("note:", "64"), note=True),
    case("note-all-unknown", "`predict` with a text of emoji only (all unknown tokens)", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "🙂🙂🙂"], ("note:", "unknown"), note=True),
    case("note-input-latin1", "`predict --input` a CSV with Latin-1 bytes", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.tmp / "in.csv", "--output", c.tmp / "out.csv",
                    "--no-progress"], ("<tmp>/in.csv", "UTF-8"), note=True,
         setup=lambda c: c.write("in.csv", "text\ncafé au lait\n".encode("latin-1"))),
    # --- eval.py export
    case("export-int8", "`eval.py export` of an int8 export", "eval", lambda c: ["export", c.run("teacher-int8"), "--no-measure"],
         "<tmp>/runs/teacher-int8: already an int8 model; expected a run with fp32 weights"),
    case("export-onto-source", "`eval.py export RUN --out RUN` (onto its own source)", "eval",
         lambda c: ["export", c.run("teacher"), "--out", c.run("teacher"), "--no-measure"],
         "<tmp>/runs/teacher: the export must not overwrite its own source run; expected another folder",
         keep=lambda c: c.run("teacher")),
    case("export-onto-other-run", "`eval.py export --out` naming another finished run", "eval",
         lambda c: ["export", c.run("teacher"), "--out", c.run("odd"), "--no-measure"],
         "<tmp>/runs/odd: holds another run (run.json without 'quantized'); expected a new folder",
         keep=lambda c: c.run("odd")),
    case("export-out-under-file", "`eval.py export --out` inside a path where a file stands", "eval",
         lambda c: ["export", c.run("teacher"), "--out", c.tmp / "afile" / "int8", "--no-measure"],
         ("--out <tmp>/afile/int8", "<tmp>/afile is a file"), setup=lambda c: c.write("afile", "mine\n")),
    case("export-threads-negative", "`eval.py export --threads -1`", "eval",
         lambda c: ["export", c.run("teacher"), "--out", c.tmp / "int8", "--threads", -1, "--no-measure"],
         ("--threads -1", "expected")),
    case("export-not-a-run", "`eval.py export` of a folder that is not a run", "eval", lambda c: ["export", c.tmp / "nothing"],
         "<tmp>/nothing: not a run folder (no run.json)"),
    # --- eval.py behaviour
    case("behaviour-suite-missing", "`eval.py behaviour --suite` naming a file that does not exist", "eval",
         lambda c: ["behaviour", c.run("teacher"), "--suite", c.tmp / "suite.toml"], "<tmp>/suite.toml: no such suite file"),
    case("behaviour-suite-not-toml", "`eval.py behaviour --suite` naming a file that is not TOML", "eval",
         lambda c: ["behaviour", c.run("teacher"), "--suite", c.write("suite.toml", "[groups\n")], "<tmp>/suite.toml: not valid TOML"),
    case("behaviour-out-under-file", "`eval.py behaviour --out` inside a path where a file stands", "eval",
         lambda c: ["behaviour", c.run("teacher"), "--out", c.tmp / "afile" / "behaviour"],
         ("--out <tmp>/afile/behaviour", "<tmp>/afile"), setup=lambda c: c.write("afile", "mine\n")),
    # --- eval.py export writes only into its own folder
    case("export-out-not-empty", "`eval.py export --out` naming a folder of other files (a project's README.md, config.json)",
         "eval", lambda c: ["export", c.run("odd"), "--out", c.tmp / "project", "--no-measure"],
         "<tmp>/project: not empty and not an int8 export (holds README.md, config.json, summary.json); expected a new "
         "folder, an empty one, or an earlier int8 export of <tmp>/runs/odd",
         setup=lambda c: [c.write(f"project/{n}", "mine\n") for n in ("README.md", "config.json", "summary.json")],
         keep=lambda c: c.tmp / "project", kept_as="the folder"),
    case("export-onto-other-export", "`eval.py export` of one run into another run's int8 export", "eval",
         lambda c: ["export", c.run("odd"), "--out", c.run("teacher-int8"), "--no-measure"],
         "<tmp>/runs/teacher-int8: holds the int8 export of <tmp>/runs/teacher; expected a new folder, an empty one, "
         "or an earlier int8 export of <tmp>/runs/odd", keep=lambda c: c.run("teacher-int8"), kept_as="the export"),
    case("export-unfinished", "`eval.py export` of an interrupted run", "eval",
         lambda c: ["export", unfinished(c), "--no-measure"],
         "<tmp>/runs/teacher: unfinished, epoch 1 of 3 (no summary.json: interrupted, or still training); expected a "
         "finished run: continue it with train.py and --resume", after=nothing_left("runs/teacher-int8")),
    case("export-disk-full", "a full disk while a re-export saves its weights (safetensors' own error)", "eval",
         lambda c: ["export", c.run("teacher"), "--out", c.run("teacher-int8"), "--no-measure"],
         "<tmp>/runs/.teacher-int8.new/model-int8.safetensors: no space left on device; nothing was exported; "
         "<tmp>/runs/teacher-int8 was left as it was", setup=full_disk_for_safetensors, keep=lambda c: c.run("teacher-int8"), kept_as="the earlier export",
         after=nothing_left("runs/.teacher-int8.new"), then="(with the disk full)"),
    case("export-ctrl-c", "Ctrl-C while a re-export writes its files", "eval",
         lambda c: ["export", c.run("teacher"), "--out", c.run("teacher-int8"), "--no-measure"],
         "interrupted; nothing was exported; <tmp>/runs/teacher-int8 was left as it was",
         setup=lambda c: (own_export(c), interrupt("quantize", "save_quantized")(c)), keep=lambda c: c.run("teacher-int8"),
         kept_as="the earlier export",
         after=nothing_left("runs/.teacher-int8.new"), then="(Ctrl-C while it writes)"),
    # --- eval.py predict --input: read as training reads, never an input column lost
    case("input-duplicate-header", "`predict --input` a CSV whose header names a column twice", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", csv_rows(c, "in.csv", "text,label,text", ["a,0,b"]),
                    "--output", c.tmp / "out.csv"],
         "--input <tmp>/in.csv: column(s) ['text'] appear more than once in the header; expected each column once",
         keep=lambda c: c.tmp / "in.csv", after=nothing_left("out.csv", "out.partial.csv")),
    case("input-extra-field", "`predict --input` a CSV row with an extra unquoted comma", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", csv_rows(c, "in.csv", "text,label", ["a b,0", "c, d,1"]),
                    "--output", c.tmp / "out.csv"], "--input <tmp>/in.csv line 3: 3 fields, expected 2 (['text', 'label'])",
         keep=lambda c: c.tmp / "in.csv", after=nothing_left("out.csv", "out.partial.csv")),
    case("input-ctrl-c", "Ctrl-C while `predict --input` labels a file", "eval-ctrl-c",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", many_rows(c, 40_000), "--output", c.tmp / "out.csv",
                    "--no-progress", "--device", "cpu"],
         "interrupted; the <n> row(s) labelled so far are in <tmp>/out.partial.csv; <tmp>/out.csv was not written",
         ready=lambda c: (c.tmp / "out.partial.csv").is_file() and (c.tmp / "out.partial.csv").stat().st_size > 1000,
         keep=lambda c: c.tmp / "in.csv", after=partial_rows_are_whole),
    case("input-disk-full", "a full disk while `predict --input` writes the labelled rows", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.tmp / "in.csv", "--output", c.tmp / "out.csv",
                    "--no-progress"],
         "<tmp>/out.partial.csv: no space left on device; the <n> row(s) labelled so far are in <tmp>/out.partial.csv; "
         "<tmp>/out.csv was not written", setup=full_disk_for_labelling, keep=lambda c: c.tmp / "in.csv",
         after=partial_rows_are_whole, then="(with the disk full)"),
    # --- eval.py: Ctrl-C and a full disk
    case("report-disk-full", "a full disk while `eval.py report` writes its tables", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--no-plots", "--resamples", 10,
                    "--test-split-only"],
         "<tmp>/report/predictions-teacher.json: no space left on device", setup=full_disk, keep=lambda c: c.run("teacher"),
         then="(with the disk full)"),
    case("report-ctrl-c", "Ctrl-C while `eval.py report` evaluates the runs", "eval",
         lambda c: ["report", c.run("teacher"), "--out", c.tmp / "report", "--no-plots", "--test-split-only"],
         "interrupted; the report was not finished", setup=interrupt("measure", "evaluate_run"),
         keep=lambda c: c.run("teacher"), after=nothing_left("report"), then="(Ctrl-C while it evaluates)"),
    # --- an unfinished run is refused unless asked for, and then says so
    case("predict-unfinished", "`predict` with a run interrupted after epoch 1 of 3", "eval",
         lambda c: ["predict", "--run", unfinished(c), "you are good"],
         "<tmp>/runs/teacher: unfinished, epoch 1 of 3 (no summary.json: interrupted, or still training); expected a "
         "finished run: continue it with train.py and --resume, or pass --allow-unfinished", keep=lambda c: c.run("teacher"),
         kept_as="the unfinished run"),
    case("report-unfinished", "`eval.py report` on an interrupted run", "eval",
         lambda c: [unfinished(c), "--out", c.tmp / "report"], "<tmp>/runs/teacher: unfinished, epoch 1 of 3",
         keep=lambda c: c.run("teacher"), after=nothing_left("report"), kept_as="the unfinished run"),
    case("api-unfinished", "`Classifier.from_run` on an interrupted run", "api",
         lambda c: [unfinished(c), "Classifier.from_run(run)"],
         ("RunError: <tmp>/runs/teacher: unfinished, epoch 1 of 3", "allow_unfinished=True"), keep=lambda c: c.run("teacher"),
         kept_as="the unfinished run"),
    # --- run.json and vocab.txt that are not what train.py wrote
    case("run-json-max-length-null", "a run whose run.json says `\"max_length\": null`", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "hi"],
         "<tmp>/runs/teacher/run.json: field 'max_length' is None; expected a whole number of at least 2",
         setup=lambda c: c.edit_json(c.run("teacher") / "run.json", lambda raw: raw["settings"].update(max_length=None))),
    case("run-json-split-number", "a run whose run.json says `\"split\": 5`", "eval",
         lambda c: [c.run("teacher"), "--out", c.tmp / "report"],
         "<tmp>/runs/teacher/run.json: field 'split' is 5; expected the path of a split manifest",
         setup=lambda c: c.edit_json(c.run("teacher") / "run.json", lambda raw: raw["settings"].update(split=5))),
    case("run-vocab-too-long", "a run whose vocab.txt has more tokens than the model embeds", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "hi"],
         ("<tmp>/runs/teacher/vocab.txt:", "tokens, but the model embeds", "(vocab_size in config.json); expected at most"),
         setup=lambda c: (c.run("teacher") / "vocab.txt").open("a").write("".join(f"extra{i}\n" for i in range(40)))),
    # --- the Python API checks its texts
    case("api-none", "`predict` from Python with None among the texts", "api",
         lambda c: [c.run("teacher"), "Classifier.from_run(run).predict(['you are good', None])"],
         "TypeError: texts[1]: None; expected a string"),
    case("api-nan", "`predict` from Python with NaN among the texts (a pandas column with an empty cell)", "api",
         lambda c: [c.run("teacher"), "Classifier.from_run(run).predict_proba(['you are good', nan])"],
         "TypeError: texts[1]: NaN (a missing value, as pandas reads an empty cell: drop or fill it first); expected a string"),
    case("api-bytes", "`predict` from Python with bytes, not text", "api",
         lambda c: [c.run("teacher"), "Classifier.from_run(run).predict([b'you are good'])"],
         "TypeError: texts[0]: bytes (decode it first, e.g. text.decode('utf-8')); expected a string"),
    case("api-dict", "`predict` from Python given a dict", "api",
         lambda c: [c.run("teacher"), "Classifier.from_run(run).predict({'you are good': 1})"],
         "TypeError: texts: a dict (its keys are not the texts to classify); expected a string or a list or tuple of strings"),
    # --- going on, and saying what was done
    case("note-input-clash", "`predict --input` a file in the training format (it has a `label` column)", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input", c.tmp / "in.csv", "--output", c.tmp / "out.csv",
                    "--no-progress"],
         ("has column(s) ['label'] already: the predictions go in predicted_label, predicted_score, predicted_p_*",
          "no input column is overwritten"), note=True, setup=lambda c: shutil.copy(c.toy, c.tmp / "in.csv"),
         keep=lambda c: c.tmp / "in.csv"),
    case("note-input-long-field", "`predict --input` a CSV with a field over 131,072 characters", "eval",
         lambda c: ["predict", "--run", c.run("teacher"), "--input",
                    csv_rows(c, "in.csv", "text,id", ['"' + "good " * 40_000 + '",1', "bad,2"]), "--output", c.tmp / "out.csv",
                    "--no-progress"], "labelled 2 of 2 rows into <tmp>/out.csv", note=True, keep=lambda c: c.tmp / "in.csv"),
    case("note-predict-unfinished", "`predict --allow-unfinished` with a run interrupted after epoch 1 of 3", "eval",
         lambda c: ["predict", "--run", unfinished(c), "--allow-unfinished", "you are good"],
         "note: <tmp>/runs/teacher: unfinished, epoch 1 of 3; its labels are those of the best epoch saved so far",
         note=True, keep=lambda c: c.run("teacher"), kept_as="the unfinished run"),
    case("note-report-unfinished", "`eval.py report --allow-unfinished` with an interrupted run", "eval",
         lambda c: [unfinished(c), "--allow-unfinished", "--out", c.tmp / "report", "--no-plots", "--test-split-only",
                    "--resamples", 10], ("evaluating teacher (<tmp>/runs/teacher, unfinished, epoch 1 of 3)",),
         note=True, keep=lambda c: c.run("teacher"), kept_as="the unfinished run"),
    case("note-api-blank", "`predict` from Python with a blank text", "api",
         lambda c: [c.run("teacher"), "Classifier.from_run(run).predict([' '])"],
         "[{'text': ' ', 'label': None, 'score': None, 'probabilities': None}]", note=True),
    # --- the web page
    case("app-no-runs-folder", "the web page pointed at a runs folder that does not exist", "app", lambda c: c.tmp / "nowhere",
         ("No trained models found", "`<tmp>/nowhere` does not exist")),
    case("app-damaged-run", "the web page serving a run whose model.safetensors was cut short", "app", lambda c: c.tmp / "runs",
         ("Cannot load <tmp>/runs/teacher", "not a readable safetensors file"),
         setup=lambda c: truncate(c.run("teacher") / "model.safetensors")),
    case("app-lora-base-changed", "the web page serving a LoRA run whose `--model` folder's weights changed since", "app",
         lambda c: c.tmp / "runs", ("Cannot load <tmp>/runs/lora-own", "its base <tmp>/model has changed since the adapter "
                                    "was trained on it"), setup=lora_on_changed_model),
    case("app-unfinished", "the web page serving a runs folder whose only run was interrupted", "app",
         lambda c: (unfinished(c), c.tmp / "runs")[1],
         ("No trained models found", "1 unfinished run(s) are not listed (<tmp>/runs/teacher)", "'Show unfinished runs'")),
    case("app-vocab-too-long", "the web page serving a run whose vocab.txt has more tokens than the model embeds", "app",
         lambda c: c.tmp / "runs", ("Cannot load <tmp>/runs/teacher", "tokens, but the model embeds"),
         setup=lambda c: (c.run("teacher") / "vocab.txt").open("a").write("".join(f"extra{i}\n" for i in range(40)))),
]


# -----------------------------------------------------------------------------
# Running one case


def normalise(text, ctx):
    """The message with the temporary folders and the split hashes replaced, so that the doc is stable."""
    for path, name in sorted([(ctx.tmp, "<tmp>"), (ctx.shared, "<tmp>"), (TINY, "<tiny-bert>"), (ROOT, "<repo>")],
                             key=lambda p: -len(str(p[0]))):
        text = text.replace(str(Path(path).resolve()), name).replace(str(path), name)
    text = re.sub(r"\bprocess \d+", "process <pid>", text)
    text = re.sub(r"since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "since <time>", text)
    text = re.sub(r"\bthe \d+ row\(s\) labelled so far", "the <n> row(s) labelled so far", text)  # where Ctrl-C landed
    return re.sub(r"\b[0-9a-f]{12}…", "<hash>…", text)


def snapshot(folder):
    folder = Path(folder)
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Outcome:
    code: object  # SystemExit's code: None / 0 success, a str message, an int (argparse: 2)
    out: str
    err: str
    escaped: str | None = None  # an exception other than SystemExit: a traceback the user would see


def run_in_process(case, ctx, argv):
    main = main_of(case.tool)
    out, err = io.StringIO(), io.StringIO()
    ctx.monkeypatch.setattr(sys, "argv", [f"{case.tool}.py", *argv])  # argparse's prog, run.json's command
    if case.stdin is not None:
        ctx.monkeypatch.setattr(sys, "stdin", io.StringIO(case.stdin))
    code, escaped = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
        except BaseException as e:  # noqa: BLE001 - this is the traceback a user would get
            escaped = "".join(traceback.format_exception_only(type(e), e)).strip()
            print(traceback.format_exc(), file=err)
    return Outcome(code, out.getvalue(), err.getvalue(), escaped)


def run_ctrl_c(case, ctx, argv):
    """A real process, a real SIGINT once the work has started: training's first epoch, or case.ready; or,
    with NANOBERT_CRASH_SIGNAL in case.env, at a known step of training, where it signals itself."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(case.env or {})}
    script = "train.py" if case.tool == "train-ctrl-c" else "eval.py"
    # A process started in the background of a non-interactive shell (as CI may run us) inherits SIGINT
    # ignored, and Python then keeps it ignored: give the child the default, as a terminal would.
    p = subprocess.Popen([sys.executable, str(ROOT / script), *argv], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        if "NANOBERT_CRASH_SIGNAL" in env:
            pass  # it gets its Ctrl-C at a known step (train.train_epoch)
        elif case.ready:
            deadline = time.time() + 120
            while not case.ready(ctx) and p.poll() is None and time.time() < deadline:
                time.sleep(0.02)
            p.send_signal(signal.SIGINT)
        else:
            for line in p.stdout:  # setup prints "teacher: N train / M validation texts ..." before the first batch
                lines.append(line)
                if line.startswith("teacher:"):
                    break
            time.sleep(0.3)  # into the first epoch
            p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return Outcome(err.strip().splitlines()[-1] if p.returncode and err.strip() else p.returncode, "".join(lines) + rest, err)


def start_busy(argv):
    """A real train.py process, returned once it trains (its folder claimed, the lock held)."""
    p = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in p.stdout:
        seen.append(line)
        if line.startswith("teacher:") and "train /" in line:
            return p
    p.wait()
    raise AssertionError("the busy process ended before it trained:\n" + "".join(seen))
def run_api(case, ctx, argv):
    """The Python API: the case's expression, with Classifier and run (the run folder) in scope."""
    from classifier import Classifier

    run, expression = argv
    out, code, escaped = "", None, None
    try:
        out = repr(eval(expression, {"Classifier": Classifier, "run": run, "nan": float("nan")}))
    except (TypeError, ValueError) as e:  # the API's errors: one line, the caller's to show
        code = f"{type(e).__name__}: {e}"
    except BaseException as e:  # noqa: BLE001 - this is the traceback a user would get
        escaped = "".join(traceback.format_exception_only(type(e), e)).strip()
    return Outcome(code, out, "", escaped)


def run_app(case, ctx, runs_dir):
    from streamlit.testing.v1 import AppTest

    ctx.monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])  # AppTest leaves its own behind
    ctx.monkeypatch.setenv("NANOBERT_RUNS", str(runs_dir))
    ctx.monkeypatch.setattr(sys, "argv", ["app.py"])
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["text"] = "you are good"
    at.run()
    escaped = "; ".join(e.value for e in at.exception) or None
    messages = [e.value for e in at.error] + [w.value for w in at.warning]
    return Outcome(messages[0] if messages else None, "", "\n".join(messages), escaped)


def run_case(case, ctx):
    """Run the case through its entry point, check it, and return its (normalised) message."""
    if case.setup:
        case.setup(ctx)
    argv = [str(case.argv(ctx))] if case.tool == "app" else [str(a) for a in case.argv(ctx)]
    if case.tool == "api":
        argv = list(case.argv(ctx))
    keep = case.keep(ctx) if case.keep else None
    before = snapshot(keep) if keep else None
    out_dir = Path(argv[argv.index("--out") + 1]) if case.tool.startswith("train") and "--out" in argv else None
    new_out = out_dir is not None and not out_dir.exists()
    holder = start_busy([str(a) for a in case.busy(ctx)]) if case.busy else None
    try:
        if case.tool == "app":
            pytest.importorskip("streamlit")
            outcome = run_app(case, ctx, argv[0])
        elif case.tool in ("train-ctrl-c", "eval-ctrl-c"):
            outcome = run_ctrl_c(case, ctx, argv)
        elif case.tool == "api":
            outcome = run_api(case, ctx, argv)
        else:
            outcome = run_in_process(case, ctx, argv)
    finally:
        if holder is not None:
            holder.kill()
            holder.communicate()
    where = f"\n--- stdout\n{outcome.out[-3000:]}\n--- stderr\n{outcome.err[-3000:]}"
    assert outcome.escaped is None, f"a traceback reaches the user: {outcome.escaped}{where}"
    assert "Traceback" not in outcome.err, f"a traceback reaches the user{where}"
    if case.note:
        assert outcome.code in (None, 0), f"expected to go on with a note, got exit {outcome.code!r}{where}"
        lines = [normalise(line, ctx) for line in (outcome.out + outcome.err).splitlines()]
        found = [line for line in lines if all(f in line for f in case.expect)]
        assert found, f"no note holding {case.expect}{where}"
        message = found[0].strip()
    else:
        if case.tool == "app":
            assert isinstance(outcome.code, str), f"the page shows no error or warning{where}"
            message = outcome.code.strip()
        elif isinstance(outcome.code, int) and outcome.code == 2:  # argparse: a usage line, then `prog: error: ...`
            message = outcome.err.strip().splitlines()[-1]
            assert ": error: " in message, f"argparse exit without an error line{where}"
        else:
            assert isinstance(outcome.code, str), f"expected an error message, got exit {outcome.code!r}{where}"
            message = outcome.code
            assert message.startswith("error: ") or case.tool in ("train-ctrl-c", "api"), message
        assert "\n" not in message, f"more than one line: {message!r}"
        message = normalise(message, ctx)
        for fragment in case.expect:
            assert fragment in message, f"{fragment!r} not in {message!r}"
    if keep is not None:
        assert snapshot(keep) == before, f"{keep} changed: a failed command must leave it byte for byte"
    if case.after:
        case.after(ctx)
    if new_out:
        # A run that fails before its first checkpoint leaves no folder behind (Ctrl-C may come after one).
        left = out_dir.exists() and not (case.tool == "train-ctrl-c" and (out_dir / "checkpoint.safetensors").exists())
        assert case.note or not left, f"{out_dir} left behind by a failed command"
    return message


# -----------------------------------------------------------------------------
# The runs the cases start from, trained once


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shared")
    toy = write_toy_csv(root / "toy.csv")
    runs = root / "runs"
    common = ["--data", toy, "--batch-size", 8, "--epochs", 1, "--no-progress", "--split", runs / "split.json"]
    quiet = contextlib.redirect_stdout(io.StringIO())
    with quiet:
        main_of("train")(["teacher", "--model", str(TINY), "--out", str(runs / "teacher"), "--lr", "3e-3", *map(str, common)])
        main_of("train")(["distill", "--teacher", str(runs / "teacher"), "--out", str(runs / "odd"), *map(str, common)])
        main_of("train")(["lora", "--model", str(TINY), "--out", str(runs / "lora"), "--lr", "1e-2", *map(str, common)])
        main_of("eval")(["export", str(runs / "teacher"), "--out", str(runs / "teacher-int8"), "--no-measure"])
    argv = ["teacher", "--model", TINY, "--data", toy, "--out", runs / "interrupted", "--batch-size", 8, "--epochs", 3,
            "--lr", 3e-3, "--no-progress", "--split", runs / "split.json"]
    killed = subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, argv)], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, "NANOBERT_CRASH_AT_STEP": "20"}, timeout=300)
    assert killed.returncode == -9, killed.stderr  # kill -9 in its second epoch: the checkpoint of epoch 1 stays
    return root


def make_ctx(tmp, shared, monkeypatch):
    return Ctx(Path(tmp), shared, monkeypatch)


def params():
    return [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
            for c in CASES]


@pytest.mark.parametrize("case", params())
def test_bad_input(case, shared, tmp_path, monkeypatch):
    ctx = make_ctx(tmp_path, shared, monkeypatch)
    try:
        MESSAGES[case.id] = run_case(case, ctx)
    finally:
        with contextlib.suppress(OSError):
            (tmp_path / "locked").chmod(0o755)


def test_cases_are_many_and_distinct():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({c.mistake for c in CASES}) == len(CASES)


# -----------------------------------------------------------------------------
# docs/bad-inputs.md, rendered from the table


def code(text):
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def command_of(case, ctx):
    if case.tool == "app":
        return f"NANOBERT_RUNS={case.argv(ctx)} streamlit run app.py"
    if case.tool == "api":
        run, expression = case.argv(ctx)
        return "python: " + expression.replace("(run)", f"('{run}')")
    script = "train.py" if case.tool.startswith("train") else "eval.py"

    def quote(a):
        a = normalise(a, ctx)
        if len(a) > 60:  # a long text: its start, and how long it is
            a = f"{a[:20]}… ({len(a.split())} words)"
        return a if a and not re.search(r"[\s'\"{}\[\]|;&$`*?()\\]", a) else "'" + a.replace("'", "'\\''") + "'"

    args = " ".join(quote(a) for a in map(str, case.argv(ctx)))
    if case.stdin is not None:
        return f"{script} {args} < /dev/null" if not case.stdin else f"{script} {args}"
    then = "(then Ctrl-C)" if case.tool.endswith("ctrl-c") else case.then
    return f"{script} {args}" + (f"  {then}" if then else "")


def render(messages, commands, kept):
    errors = [c for c in CASES if not c.note]
    notes = [c for c in CASES if c.note]
    lines = [
        "# Bad inputs and faults, and what each one gets",
        "",
        "Generated by `tests/test_bad_inputs.py` from the cases it runs; do not edit by hand. After changing a",
        "message, regenerate with `.venv/bin/python tests/test_bad_inputs.py --write` (the test suite fails",
        "while this file is out of date).",
        "",
        "Every mistake below gets a one-line `error: ...` (exit status 1; a flag that argparse itself cannot",
        "read: its usage line, then one error line, exit status 2) that names the flag, file or field and what",
        "was expected, with no traceback; the web page shows the same kind of line in its error or warning box.",
        "A finished or interrupted run, or a file, that a failed command targets is left byte for byte. Where",
        "going on is right, the command goes on and prints a note. `<tmp>` stands for the",
        "was expected, with no traceback; the web page shows the same kind of line in its error or warning box,",
        "and the Python API raises one exception of one line (`python:` rows). A full disk and Ctrl-C get one",
        "line too, saying what was kept. A finished run or a file that a failed command targets is left byte",
        "for byte. Where going on is right, the command goes on and prints a note. `<tmp>` stands for the",
        "folder the test works in, `<repo>` for this repository, `<tiny-bert>` for the test model",
        "`tests/fixtures/tiny-bert`, `<hash>` for the start of a split's sha256, `<pid>` and `<time>` for",
        "the process and the time a lock names.",
        "",
        "Rows marked **not yet** are checked as expected failures: the message shown is what the",
        "command should say (the fragments the test requires), not what it says today.",
        "",
        f"## Errors ({len(errors)})",
        "",
        "| | Mistake | Command | Message |",
        "|---|---|---|---|",
    ]

    def row(i, c):
        if c.xfail:
            message = "**not yet**: should say " + " … ".join(code(f) for f in c.expect)
        elif c.doc_expected_only:
            message = " … ".join(code(f) for f in c.expect) + " (checked only where the folder can be made read-only)"
        else:
            message = code(messages[c.id])
        keep = f" *({kept[c.id]} is left byte for byte)*" if c.id in kept else ""
        return f"| {i} | {c.mistake.replace('|', chr(92) + '|')}{keep} | {code(commands[c.id])} | {message} |"

    lines += [row(i, c) for i, c in enumerate(errors, start=1)]
    lines += ["", f"## Notes: the command goes on ({len(notes)})", "", "| | Input | Command | Note |", "|---|---|---|---|"]
    lines += [row(i, c) for i, c in enumerate(notes, start=len(errors) + 1)]
    return "\n".join(lines) + "\n"


def kept_label(path):
    if path.suffix:
        return "the file"
    unfinished = (path / "run.json").is_file() and not (path / "summary.json").is_file()
    return "the interrupted run" if unfinished else "the finished run"


def test_doc_matches_the_cases(shared, tmp_path_factory, monkeypatch):
    """docs/bad-inputs.md is the table above with the messages the cases get (run here if not run yet)."""
    messages, commands, kept = dict(MESSAGES), {}, {}
    for c in CASES:
        with monkeypatch.context() as mp:
            ctx = make_ctx(tmp_path_factory.mktemp(f"doc-{c.id}"), shared, mp)
            if c.id not in messages and not c.xfail and not c.doc_expected_only:
                messages[c.id] = run_case(c, ctx)
            commands[c.id] = normalise(command_of(c, ctx), ctx)
            if c.keep:
                kept[c.id] = kept_label(c.keep(ctx))
                kept[c.id] = c.kept_as or ("the file" if c.keep(ctx).suffix else "the finished run")
    text = render(messages, commands, kept)
    target = os.environ.get(WRITE_ENV)
    if target:
        Path(target).write_text(text, encoding="utf-8")
        return
    assert DOC.is_file(), f"{DOC} missing; write it with: .venv/bin/python tests/test_bad_inputs.py --write"
    assert DOC.read_text(encoding="utf-8") == text, \
        f"{DOC} is out of date; regenerate it with: .venv/bin/python tests/test_bad_inputs.py --write"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_bad_inputs.py --write   (runs the cases and writes docs/bad-inputs.md)")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[WRITE_ENV] = str(Path(tmp) / "bad-inputs.md")
        status = pytest.main([__file__, "-q", "-p", "no:cacheprovider", f"--rootdir={ROOT}"])
        if status != 0:
            sys.exit(f"not written: the cases did not all pass (pytest exit {status}); {DOC} is unchanged")
        shutil.copyfile(os.environ[WRITE_ENV], DOC)
    print(f"wrote {DOC}")
