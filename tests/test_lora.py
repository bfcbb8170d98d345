"""
lora.py against hand-computed values and against the reference library (peft): the adapters
and outputs in tests/fixtures/lora/ were written by peft (tests/fixtures/lora/make_lora_fixture.py).
"""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import lora
import model
import pretrained

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-bert"
LORA = FIXTURES / "lora"
BASE = "tests/fixtures/tiny-bert"  # the base model name recorded in the peft adapters
REF = load_file(LORA / "reference.safetensors")
BATCH = {k: REF[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def tiny():
    return pretrained.from_pretrained(TINY, verbose=False).eval()


def logits(m):
    with torch.no_grad():
        return m(**BATCH).logits


def randomise(m, seed=0):
    """Give every trainable tensor (A, B, the head) values as after some training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


# -----------------------------------------------------------------------------
# The layer


def test_fresh_wrap_returns_base_output_exactly():
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    x = torch.randn(2, 5, 16)
    expected = base(x)
    layer = lora.LoRALinear(base, r=4, alpha=8, dropout=0.5)
    assert layer.weight is base.weight and layer.bias is base.bias  # the same Parameters, not copies
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.scaling == 2.0
    assert layer.lora_A.weight.shape == (4, 16) and layer.lora_B.weight.shape == (8, 4)
    assert torch.count_nonzero(layer.lora_B.weight) == 0
    # Kaiming-uniform with a=sqrt(5), as nn.Linear: U(-1/sqrt(in), 1/sqrt(in))
    assert 0 < layer.lora_A.weight.abs().max() <= 1 / math.sqrt(16)
    assert torch.equal(layer(x), expected)  # also in training mode, dropout on
    layer.eval()
    assert torch.equal(layer(x), expected)


def test_forward_is_base_plus_scaled_low_rank_update_with_dropout_once():
    torch.manual_seed(0)
    layer = lora.LoRALinear(nn.Linear(16, 8), r=4, alpha=6, dropout=0.3)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 16)
    W, b, A, B = layer.weight, layer.bias, layer.lora_A.weight, layer.lora_B.weight
    layer.eval()
    assert torch.allclose(layer(x), x @ W.T + b + (x @ A.T @ B.T) * 1.5, atol=1e-6, rtol=0)
    # Training: one dropout mask on the LoRA input, none on the base path.
    layer.train()
    torch.manual_seed(1)
    got = layer(x)
    torch.manual_seed(1)
    xd = F.dropout(x, 0.3, training=True)
    assert torch.allclose(got, x @ W.T + b + (xd @ A.T @ B.T) * 1.5, atol=1e-6, rtol=0)
    assert not torch.allclose(got, layer.eval()(x), atol=1e-3)


def test_dropout_zero_is_identity():
    layer = lora.LoRALinear(nn.Linear(4, 4), r=2, dropout=0.0)
    assert isinstance(layer.lora_dropout, nn.Identity)


def test_merge_unmerge_and_merged_forward_uses_only_the_base():
    torch.manual_seed(0)
    layer = lora.LoRALinear(nn.Linear(32, 24), r=4, alpha=8).eval()
    nn.init.normal_(layer.lora_B.weight, std=0.1)
    x = torch.randn(5, 32)
    w0 = layer.weight.clone()
    y = layer(x)
    layer.merge()
    assert layer.merged
    assert torch.allclose(layer.weight, w0 + layer.lora_B.weight @ layer.lora_A.weight * 2.0, atol=1e-6, rtol=0)

    def boom(*_):
        raise AssertionError("a merged layer must not run the LoRA path")

    hooks = [layer.lora_A.register_forward_pre_hook(boom), layer.lora_B.register_forward_pre_hook(boom)]
    assert torch.allclose(layer(x), y, atol=1e-5, rtol=0)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    for h in hooks:
        h.remove()
    layer.merge()  # a second merge does nothing
    layer.train(), layer.eval()  # and neither do mode switches
    assert layer.merged
    layer.unmerge()
    assert not layer.merged
    assert torch.allclose(layer.weight, w0, atol=1e-6, rtol=0)
    assert (layer.weight - w0).abs().max() < 1e-6
    assert torch.allclose(layer(x), y, atol=1e-6, rtol=0)


# -----------------------------------------------------------------------------
# Injecting into a model


def test_inject_wraps_targets_freezes_the_rest_and_changes_no_output():
    m = tiny()
    before = logits(m)
    wrapped = lora.inject_lora(m, r=4, alpha=8)
    assert wrapped == [f"bert.encoder.layer.{i}.attention.self.{t}" for i in range(3) for t in ("query", "key", "value")]
    assert all(not layer.training for _, layer in lora.lora_layers(m))  # injected into an eval() model
    assert torch.equal(logits(m), before)
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    expected = [f"{w}.lora_{ab}.weight" for w in wrapped for ab in "AB"] + ["classifier.weight", "classifier.bias"]
    assert sorted(trainable) == sorted(expected)
    # base keys are those of the plain model; LoRA only adds its own
    plain = set(tiny().state_dict())
    assert set(m.state_dict()) == plain | {f"{w}.lora_{ab}.weight" for w in wrapped for ab in "AB"}
    assert m.lora_config == dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["query", "key", "value"],
                                 modules_to_save=["classifier"])


def test_the_plain_model_runs_loralinear_forward():
    # No other LoRA arithmetic runs in model.py's BERT: every projection goes through LoRALinear.forward.
    m = tiny()
    lora.inject_lora(m, r=4, alpha=8)
    calls = []
    for name, layer in lora.lora_layers(m):
        layer.register_forward_hook(lambda mod, args, out, name=name: calls.append(name))
    logits(m)
    assert calls == [n for n, _ in lora.lora_layers(m)]


def test_inject_suffixes_follow_peft_rule():
    m = tiny()
    wrapped = lora.inject_lora(m, ["attention.output.dense", "intermediate.dense"], trainable=None)
    assert wrapped == [f"bert.encoder.layer.{i}.{s}" for i in range(3) for s in ("attention.output.dense", "intermediate.dense")]
    m = tiny()
    wrapped = lora.inject_lora(m, ["output.dense"], trainable=[])
    assert wrapped == [f"bert.encoder.layer.{i}.{s}" for i in range(3) for s in ("attention.output.dense", "output.dense")]
    assert sum(p.requires_grad for p in m.classifier.parameters()) == 0


def test_gradients_reach_only_lora_and_the_head():
    m = tiny().train()
    lora.inject_lora(m, ["query", "key", "value", "intermediate.dense"], r=4, alpha=8, dropout=0.1)
    loss = F.cross_entropy(m(**BATCH).logits, torch.tensor([0, 1, 1]))
    loss.backward()
    for name, p in m.named_parameters():
        if "lora_" in name or name.startswith("classifier."):
            assert p.grad is not None, name
        else:
            assert p.grad is None, name  # frozen: no gradient computed at all
    for name, layer in lora.lora_layers(m):
        assert torch.count_nonzero(layer.lora_B.weight.grad) > 0, name
        # B = 0 at the start, so dL/dA = B^T (...) = 0: A only starts moving after B has.
        assert torch.count_nonzero(layer.lora_A.weight.grad) == 0, name
    assert torch.count_nonzero(m.classifier.weight.grad) > 0


def test_unmatched_target_lists_linear_layers():
    with pytest.raises(ValueError) as e:
        lora.inject_lora(tiny(), ["query", "qurey"])
    assert str(e.value) == (
        "LoRA target 'qurey' matches no nn.Linear; the model's linear layers are: "
        "bert.encoder.layer.*.attention.self.query, bert.encoder.layer.*.attention.self.key, "
        "bert.encoder.layer.*.attention.self.value, bert.encoder.layer.*.attention.output.dense, "
        "bert.encoder.layer.*.intermediate.dense, bert.encoder.layer.*.output.dense, bert.pooler.dense, classifier")
    with pytest.raises(ValueError, match="'LayerNorm' matches no nn.Linear"):
        lora.inject_lora(tiny(), ["LayerNorm"])  # a module, but not a linear one
    with pytest.raises(ValueError, match="trainable module 'head' matches no module; modules with parameters are: .*classifier"):
        lora.inject_lora(tiny(), trainable=["head"])


def test_bad_arguments_and_double_injection():
    for kw, msg in [(dict(r=0), "rank r must be a positive integer"), (dict(alpha=0), "alpha must be a positive"),
                    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"), (dict(targets=[]), "targets are empty")]:
        with pytest.raises(ValueError, match=msg):
            lora.inject_lora(tiny(), **kw)
    m = tiny()
    lora.inject_lora(m)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        lora.inject_lora(m)
    with pytest.raises(TypeError, match="wraps an nn.Linear, got LayerNorm"):
        lora.LoRALinear(nn.LayerNorm(4))


def test_trainable_count_of_a_minilm_sized_model():
    torch.manual_seed(0)
    m = model.BertForSequenceClassification(model.BertConfig(hidden_size=384, num_hidden_layers=12,
                                                             num_attention_heads=12, intermediate_size=1536))
    plain = model.count_parameters(m)[0]
    assert plain == 33_360_770
    lora.inject_lora(m, r=8, alpha=16)
    # 12 layers x 3 projections x r (384 + 384) = 221,184 LoRA numbers, + the head 384 x 2 + 2 = 770.
    # peft's print_trainable_parameters says "of 33,582,724": it also counts the frozen original
    # of the head it copies for modules_to_save (770 more). Here the head is trained in place.
    assert model.count_parameters(m) == (33_360_770 + 221_184, 221_954)
    assert lora.lora_report(m) == ("LoRA r=8 alpha=16 on 36 layers (query, key, value) + classifier: "
                                   "trainable 221,954 of 33,581,954 (0.66%)")


# -----------------------------------------------------------------------------
# Equal to the reference library


@pytest.mark.parametrize("name", ["qkv", "wide"])
def test_peft_adapter_gives_peft_logits(name):
    m = tiny()
    cfg = lora.load_adapter(m, LORA / name, base_model=BASE)
    assert m.lora_config["modules_to_save"] == ["classifier"]  # peft's extra 'score' is not in BERT
    assert len(lora.lora_layers(m)) == {"qkv": 9, "wide": 15}[name]
    assert cfg["r"] == m.lora_config["r"] == {"qkv": 4, "wide": 2}[name]
    ref = REF[f"logits_{name}"]
    assert (logits(m) - ref).abs().max() < 1e-5
    assert not torch.allclose(logits(tiny()), ref, atol=1e-2)  # the adapter matters
    lora.merge_all(m)
    assert (logits(m) - ref).abs().max() < 1e-5


def test_merge_equals_peft_merge_and_unload():
    m = tiny()
    lora.load_adapter(m, LORA / "qkv", base_model=BASE)
    merged = {k[len("merged."):]: v for k, v in REF.items() if k.startswith("merged.")}
    assert len(merged) == 9
    state = lora.merged_state_dict(m)  # without touching the model
    assert not any(layer.merged for _, layer in lora.lora_layers(m))
    assert list(state) == list(tiny().state_dict())  # the plain model's keys, in its order
    assert lora.merge_all(m) == 9
    for key, ref in merged.items():
        assert (state[key] - ref).abs().max() < 1e-6, key
        assert (m.get_parameter(key) - ref).abs().max() < 1e-6, key
    # the merged model's own state dict, minus the LoRA tensors, is the same export
    assert all(torch.equal(state[k], v) for k, v in lora.merged_state_dict(m).items())


def test_merged_export_loads_as_a_plain_model(tmp_path):
    m = tiny()
    lora.load_adapter(m, LORA / "qkv", base_model=BASE)
    pretrained.save_pretrained(m, tmp_path, state_dict=lora.merged_state_dict(m))
    assert set(load_file(tmp_path / "model.safetensors")) == set(tiny().state_dict())
    plain = pretrained.from_pretrained(tmp_path, verbose=False).eval()
    assert not lora.lora_layers(plain)
    assert (logits(plain) - REF["logits_qkv"]).abs().max() < 1e-5


# -----------------------------------------------------------------------------
# Adapter files


def test_adapter_round_trip_in_peft_layout(tmp_path):
    m = tiny()
    lora.inject_lora(m, r=4, alpha=6, dropout=0.1)
    randomise(m)
    lora.save_adapter(m, tmp_path, base_model=BASE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    # the same tensor names and shapes as the adapter peft saved for the same settings
    ours, peft = load_file(tmp_path / "adapter_model.safetensors"), load_file(LORA / "qkv" / "adapter_model.safetensors")
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in peft.items()}
    assert "base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight" in ours
    assert "base_model.model.classifier.weight" in ours
    cfg = json.loads((tmp_path / "adapter_config.json").read_text())
    assert cfg == {"peft_type": "LORA", "task_type": "SEQ_CLS", "base_model_name_or_path": BASE, "r": 4,
                   "lora_alpha": 6, "lora_dropout": 0.1, "target_modules": ["query", "key", "value"],
                   "modules_to_save": ["classifier"], "bias": "none", "fan_in_fan_out": False,
                   "use_rslora": False, "use_dora": False, "init_lora_weights": True, "inference_mode": True}
    peft_cfg = json.loads((LORA / "qkv" / "adapter_config.json").read_text())
    # peft writes target_modules in set order, and modules_to_save with its own 'score' added
    assert sorted(peft_cfg["target_modules"]) == sorted(cfg["target_modules"])
    assert peft_cfg["modules_to_save"] == ["classifier", "score"]
    same = set(cfg) - {"target_modules", "modules_to_save"}
    assert {k: peft_cfg[k] for k in same} == {k: cfg[k] for k in same}

    fresh = tiny()
    lora.load_adapter(fresh, tmp_path, base_model=BASE)
    assert torch.equal(logits(fresh), logits(m))
    assert not torch.equal(logits(fresh), logits(tiny()))
    # onto a model that already has the same LoRA layers
    again = tiny()
    lora.inject_lora(again, r=4, alpha=6, dropout=0.0)  # dropout may differ
    lora.load_adapter(again, tmp_path, base_model=str(TINY.resolve()))  # another spelling of the folder
    assert torch.equal(logits(again), logits(m))


def test_adapter_on_wrong_base_or_targets_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"adapter_config.json: adapter was trained on base model "
                                         r"'tests/fixtures/tiny-bert', not 'bert-base-uncased'"):
        lora.load_adapter(tiny(), LORA / "qkv", base_model="bert-base-uncased")
    m = tiny()
    lora.inject_lora(m, ["query", "value"], r=8)
    with pytest.raises(ValueError) as e:
        lora.load_adapter(m, LORA / "qkv", base_model=BASE)
    assert str(e.value) == (f"{LORA / 'qkv' / 'adapter_config.json'}: adapter does not fit the model's LoRA layers "
                            "(r: adapter 4, model 8; lora_alpha: adapter 6, model 16; "
                            "target_modules: adapter ['key', 'query', 'value'], model ['query', 'value'])")
    # a base model of another size under the same name: the shapes tell
    other = model.BertForSequenceClassification(model.BertConfig(vocab_size=909, hidden_size=16, num_hidden_layers=3,
                                                                 num_attention_heads=4, intermediate_size=32))
    with pytest.raises(ValueError, match=r"'base_model.model.bert.encoder.layer.0.attention.self.key.lora_A.weight' "
                                         r"has shape \(4, 32\), the model's is \(4, 16\) \(a different base model\?\)"):
        lora.load_adapter(other, LORA / "qkv", base_model=BASE)
    # a merged model cannot take new LoRA values
    m = tiny()
    lora.load_adapter(m, LORA / "qkv", base_model=BASE)
    lora.merge_all(m)
    with pytest.raises(ValueError, match="merged; unmerge_all"):
        lora.load_adapter(m, LORA / "qkv", base_model=BASE)


def copy_adapter(src, dst, edit_config=None, edit_tensors=None):
    dst.mkdir()
    cfg = json.loads((src / "adapter_config.json").read_text())
    if edit_config:
        edit_config(cfg)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    tensors = load_file(src / "adapter_model.safetensors")
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, dst / "adapter_model.safetensors")
    return dst


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.pop("r"), "missing field 'r'; expected a positive integer"),
    (lambda c: c.update(peft_type="IA3"), "field 'peft_type' is 'IA3'; expected 'LORA'"),
    (lambda c: c.update(lora_alpha="8"), "field 'lora_alpha' is '8'; expected a positive number"),
    (lambda c: c.update(target_modules=".*query"), "field 'target_modules' is '.*query'; expected a non-empty list"),
    (lambda c: c.update(use_dora=True), "field 'use_dora' is True; not supported by nanobert's LoRA"),
    (lambda c: c.update(rank_pattern={"query": 8}), "field 'rank_pattern' is {'query': 8}; not supported"),
    (lambda c: c.update(bias="all"), "field 'bias' is 'all'; only 'none' is supported"),
])
def test_bad_adapter_config(tmp_path, edit, message):
    folder = copy_adapter(LORA / "qkv", tmp_path / "a", edit_config=edit)
    with pytest.raises(ValueError, match=f"adapter_config.json: {message}".replace("(", r"\(").replace("[", r"\[").replace("{", r"\{").replace(".*", r"\.\*")):
        lora.load_adapter(tiny(), folder, base_model=BASE)


def test_bad_adapter_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json: not found; expected an adapter folder"):
        lora.read_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json: not valid JSON"):
        lora.read_adapter_config(tmp_path)

    key = "base_model.model.bert.encoder.layer.1.attention.self.key.lora_B.weight"
    folder = copy_adapter(LORA / "qkv", tmp_path / "missing", edit_tensors=lambda t: t.pop(key))
    with pytest.raises(ValueError, match=f"adapter_model.safetensors: missing 1 tensors, e.g. '{key}'"):
        lora.load_adapter(tiny(), folder, base_model=BASE)
    folder = copy_adapter(LORA / "qkv", tmp_path / "extra", edit_tensors=lambda t: t.update({"bert.x": torch.zeros(1)}))
    with pytest.raises(ValueError, match="adapter_model.safetensors: unexpected tensor 'bert.x'"):
        lora.load_adapter(tiny(), folder, base_model=BASE)
    folder = copy_adapter(LORA / "qkv", tmp_path / "corrupt")
    (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="adapter_model.safetensors: not a readable safetensors file"):
        lora.load_adapter(tiny(), folder, base_model=BASE)
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="adapter_model.safetensors: not found"):
        lora.load_adapter(tiny(), folder, base_model=BASE)


def test_save_without_lora_fails_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="no LoRA layers; call inject_lora"):
        lora.save_adapter(tiny(), tmp_path / "a", base_model=BASE)
    assert not (tmp_path / "a" / "adapter_model.safetensors").exists()
