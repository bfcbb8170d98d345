"""Tests for model.py: parity with the reference implementation (the plain model, as written), its
attention paths and input embeddings, the config. The fast path against this model: tests/test_fast.py."""

import json
from pathlib import Path

import pytest
import torch
from conftest import batch, tiny
from safetensors.torch import load_file

import model as M
import pretrained

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-bert"
SHARED_BGE = Path(__file__).resolve().parents[2] / "shared" / "models" / "bge-small-en"


# -- parity with the reference implementation ---------------------------------------------


def test_tiny_parity_every_layer_pooled_logits(ref):
    with torch.no_grad():
        out = tiny()(*batch(ref))
    assert len(out.hidden_states) == 3 + 1
    assert (torch.stack(out.hidden_states) - ref["hidden_states"]).abs().max() <= 1e-5
    assert (out.pooled - ref["pooled"]).abs().max() <= 1e-5
    assert (out.logits - ref["logits"]).abs().max() <= 1e-5


@pytest.mark.parametrize("act", ["gelu_new", "relu"])
def test_tiny_parity_other_activations(ref, act):
    m = tiny()
    for layer in m.bert.encoder.layer:
        layer.intermediate.act = M.ACTIVATIONS[act]
    with torch.no_grad():
        logits = m(*batch(ref)).logits
    assert (logits - ref[f"logits_{act}"]).abs().max() <= 1e-5
    assert (logits - ref["logits"]).abs().max() > 1e-4  # the activation really changed something


def test_padding_does_not_change_real_tokens(ref):
    m = tiny()
    ids, mask, tt = batch(ref)
    with torch.no_grad():
        padded = m(ids, mask, tt).hidden_states[-1][1, :7]
        alone = m(ids[1:2, :7], mask[1:2, :7], tt[1:2, :7]).hidden_states[-1][0]
    assert (padded - alone).abs().max() <= 1e-5


def test_dropout_only_in_train_mode(ref):
    m = tiny()
    with torch.no_grad():
        a, b = m(*batch(ref)).logits, m(*batch(ref)).logits
        m.train()
        torch.manual_seed(0)
        c = m(*batch(ref)).logits
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_every_dropout_is_an_nn_dropout_whose_p_is_live(ref):
    # Attention-probability dropout included: with every p at 0, training computes what eval does.
    m = tiny()
    drops = [mod for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert len(drops) == 1 + 3 * 3 + 1  # embeddings, per layer (attention probabilities, two sublayers), head
    for mod in drops:
        mod.p = 0.0
    with torch.no_grad():
        assert torch.equal(m.train()(*batch(ref)).logits, m.eval()(*batch(ref)).logits)


def test_inputs_embeds_replace_the_word_embedding_lookup(ref):
    m = tiny()
    ids, mask, tt = batch(ref)
    with torch.no_grad():
        want = m(ids, mask, tt)
        got = m(attention_mask=mask, token_type_ids=tt, inputs_embeds=m.bert.embeddings.word_embeddings(ids))
    assert torch.equal(got.logits, want.logits)
    assert all(torch.equal(a, b) for a, b in zip(got.hidden_states, want.hidden_states, strict=True))
    # The gradient reaches the input vectors (what attributions need), and no position is left out.
    embeds = m.bert.embeddings.word_embeddings(ids).detach().requires_grad_()
    m(inputs_embeds=embeds, attention_mask=mask).logits.sum().backward()
    assert embeds.grad.shape == embeds.shape and embeds.grad[mask.bool()].abs().sum(-1).min() > 0
    with pytest.raises(ValueError, match="input_ids .* or inputs_embeds"):
        m(ids, inputs_embeds=embeds)
    with pytest.raises(ValueError, match="input_ids .* or inputs_embeds"):
        m(attention_mask=mask)


def test_manual_attention_equals_sdpa(ref):
    # self.flash False: the written-out softmax(q k^T / sqrt(d)) v, with padding masked, forward and backward.
    outs, grads = [], []
    for flash in (True, False):
        m = tiny()
        for layer in m.bert.encoder.layer:
            layer.attention.self.flash = flash
        out = m(*batch(ref))
        out.logits.sum().backward()
        outs.append(torch.stack(out.hidden_states).detach())
        grads.append(m.bert.encoder.layer[0].attention.self.query.weight.grad)
    assert (outs[0] - outs[1]).abs().max() <= 1e-5 and (outs[0] - ref["hidden_states"]).abs().max() <= 1e-5
    assert (grads[0] - grads[1]).abs().max() <= 1e-5 and grads[0].abs().max() > 0


@pytest.mark.parametrize("flash", [True, False])
def test_attention_dropout_drops_probabilities_in_training_only(ref, flash):
    m = tiny()
    for mod in m.modules():  # every dropout off but the attention probabilities'
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    for layer in m.bert.encoder.layer:
        layer.attention.self.dropout.p = 0.5
        layer.attention.self.flash = flash  # SDPA's dropout_p, or the nn.Dropout on the written-out probabilities
    with torch.no_grad():
        eval_logits = m(*batch(ref)).logits
        assert torch.equal(m(*batch(ref)).logits, eval_logits)
        assert not torch.equal(m.train()(*batch(ref)).logits, eval_logits)


def test_saved_file_keeps_the_reference_names(tmp_path, ref):
    m = tiny()
    keys = list(m.state_dict())
    assert "bert.encoder.layer.0.attention.self.query.weight" in keys and not any("qkv" in k for k in keys)
    pretrained.save_pretrained(m, tmp_path / "out", tokenizer_dir=TINY)
    with torch.no_grad():
        again = pretrained.from_pretrained(str(tmp_path / "out"), verbose=False).eval()(*batch(ref)).logits
    assert (again - ref["logits"]).abs().max() <= 1e-5


# -- the masked-language-model head ------------------------------------------------------------

TINY_MLM = FIXTURES / "tiny-bert-mlm"  # tiny-bert's encoder with a masked-LM head, saved by the reference (make_tiny_mlm.py)


@pytest.fixture(scope="module")
def mlm_ref():
    return load_file(TINY_MLM / "reference_mlm.safetensors")


def tiny_mlm():
    return pretrained.from_pretrained(str(TINY_MLM), masked_lm=True, verbose=False).eval()


def test_tiny_mlm_parity_logits_at_every_position(mlm_ref):
    m = tiny_mlm()
    assert m.load_report == pretrained.LoadReport([], [], 0)  # the reference's file: every key known, the head loaded
    with torch.no_grad():
        logits = m(mlm_ref["input_ids"], mlm_ref["attention_mask"], mlm_ref["token_type_ids"]).logits
    assert logits.shape == (3, 12, 909)
    assert (logits - mlm_ref["logits"]).abs().max() <= 1e-5


def test_mlm_decoder_is_the_word_embeddings_and_has_its_own_bias(mlm_ref):
    m = tiny_mlm()
    head = m.cls.predictions
    assert head.decoder.weight is m.bert.embeddings.word_embeddings.weight  # one parameter, two names
    assert head.decoder.bias is None and head.bias.shape == (909,) and head.bias.abs().max() > 0
    names = dict(m.named_parameters())  # each parameter once, under its first name
    assert "cls.predictions.decoder.weight" not in names and "cls.predictions.bias" in names
    assert {"cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.weight"} <= set(names)
    assert m.bert.pooler is None  # the reference's masked-LM model has none, and its file holds none
    # The tie is live: a change to the embeddings changes the scores (the bias alone would not move them so).
    with torch.no_grad():
        before = m(mlm_ref["input_ids"]).logits
        m.bert.embeddings.word_embeddings.weight[7] += 1.0
        after = m(mlm_ref["input_ids"]).logits
    assert (after[..., 7] - before[..., 7]).abs().min() > 0 and (after - before).abs().max() > 1e-2


def test_mlm_positions_score_only_those_positions(mlm_ref):
    m = tiny_mlm()
    ids, mask, tt = mlm_ref["input_ids"], mlm_ref["attention_mask"], mlm_ref["token_type_ids"]
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, [1, 5, 11]] = positions[1, 3] = positions[2, 2] = True
    with torch.no_grad():
        every = m(ids, mask, tt).logits  # (B, T, vocab)
        some = m(ids, mask, tt, positions=positions).logits  # (N, vocab)
    assert some.shape == (5, 909) and torch.allclose(some, every[positions], atol=1e-6)


REAL = load_file(FIXTURES / "real" / "real_cls.safetensors")


def real_cls_error(name, path):
    m = pretrained.from_pretrained(path, verbose=False).eval()
    with torch.no_grad():
        out = m(REAL[f"{name}_input_ids"], REAL[f"{name}_attention_mask"])
    return (out.hidden_states[-1][:, 0] - REAL[f"{name}_cls"]).abs().max().item()


def test_real_minilm_cls_matches_reference():
    assert real_cls_error("minilm", pretrained.DEFAULT_MODEL) <= 1e-4


@pytest.mark.skipif(not SHARED_BGE.is_dir(), reason="../shared/models/bge-small-en not present")
def test_real_bge_cls_matches_reference():
    assert real_cls_error("bge", str(SHARED_BGE)) <= 1e-4


# -- config ------------------------------------------------------------------------------------


def write_config(tmp_path, **changes):
    raw = json.loads((TINY / "config.json").read_text())
    raw.update(changes)
    (tmp_path / "config.json").write_text(json.dumps(raw))
    return tmp_path / "config.json"


def test_config_reads_hf_fields():
    c = M.BertConfig.from_json(TINY / "config.json")
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size) == (909, 32, 3, 4, 64)
    assert (c.max_position_embeddings, c.type_vocab_size, c.layer_norm_eps, c.num_labels) == (128, 2, 1e-12, 2)


@pytest.mark.parametrize("change, words", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type 'relative_key' is not supported"),
    ({"hidden_act": "swish"}, "hidden_act 'swish' is not supported"),
    ({"model_type": "roberta"}, "model_type 'roberta' is not supported"),
    ({"is_decoder": True}, "decoder"),
    ({"num_attention_heads": 5}, "not a multiple"),
])
def test_config_rejects_unsupported(tmp_path, change, words):
    path = write_config(tmp_path, **change)
    with pytest.raises(ValueError) as e:
        M.BertConfig.from_json(path)
    assert str(path) in str(e.value) and words in str(e.value)


def test_config_num_labels_from_id2label_or_num_labels(tmp_path):
    assert M.BertConfig.from_json(write_config(tmp_path, id2label={"0": "a", "1": "b", "2": "c"})).num_labels == 3
    assert M.BertConfig.from_json(write_config(tmp_path, num_labels=4)).num_labels == 4
