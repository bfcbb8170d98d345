"""Tests for model.py: parity with the reference implementation, the config."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import model as M
import pretrained

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-bert"
SHARED_BGE = Path(__file__).resolve().parents[2] / "shared" / "models" / "bge-small-en"


@pytest.fixture(scope="module")
def ref():
    return load_file(TINY / "reference_outputs.safetensors")


def batch(ref):
    return ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]


def tiny(**kw):
    return pretrained.from_pretrained(str(TINY), verbose=False, **kw).eval()


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


def test_bf16_padding_does_not_change_real_tokens(ref):
    # The bf16 path masks padding like the fp32 one (within bf16 rounding).
    m = tiny()
    M.set_compute_dtype(m, torch.bfloat16)
    ids, mask, tt = batch(ref)
    with torch.no_grad():
        padded = m(ids, mask, tt).hidden_states[-1][1, :7].float()
        alone = m(ids[1:2, :7], mask[1:2, :7], tt[1:2, :7]).hidden_states[-1][0].float()
    assert (padded - alone).abs().max() <= 0.05


def test_fused_qkv_keeps_the_reference_names_and_fp32_weights(tmp_path, ref):
    # q/k/v are computed by one product, but stay three nn.Linear: the state dict (and the file
    # on disk) is unchanged, holds no bf16 copy, and loads back to the same outputs.
    m = tiny()
    keys = list(m.state_dict())
    M.set_compute_dtype(m, torch.bfloat16)
    m.requires_grad_(False)
    with torch.no_grad():
        m(*batch(ref))  # makes and keeps the bf16 copies
    assert list(m.state_dict()) == keys
    assert "bert.encoder.layer.0.attention.self.query.weight" in keys and not any("qkv" in k for k in keys)
    assert all(v.dtype == torch.float32 for k, v in m.state_dict().items() if v.is_floating_point())
    pretrained.save_pretrained(m, tmp_path / "out", tokenizer_dir=TINY)
    with torch.no_grad():
        again = pretrained.from_pretrained(str(tmp_path / "out"), verbose=False).eval()(*batch(ref)).logits
    assert (again - ref["logits"]).abs().max() <= 1e-5


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
