"""Tests for optimizer.py: the learning-rate schedule and the parameters that are not decayed."""

import pytest
from conftest import TINY

import optimizer
import pretrained
from settings import Settings


def test_lr_schedule_warms_up_then_decays_to_zero():
    cfg = Settings(lr=1.0, warmup=0.1)
    lrs = [optimizer.lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0) and max(lrs) == 1.0
    assert lrs[10] == pytest.approx(1.0) and lrs[99] == pytest.approx(1 / 90) and lrs == sorted(lrs[:10]) + lrs[10:]


def test_optimizer_skips_decay_on_biases_and_layernorm():
    net = pretrained.from_pretrained(TINY, verbose=False)
    decay, no_decay = optimizer.make_optimizer(net, Settings(weight_decay=0.01, lr=1e-3), fused=False).param_groups
    names = {id(p): n for n, p in net.named_parameters()}
    assert all(not names[id(p)].endswith("bias") and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.01
