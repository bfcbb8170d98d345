"""fast.py against model.py: the prepared model computes what the plain one computes (fp32 within
1e-6, bf16 within bf16's rounding), forward and gradients, for a teacher, a distilled student and a
LoRA model, merged or not; it keeps the parameters, names and files; and its parts on their own:
the casting linear, the oneDNN kernels, the kept copies of frozen weights, the cheaper dropout and
the attention used while training."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import distill
import fast
import lora
import model as M
import precision
import pretrained
import quantize

TINY = Path(__file__).parent / "fixtures" / "tiny-bert"
REF = load_file(TINY / "reference_outputs.safetensors")
BATCH = (REF["input_ids"], REF["attention_mask"], REF["token_type_ids"])  # rows 1 and 2 padded
LABELS = torch.tensor([0, 1, 1])


def tiny():
    return pretrained.from_pretrained(str(TINY), verbose=False).eval()


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def loss_and_grads(m, batch=BATCH):
    loss = F.cross_entropy(m(*batch).logits.float(), LABELS)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in m.named_parameters() if p.requires_grad}


def lora_model(seed=0, dropout=0.1):
    m = tiny()
    torch.manual_seed(seed)  # LoRA's A starts random
    lora.inject_lora(m, r=4, alpha=8, dropout=dropout)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, layer in lora.lora_layers(m):
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.1)
    return m.eval()


def student():
    return distill.make_student(tiny(), [1, 3]).eval()


def merged():
    m = lora_model()
    lora.merge_all(m)
    return m


# -- the parity chain's middle link: prepared == plain ---------------------------------------------

MODELS = {"teacher": tiny, "student": student, "lora": lora_model, "lora-merged": merged}


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepared_model_computes_what_the_plain_model_computes(kind, dtype):
    plain, prepared = MODELS[kind](), fast.prepare(MODELS[kind](), dtype)
    assert type(plain.bert.encoder.layer[0].attention.self) is M.BertSelfAttention
    assert type(prepared.bert.encoder.layer[0].attention.self) is fast.SelfAttention
    with torch.no_grad():
        want, got = plain(*BATCH), prepared(*BATCH)
    assert all(h.dtype == dtype for h in got.hidden_states) and got.logits.dtype == torch.float32
    loss32, g32 = loss_and_grads(plain)
    loss, g = loss_and_grads(prepared)
    assert g.keys() == g32.keys() and (kind.startswith("lora") or "bert.encoder.layer.0.attention.self.query.weight" in g)
    assert [n for n in g if g[n] is None] == [n for n in g32 if g32[n] is None]  # merged: A and B get none
    g = {n: v for n, v in g.items() if v is not None}
    if dtype == torch.float32:
        assert (torch.stack(got.hidden_states) - torch.stack(want.hidden_states)).abs().max() <= 1e-6
        assert (got.logits - want.logits).abs().max() <= 1e-6
        for name in g:
            assert (g[name] - g32[name]).abs().max() <= 1e-6, name
    else:  # bf16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep
        assert rel(torch.stack(got.hidden_states), torch.stack(want.hidden_states)) < 0.01
        assert (got.logits - want.logits).abs().max() < 0.02
        assert loss == pytest.approx(loss32, abs=0.01)
        assert rel(torch.cat([v.flatten() for v in g.values()]), torch.cat([g32[n].flatten() for n in g])) < 0.05
        for name in g:  # each tensor on its own: LoRA's small gradients round a little more (0.055 at most here)
            if g32[name].norm() > 1e-6:
                assert rel(g[name], g32[name]) < 0.1, name


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepared_for_inference_computes_what_the_plain_model_computes(kind, dtype):
    # Frozen: the kept copies, and in bf16 oneDNN's fused kernels.
    plain = MODELS[kind]()
    prepared = precision.prepare(MODELS[kind](), precision.Choice({torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype], "test"),
                                 inference=True)
    with torch.inference_mode():
        want, got = plain(*BATCH), prepared(*BATCH)
        again = prepared(*BATCH)  # from the kept copies
    tol = 1e-6 if dtype == torch.float32 else 0.02
    assert (got.logits - want.logits).abs().max() <= tol and torch.equal(again.logits, got.logits)


@pytest.mark.parametrize("kind", ["teacher", "student", "lora-merged"])
def test_a_labelling_model_stores_its_bf16_weights_once_and_computes_the_same(kind):
    # keep_masters=False (Classifier.from_run): the encoder's linear weights live in bf16 alone,
    # the outputs are bit for bit those of the model that keeps its fp32 masters beside a copy.
    kept = precision.prepare(MODELS[kind](), BF16, inference=True)
    alone = precision.prepare(MODELS[kind](), BF16, inference=True, keep_masters=False)
    with torch.inference_mode():
        want, got = kept(*BATCH).logits, alone(*BATCH).logits
        again = alone(*BATCH).logits

    def stored(m):  # bytes of parameters and kept copies
        copies = sum(t.numel() * t.element_size() for mod in m.modules()
                     for _, t in mod.__dict__.get("_compute_copies", {}).values())
        return copies + sum(p.numel() * p.element_size() for p in m.parameters())

    assert torch.equal(got, want) and torch.equal(again, got)
    linears = [n for n, p in alone.named_parameters() if ".encoder." in n and "LayerNorm" not in n]
    assert linears and all(dict(alone.named_parameters())[n].dtype == torch.bfloat16 for n in linears)
    assert all(p.dtype == torch.float32 for n, p in alone.named_parameters() if n not in linears)  # embeddings, head
    assert stored(alone) < stored(kept) - sum(dict(alone.named_parameters())[n].numel() for n in linears) * 3
    fast.unprepare(alone)  # back to the plain model: fp32 again (the rounded values), and it runs
    assert all(p.dtype == torch.float32 for p in alone.parameters())
    with torch.inference_mode():
        assert (alone(*BATCH).logits - want).abs().max() <= 0.02


def test_a_labelling_model_in_fp32_is_left_as_it_is():
    m = precision.prepare(tiny(), precision.Choice("fp32", "test"), inference=True, keep_masters=False)
    assert all(p.dtype == torch.float32 for p in m.parameters())


def test_bf16_padding_does_not_change_real_tokens():
    # The bf16 path masks padding like the fp32 one (within bf16 rounding).
    m = fast.prepare(tiny(), torch.bfloat16)
    ids, mask, tt = BATCH
    with torch.no_grad():
        padded = m(ids, mask, tt).hidden_states[-1][1, :7].float()
        alone = m(ids[1:2, :7], mask[1:2, :7], tt[1:2, :7]).hidden_states[-1][0].float()
    assert (padded - alone).abs().max() <= 0.05


def test_inputs_embeds_on_the_fast_path():
    m = fast.prepare(tiny(), torch.bfloat16)
    ids, mask, tt = BATCH
    with torch.no_grad():
        want = m(ids, mask, tt).logits
        assert torch.equal(m(attention_mask=mask, token_type_ids=tt, inputs_embeds=m.bert.embeddings.word_embeddings(ids)).logits, want)


def test_prepare_keeps_the_parameters_names_and_files(tmp_path):
    m = lora_model()
    params, keys = dict(m.named_parameters()), list(m.state_dict())
    opt = torch.optim.AdamW(m.parameters())
    fast.prepare(m, torch.bfloat16)
    assert all(p is params[n] for n, p in m.named_parameters()) and list(m.named_parameters()) == list(params.items())
    assert list(m.state_dict()) == keys and opt.param_groups[0]["params"] == list(params.values())
    with torch.no_grad():
        m(*BATCH)  # makes and keeps the bf16 copies: not in the state dict
    assert list(m.state_dict()) == keys and not any("qkv" in k for k in keys)
    assert all(v.dtype == torch.float32 for v in m.state_dict().values() if v.is_floating_point())
    lora.save_adapter(m, tmp_path / "prepared", base_model="tiny")
    lora.save_adapter(lora_model(), tmp_path / "plain", base_model="tiny")
    for name in (lora.CONFIG_NAME, lora.WEIGHTS_NAME):
        assert (tmp_path / "prepared" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    # And back: unprepare gives the plain classes, with no kept copy left.
    fast.unprepare(m)
    assert not any(type(mod).__module__ == "fast" for mod in m.modules())
    assert type(m.bert.embeddings.LayerNorm) is torch.nn.LayerNorm and type(m.dropout) is torch.nn.Dropout
    assert not any("_compute_copies" in vars(mod) for mod in m.modules())


def test_lora_injected_after_prepare_is_computed_too():
    # train.py prepares after injecting; the other order works as well (the fast modules look at
    # their layers at every call).
    want = lora_model(dropout=0.0)
    m = fast.prepare(tiny(), torch.float32)
    torch.manual_seed(0)
    lora.inject_lora(m, r=4, alpha=8, dropout=0.0)
    m.load_state_dict(want.state_dict())
    with torch.no_grad():
        assert (m(*BATCH).logits - want(*BATCH).logits).abs().max() <= 1e-6


def test_every_dropout_stays_an_nn_dropout_with_a_live_p():
    m = fast.prepare(lora_model(), torch.float32)
    drops = [mod for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert len(drops) == 1 + 3 * 3 + 1 + 9 and all(isinstance(d, fast.Dropout) for d in drops)  # + LoRA's nine
    with torch.no_grad():
        a = m(*BATCH).logits
        m.train()
        for d in drops:  # what train.py's --dropout does
            d.p = 0.0
        assert (m(*BATCH).logits - a).abs().max() <= 1e-6  # nothing dropped, attention's included
        for layer in m.bert.encoder.layer:
            layer.attention.self.dropout.p = 0.5
        assert not torch.allclose(m(*BATCH).logits, a, atol=1e-3)


def test_an_int8_model_is_left_plain():
    q = precision.prepare(quantize.quantize(tiny()), precision.Choice("bf16", "test"), inference=True)
    assert not any(type(mod).__module__ == "fast" for mod in q.modules())
    with torch.no_grad():
        assert q(*BATCH).hidden_states[-1].dtype == torch.float32


# -- the casting linear and the oneDNN kernels -------------------------------------------------------


def test_onednn_fused_kernels_compute_what_the_plain_ops_compute(monkeypatch):
    # Frozen bf16 inference runs the linear layers as oneDNN products with the bias, GELU or the
    # residual add fused in; without those kernels, F.linear and separate ops.
    m = precision.prepare(tiny(), precision.Choice("bf16", "test"), inference=True)
    with torch.no_grad():
        fused = m(*BATCH)
        monkeypatch.setattr(fast, "HAS_LINEAR_POINTWISE", False)
        plain = m(*BATCH)
    assert rel(torch.stack(fused.hidden_states), torch.stack(plain.hidden_states)) < 0.01
    assert (fused.logits - plain.logits).abs().max() < 0.02


def test_mixed_linear_gradients_match_a_cast_weight():
    torch.manual_seed(0)
    for n_in, n_out in [(8, 24), (24, 8), (16, 16)]:  # every branch of the weight gradient
        x = torch.randn(3, 5, n_in, dtype=torch.bfloat16, requires_grad=True)
        w, b = torch.randn(n_out, n_in, requires_grad=True), torch.randn(n_out, requires_grad=True)
        y = fast.MixedLinear.apply(x, w, b)
        g = torch.randn_like(y)
        y.backward(g)
        x2, w2, b2 = (x.detach().float().requires_grad_(), w.detach().bfloat16().float().requires_grad_(),
                      b.detach().requires_grad_())
        F.linear(x2, w2, b2).backward(g.float())
        assert y.dtype == x.grad.dtype == torch.bfloat16 and w.grad.dtype == b.grad.dtype == torch.float32
        assert w.grad.is_contiguous()
        for got, want in [(y, F.linear(x2, w2, b2)), (x.grad, x2.grad), (w.grad, w2.grad), (b.grad, b2.grad)]:
            assert rel(got, want) < 0.01


# -- kept casts of frozen weights -------------------------------------------------------------------

BF16 = precision.Choice("bf16", "test")


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
    lora.inject_lora(m, r=4, dropout=0.0)  # the base is frozen: its casts are kept
    with torch.inference_mode():
        m(*BATCH)
    loss_and_grads(m)  # must not fail on "inference tensors cannot be saved for backward"


def test_merged_lora_layers_add_nothing_twice():
    m = fast.prepare(lora_model(), torch.float32)
    with torch.no_grad():
        before = m(*BATCH).logits
        lora.merge_all(m)  # moves the weights' version counters: the kept copies follow
        assert (m(*BATCH).logits - before).abs().max() <= 1e-5


def test_lora_dropout_is_applied_in_training_only():
    m = fast.prepare(lora_model(), torch.float32)
    with torch.no_grad():
        a = m(*BATCH).logits
        m.train()
        for name, mod in m.named_modules():  # every dropout off but LoRA's
            if isinstance(mod, torch.nn.Dropout) and not name.endswith("lora_dropout"):
                mod.p = 0.0
        torch.manual_seed(0)
        b = m(*BATCH).logits
    assert not torch.equal(a, b)


# -- dropout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_mask_values_rate_and_seed(dtype):
    torch.manual_seed(0)
    m = fast.dropout_mask((400, 500), 0.1, dtype, "cpu")
    assert m.dtype == dtype and m.shape == (400, 500)
    scale = torch.tensor(1 / 0.9, dtype=dtype)
    assert set(m.unique().tolist()) == {0.0, scale.item()}
    dropped = (m == 0).float().mean().item()
    assert abs(dropped - 0.1) < 4 * math.sqrt(0.1 * 0.9 / m.numel())  # 4 sigma
    # independent elements: neighbours are dropped together as often as chance says (0.01)
    both = ((m[:, 1:] == 0) & (m[:, :-1] == 0)).float().mean().item()
    assert abs(both - 0.01) < 0.003
    torch.manual_seed(0)
    assert torch.equal(fast.dropout_mask((400, 500), 0.1, dtype, "cpu"), m)
    assert not torch.equal(fast.dropout_mask((400, 500), 0.1, dtype, "cpu"), m)


def test_dropout_edge_rates():
    assert torch.equal(fast.dropout_mask((7,), 0.0, torch.float32, "cpu"), torch.ones(7))
    assert torch.equal(fast.dropout_mask((7,), 0.999999, torch.bfloat16, "cpu"), torch.zeros(7, dtype=torch.bfloat16))
    for p in (0.5, 0.9):
        assert abs((fast.dropout_mask((100_000,), p, torch.float32, "cpu") == 0).float().mean().item() - p) < 0.01
    d = fast.Dropout(1.0).train()
    assert torch.equal(d(torch.ones(5)), torch.zeros(5))
    x, h = torch.randn(4, 8), torch.randn(4, 8)
    assert torch.equal(d.residual(x, h), x)
    d = fast.Dropout(0.3).train()
    torch.manual_seed(1)
    fused = d.residual(x, h)
    torch.manual_seed(1)
    assert torch.allclose(fused, x + d(h))
    assert torch.equal(d.eval().residual(x, h), x + h)


# -- attention while training ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_attention_without_dropout_equals_sdpa_with_padding(dtype):
    torch.manual_seed(0)
    B, T, n_head, d = 3, 12, 4, 8
    qkv = torch.randn(B, T, 3 * n_head * d, dtype=dtype)
    mask = (REF["attention_mask"][:, None, None, :] > 0)
    y = fast.attention_with_dropout(qkv, mask, n_head, 0.0)
    q, k, v = (t.view(B, T, n_head, d).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    want = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask)
    assert y.dtype == dtype and y.shape == (B, n_head, T, d)
    assert (y.float() - want).abs().max() <= (1e-5 if dtype == torch.float32 else 0.05)


def test_attention_dropout_drops_whole_probabilities():
    torch.manual_seed(0)
    qkv = torch.randn(2, 16, 3 * 8)
    v = qkv[..., 16:].view(2, 16, 2, 4).transpose(1, 2)
    torch.manual_seed(3)
    y = fast.attention_with_dropout(qkv, None, 2, 0.5)
    # Recompute with the same draw: the probabilities times the mask, times v.
    torch.manual_seed(3)
    mask = fast.dropout_mask((2, 2, 16, 16), 0.5, torch.float32, "cpu")
    q, k = (t.view(2, 16, 2, 4).transpose(1, 2) for t in qkv[..., :16].chunk(2, dim=-1))
    probs = F.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
    assert torch.allclose(y, (probs * mask) @ v, atol=1e-6)
    assert not torch.allclose(y, probs @ v, atol=1e-3)
