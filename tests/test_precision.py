"""precision.py: the choice of precision and of the fast path, bf16 against fp32 on the tiny model,
the fp32 master weights. The fast path's parts and its parity with the plain model: tests/test_fast.py."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import precision
import pretrained
import quantize

TINY = Path(__file__).parent / "fixtures" / "tiny-bert"
REF = load_file(TINY / "reference_outputs.safetensors")
BATCH = (REF["input_ids"], REF["attention_mask"], REF["token_type_ids"])  # rows 1 and 2 padded
BF16 = precision.Choice("bf16", "test")


def tiny():
    return pretrained.from_pretrained(str(TINY), verbose=False).eval()


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# -- choosing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("features, expected", [(["amx_bf16", "avx512_bf16"], "bf16"), (["avx512_bf16"], "bf16"),
                                                ([], "fp32"), (None, "fp32")])
def test_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch, features, expected):
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: features)
    c = precision.choose("auto", "cpu")
    assert c.precision == expected and c.reason.startswith("auto: ")
    assert c.dtype == {"bf16": torch.bfloat16, "fp32": torch.float32}[expected]


def test_explicit_choices_are_honoured_and_say_when_emulated(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: [])
    assert precision.choose("fp32").precision == "fp32"
    c = precision.choose("bf16")
    assert c.precision == "bf16" and "emulated" in c.reason
    with pytest.raises(ValueError, match="precision 'half'"):
        precision.choose("half")


def test_cpuinfo_flags_are_read(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert precision.cpu_bf16_features(tmp_path / "cpuinfo") == ["avx512_bf16"]
    assert precision.cpu_bf16_features(tmp_path / "missing") is None


def test_fast_off_computes_the_plain_model_in_fp32(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ["amx_bf16"])
    assert precision.choose("auto").fast and precision.choose("auto").precision == "bf16"
    c = precision.choose("auto", "cpu", fast=False)
    assert (c.precision, c.fast) == ("fp32", False) and c.reason.startswith("auto: ") and "--fast off" in c.reason
    assert not precision.choose("fp32", fast=False).fast
    with pytest.raises(ValueError) as e:
        precision.choose("bf16", fast=False)
    assert "--precision bf16" in str(e.value) and "--fast" in str(e.value) and "\n" not in str(e.value)
    m = tiny()
    with torch.no_grad():
        want = m(*BATCH).logits
        precision.prepare(m, precision.choose("auto", fast=False))
        assert not any(type(mod).__module__ == "fast" for mod in m.modules())
        assert torch.equal(m(*BATCH).logits, want)  # the plain model, exactly
    assert precision.computed_in(m, c) == "fp32" and precision.computed_in(m, precision.Choice("bf16", "x")) == "bf16"
    assert precision.computed_in(quantize.quantize(m), precision.Choice("bf16", "x")) == "fp32"


# -- bf16 against fp32 --------------------------------------------------------------------------


def test_bf16_forward_is_close_to_fp32_and_really_bf16():
    m = tiny()
    with torch.no_grad():
        fp32 = m(*BATCH)
        bf16 = precision.prepare(m, BF16)(*BATCH)
    assert all(h.dtype == torch.bfloat16 for h in bf16.hidden_states)
    assert bf16.logits.dtype == bf16.pooled.dtype == torch.float32  # the head runs in fp32
    # bf16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep.
    assert rel(torch.stack(bf16.hidden_states), torch.stack(fp32.hidden_states)) < 0.01
    assert (bf16.logits - fp32.logits).abs().max() < 0.02
    assert not torch.equal(bf16.logits, fp32.logits)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    precision.prepare(m, precision.Choice("fp32", "test"))  # the fast path in fp32: within fp32's rounding
    with torch.no_grad():
        assert (m(*BATCH).logits - fp32.logits).abs().max() <= 1e-6
        assert all(h.dtype == torch.float32 for h in m(*BATCH).hidden_states)
    precision.prepare(m, precision.Choice("fp32", "test", fast=False))
    with torch.no_grad():
        assert torch.equal(m(*BATCH).logits, fp32.logits)  # back to the plain model, exactly


def loss_and_grads(m, batch=BATCH):
    loss = F.cross_entropy(m(*batch).logits.float(), torch.tensor([0, 1, 1]))
    loss.backward()
    return loss.item(), {n: p.grad for n, p in m.named_parameters() if p.requires_grad}


def test_bf16_gradients_reach_the_fp32_master_weights():
    m32, m16 = tiny(), precision.prepare(tiny(), BF16)  # eval mode: no dropout, the same function
    loss32, g32 = loss_and_grads(m32)
    loss16, g16 = loss_and_grads(m16)
    assert loss16 == pytest.approx(loss32, abs=0.01)
    assert g16.keys() == g32.keys()
    for name, g in g16.items():
        assert g.dtype == torch.float32 and g.shape == g32[name].shape, name
        if g32[name].norm() > 1e-6:
            assert rel(g, g32[name]) < 0.05, name
    # query/key/value get theirs through the fused product, each its own slice.
    layer = "bert.encoder.layer.0.attention.self."
    assert all(rel(g16[layer + n], g32[layer + n]) < 0.05 for n in ("query.weight", "key.weight", "value.bias"))


def test_bf16_training_step_moves_the_fp32_weights():
    m = precision.prepare(tiny(), BF16).train()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True)
    torch.manual_seed(0)
    loss_and_grads(m)
    opt.step()
    for n, p in m.named_parameters():
        assert p.dtype == torch.float32
        if n != "bert.embeddings.word_embeddings.weight":  # its padding row and unused rows only decay
            assert not torch.equal(p, before[n]), n
