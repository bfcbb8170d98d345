"""precision.py and model.py's bf16 path: the choice of precision, bf16 against fp32 on the tiny
model, the fp32 master weights, the cached casts of frozen weights, the fused q/k/v with LoRA
layers, the cheaper dropout and the attention used while training."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import lora
import model as M
import precision
import pretrained

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
    precision.prepare(m, precision.Choice("fp32", "test"))
    with torch.no_grad():
        assert torch.equal(m(*BATCH).logits, fp32.logits)  # back to fp32, exactly


def test_onednn_fused_kernels_compute_what_the_plain_ops_compute(monkeypatch):
    # Frozen bf16 inference runs the linear layers as oneDNN products with the bias, GELU or the
    # residual add fused in; without those kernels, F.linear and separate ops.
    m = precision.prepare(tiny(), BF16, inference=True)
    with torch.no_grad():
        fused = m(*BATCH)
        monkeypatch.setattr(M, "HAS_LINEAR_POINTWISE", False)
        plain = m(*BATCH)
    assert rel(torch.stack(fused.hidden_states), torch.stack(plain.hidden_states)) < 0.01
    assert (fused.logits - plain.logits).abs().max() < 0.02


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


def test_mixed_linear_gradients_match_a_cast_weight():
    torch.manual_seed(0)
    for n_in, n_out in [(8, 24), (24, 8), (16, 16)]:  # every branch of the weight gradient
        x = torch.randn(3, 5, n_in, dtype=torch.bfloat16, requires_grad=True)
        w, b = torch.randn(n_out, n_in, requires_grad=True), torch.randn(n_out, requires_grad=True)
        y = M.MixedLinear.apply(x, w, b)
        g = torch.randn_like(y)
        y.backward(g)
        x2, w2, b2 = (x.detach().float().requires_grad_(), w.detach().bfloat16().float().requires_grad_(),
                      b.detach().requires_grad_())
        F.linear(x2, w2, b2).backward(g.float())
        assert y.dtype == x.grad.dtype == torch.bfloat16 and w.grad.dtype == b.grad.dtype == torch.float32
        assert w.grad.is_contiguous()
        for got, want in [(y, F.linear(x2, w2, b2)), (x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)]:
            assert rel(got, want) < 0.01


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


# -- cached casts of frozen weights -------------------------------------------------------------


def test_frozen_weights_are_cast_once_and_again_after_a_change():
    m = precision.prepare(tiny(), BF16, inference=True)
    assert not any(p.requires_grad for p in m.parameters()) and not m.training
    attn = m.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        first = m(*BATCH).logits
        copy = attn._compute_copies["qkv.weight"][1]
        assert copy.dtype == torch.bfloat16 and copy.shape == (3 * 32, 32)
        assert torch.equal(m(*BATCH).logits, first)
        assert attn._compute_copies["qkv.weight"][1] is copy  # reused, not cast again
        attn.key.weight.mul_(0.5)  # an in-place change: the copy must follow
        changed = m(*BATCH).logits
    assert attn._compute_copies["qkv.weight"][1] is not copy
    assert not torch.equal(changed, first)
    fresh = precision.prepare(tiny(), BF16, inference=True)
    with torch.no_grad():
        fresh.bert.encoder.layer[0].attention.self.key.weight.mul_(0.5)
        assert torch.equal(fresh(*BATCH).logits, changed)
        # load_state_dict copies in place: the caches follow it too.
        m.load_state_dict(tiny().state_dict())
        assert torch.equal(m(*BATCH).logits, first)
    assert "_compute_copies" not in str(list(m.state_dict()))


def test_compute_copies_made_in_inference_mode_serve_a_later_training_step():
    m = precision.prepare(tiny(), BF16)
    lora.inject_lora(m, r=4, dropout=0.0)  # the base is frozen: its casts are cached
    with torch.inference_mode():
        m(*BATCH)
    loss_and_grads(m)  # must not fail on "inference tensors cannot be saved for backward"


# -- the fused q/k/v with LoRA layers -----------------------------------------------------------


def lora_model(seed=0):
    m = tiny()
    torch.manual_seed(seed)  # LoRA's A starts random
    lora.inject_lora(m, r=4, alpha=8, dropout=0.1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora.lora_layers(m):
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.1)
    return m.eval()


@pytest.mark.parametrize("bf16", [False, True])
def test_fused_qkv_with_lora_layers_computes_what_loralinear_computes(monkeypatch, bf16):
    fused = lora_model()
    separate = lora_model()
    if bf16:
        precision.prepare(fused, BF16)
        precision.prepare(separate, BF16)
    _, g_fused = loss_and_grads(fused)
    with torch.no_grad():
        out_fused = fused(*BATCH)
    monkeypatch.setattr(M, "is_adapted", lambda layer: False)  # LoRALinear.forward (under autocast in bf16)
    _, g_sep = loss_and_grads(separate)
    with torch.no_grad():
        out_sep = separate(*BATCH)
    tol = 0.02 if bf16 else 1e-5
    assert (out_fused.logits - out_sep.logits).abs().max() <= tol
    assert g_fused.keys() == g_sep.keys() and any("lora_A" in n for n in g_fused)
    for name in g_fused:
        if bf16:
            assert rel(g_fused[name], g_sep[name]) < 0.05, name
        else:
            assert (g_fused[name] - g_sep[name]).abs().max() <= 1e-5, name


def test_merged_lora_layers_add_nothing_twice():
    m = lora_model()
    with torch.no_grad():
        before = m(*BATCH).logits
        lora.merge_all(m)
        assert (m(*BATCH).logits - before).abs().max() <= 1e-5


def test_lora_dropout_is_applied_in_training_only():
    m = lora_model()
    with torch.no_grad():
        a = m(*BATCH).logits
        m.train()
        for mod in m.modules():  # every dropout off but LoRA's
            if isinstance(mod, M.Dropout):
                mod.p = 0.0
            if isinstance(mod, M.BertSelfAttention):
                mod.dropout_p = 0.0
        torch.manual_seed(0)
        b = m(*BATCH).logits
    assert not torch.equal(a, b)


# -- dropout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_mask_values_rate_and_seed(dtype):
    torch.manual_seed(0)
    m = M.dropout_mask((400, 500), 0.1, dtype, "cpu")
    assert m.dtype == dtype and m.shape == (400, 500)
    scale = torch.tensor(1 / 0.9, dtype=dtype)
    assert set(m.unique().tolist()) == {0.0, scale.item()}
    dropped = (m == 0).float().mean().item()
    assert abs(dropped - 0.1) < 4 * math.sqrt(0.1 * 0.9 / m.numel())  # 4 sigma
    # independent elements: neighbours are dropped together as often as chance says (0.01)
    both = ((m[:, 1:] == 0) & (m[:, :-1] == 0)).float().mean().item()
    assert abs(both - 0.01) < 0.003
    torch.manual_seed(0)
    assert torch.equal(M.dropout_mask((400, 500), 0.1, dtype, "cpu"), m)
    assert not torch.equal(M.dropout_mask((400, 500), 0.1, dtype, "cpu"), m)


def test_dropout_edge_rates():
    assert torch.equal(M.dropout_mask((7,), 0.0, torch.float32, "cpu"), torch.ones(7))
    assert torch.equal(M.dropout_mask((7,), 0.999999, torch.bfloat16, "cpu"), torch.zeros(7, dtype=torch.bfloat16))
    for p in (0.5, 0.9):
        assert abs((M.dropout_mask((100_000,), p, torch.float32, "cpu") == 0).float().mean().item() - p) < 0.01
    d = M.Dropout(1.0).train()
    assert torch.equal(d(torch.ones(5)), torch.zeros(5))
    x, h = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(d.residual(x, h), x)
    d = M.Dropout(0.3).train()
    torch.manual_seed(1)
    fused = d.residual(x, h)
    torch.manual_seed(1)
    assert torch.allclose(fused, x + d(h))
    assert torch.equal(d.eval().residual(x, h), x + h)


def test_model_uses_the_cheaper_dropout_everywhere():
    m = tiny()
    plain = [n for n, mod in m.named_modules() if type(mod) is torch.nn.Dropout]
    assert plain == [] and len([1 for mod in m.modules() if isinstance(mod, M.Dropout)]) == 2 * 3 + 2


# -- attention while training ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_attention_without_dropout_equals_sdpa_with_padding(dtype):
    torch.manual_seed(0)
    B, T, n_head, d = 3, 12, 4, 8
    qkv = torch.randn(B, T, 3 * n_head * d, dtype=dtype)
    mask = (REF["attention_mask"][:, None, None, :] > 0)
    y = M.attention_with_dropout(qkv, mask, n_head, 0.0)
    q, k, v = (t.view(B, T, n_head, d).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert y.dtype == dtype and y.shape == (B, n_head, T, d)
    assert (y.float() - want).abs().max() <= (1e-5 if dtype == torch.float32 else 0.05)


def test_attention_dropout_drops_whole_probabilities():
    torch.manual_seed(0)
    qkv = torch.randn(2, 16, 3 * 8)
    v = qkv[..., 16:].view(2, 16, 2, 4).transpose(1, 2)
    torch.manual_seed(3)
    y = M.attention_with_dropout(qkv, None, 2, 0.5)
    # Recompute with the same draw: the probabilities times the mask, times v.
    torch.manual_seed(3)
    mask = M.dropout_mask((2, 2, 16, 16), 0.5, torch.float32, "cpu")
    q, k = (t.view(2, 16, 2, 4).transpose(1, 2) for t in qkv[..., :16].chunk(2, dim=-1))
    probs = F.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
    assert torch.allclose(y, (probs * mask) @ v, atol=1e-6)
    assert not torch.allclose(y, probs @ v, atol=1e-3)
