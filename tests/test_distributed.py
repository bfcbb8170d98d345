"""Tests for distributed.py: two processes under torchrun train the same model as one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, TINY, cli, common
from safetensors.torch import load_file

import runs as R


def test_ddp_two_processes_match_one_process(toy, tmp_path):
    # fp32: the comparison is to 1e-5 (bf16 rounds differently for a batch of 8 and two of 4).
    flags = ["teacher", "--model", TINY, *common(toy, "X", "--epochs", 1, "--lr", 3e-3, "--dropout", 0, "--precision", "fp32")]
    one = cli(*[tmp_path / "one" if a == "X" else a for a in flags])
    assert one.returncode == 0, one.stderr
    torchrun = Path(sys.executable).parent / "torchrun"
    two = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(ROOT / "train.py"),
                          *[str(tmp_path / "two") if a == "X" else str(a) for a in flags]],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert R.read_info(tmp_path / "two")["world_size"] == 2
    a, b = load_file(tmp_path / "one" / "model.safetensors"), load_file(tmp_path / "two" / "model.safetensors")
    # Attention's key bias adds the same number to every score of a query, which softmax ignores:
    # its true gradient is zero, so it only ever gets rounding noise, which Adam (dividing by the
    # gradient's own size) turns into steps of size lr. Every other weight must agree.
    assert max((a[k] - b[k]).abs().max().item() for k in a if not k.endswith("key.bias")) < 1e-5
    log = lambda d: [r for r in map(json.loads, open(tmp_path / d / "metrics.jsonl")) if "loss" in r]
    for x, y in zip(log("one"), log("two"), strict=True):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5) and x["grad_norm"] == pytest.approx(y["grad_norm"], rel=1e-5)
    assert any(not torch.equal(a[k], load_file(Path(TINY) / "model.safetensors")[k]) for k in a)  # it did train
