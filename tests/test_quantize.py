"""Tests for quantize.py: the int8 model stays close to fp32, its folder round-trips exactly,
it holds int8 tensors (plain safetensors), and bad folders are clear errors."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lora
import pretrained
import quantize as Q
import wordpiece

TINY = Path(__file__).parent / "fixtures" / "tiny-bert"
TEXTS = ["you are awesome", "what a terrible, terrible idea!!", "@user RT http://t.co/x the game starts at 8",
         "ça va? très bien 🙂", "no"]


@pytest.fixture(scope="module")
def fp32():
    return pretrained.from_pretrained(str(TINY), verbose=False).eval()


@pytest.fixture(scope="module")
def batch():
    return wordpiece.encode(wordpiece.load_tokenizer(TINY), TEXTS, 32)


def forward(net, batch):
    with torch.no_grad():
        return net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])


def test_every_linear_layer_is_int8_and_the_rest_is_untouched(fp32):
    q = Q.quantize(fp32)
    names = [n for n, _ in Q.quantized_linears(q)]
    linears = [n for n, m in fp32.named_modules() if isinstance(m, torch.nn.Linear)]
    assert names == linears and len(names) == 3 * 6 + 2  # per layer q, k, v, attn out, ffn in, ffn out; pooler, head
    assert torch.equal(q.bert.embeddings.word_embeddings.weight, fp32.bert.embeddings.word_embeddings.weight)
    assert isinstance(fp32.classifier, torch.nn.Linear)  # the original is left as it was


def test_outputs_stay_close_to_fp32(fp32, batch):
    a, b = forward(fp32, batch), forward(Q.quantize(fp32), batch)
    # Per-row int8 weights carry ~1% error each; through 3 layers the logits move by a few hundredths.
    assert (a.logits - b.logits).abs().max() < 0.05
    assert (a.hidden_states[-1] - b.hidden_states[-1]).abs().max() < 0.1
    cos = torch.nn.functional.cosine_similarity(a.pooled, b.pooled, dim=-1)
    assert cos.min() > 0.999


def test_int8_weights_are_the_rounded_fp32_weights(fp32):
    q = Q.quantize(fp32)
    w = fp32.bert.encoder.layer[1].intermediate.dense.weight
    t = Q.int8_state_dict(q)
    qi, scale = t["bert.encoder.layer.1.intermediate.dense.weight"], t["bert.encoder.layer.1.intermediate.dense.weight_scale"]
    assert qi.dtype == torch.int8 and scale.shape == (w.shape[0],)
    # Symmetric per row: the largest |w| of a row maps to 127, and each weight to the nearest step.
    assert torch.allclose(scale, w.abs().amax(1) / 127.5, rtol=0.01)
    assert ((qi.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


def test_save_and_load_round_trip_exactly(fp32, batch, tmp_path):
    q = Q.quantize(fp32)
    Q.save_quantized(q, tmp_path / "int8", TINY)
    assert sorted(p.name for p in (tmp_path / "int8").iterdir()) == ["config.json", "model-int8.safetensors",
                                                                     "tokenizer_config.json", "vocab.txt"]
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "nanobert-dynamic-int8" and config["num_hidden_layers"] == 3
    assert Q.is_quantized_dir(tmp_path / "int8") and not Q.is_quantized_dir(TINY)
    tensors = load_file(tmp_path / "int8" / "model-int8.safetensors")
    assert tensors["classifier.weight"].dtype == torch.int8 and tensors["bert.embeddings.LayerNorm.weight"].dtype == torch.float32
    back = Q.load_quantized(tmp_path / "int8")
    assert torch.equal(forward(back, batch).logits, forward(q, batch).logits)
    a, b = Q.int8_state_dict(q), Q.int8_state_dict(back)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Smaller on disk: the linear layers at a quarter, the embeddings as they were.
    pretrained.save_pretrained(fp32, tmp_path / "fp32", tokenizer_dir=TINY)
    assert (tmp_path / "int8" / "model-int8.safetensors").stat().st_size < 0.8 * (tmp_path / "fp32" / "model.safetensors").stat().st_size


def test_a_model_with_lora_layers_is_refused(fp32):
    net = pretrained.from_pretrained(str(TINY), verbose=False)
    lora.inject_lora(net, ["query"], r=2)
    with pytest.raises(ValueError, match="still has LoRA layers"):
        Q.quantize(net)


@pytest.fixture
def saved(fp32, tmp_path):
    Q.save_quantized(Q.quantize(fp32), tmp_path / "int8", TINY)
    return tmp_path / "int8"


def edit_weights(folder, change):
    tensors = load_file(folder / Q.WEIGHTS_NAME)
    change(tensors)
    save_file(tensors, folder / Q.WEIGHTS_NAME)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("classifier.weight_scale"), "missing key 'classifier.weight_scale'"),
    (lambda t: t.update(extra=torch.zeros(1)), "unexpected key 'extra'"),
    (lambda t: t.update({"classifier.weight": t["classifier.weight"].float()}), "classifier.weight is torch.float32"),
    (lambda t: t.update({"classifier.weight_scale": torch.ones(5)}), "expected int8 (2, 32) with scales (2,)"),
    (lambda t: t.update({"bert.embeddings.LayerNorm.weight": torch.ones(7)}), "LayerNorm.weight has shape (7,); expected (32,)"),
])
def test_bad_int8_folders_are_clear_errors(saved, change, message):
    edit_weights(saved, change)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Q.load_quantized(saved)


@pytest.mark.parametrize("quantization, method", [({"quant_method": "gptq"}, "'gptq'"), ("int8", "None"), (None, "None")])
def test_unknown_quantization_method(saved, quantization, method):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "quantization_config": quantization}))
    with pytest.raises(ValueError, match=f"quantization_config.quant_method {method}; expected 'nanobert-dynamic-int8'"):
        Q.load_quantized(saved)


def test_a_damaged_file_and_a_wrong_bias(saved):
    edit_weights(saved, lambda t: t.update({"classifier.bias": torch.zeros(3)}))
    with pytest.raises(ValueError, match=r"classifier.bias has shape \(3,\); expected \(2,\)"):
        Q.load_quantized(saved)
    (saved / Q.WEIGHTS_NAME).write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        Q.load_quantized(saved)


def test_the_fp32_loader_refuses_an_int8_folder(saved):
    with pytest.raises(ValueError, match="a quantised model \\('nanobert-dynamic-int8'\\); expected fp32 weights"):
        pretrained.from_pretrained(str(saved), verbose=False)


def test_real_weights_minilm_int8_keeps_the_sentence_vectors():
    # The embedded 6-layer model: [CLS] vectors of the int8 copy point where the fp32 ones do.
    # Measured: cosine 0.979-0.987 after 6 layers (0.9998 after one); the error of 8-bit activations
    # adds up layer by layer. What it costs a classifier is measured on the test sets (README).
    net = pretrained.from_pretrained(pretrained.DEFAULT_MODEL, verbose=False).eval()
    tokenizer = wordpiece.load_tokenizer(pretrained.resolve_model_dir(pretrained.DEFAULT_MODEL))
    batch = wordpiece.encode(tokenizer, TEXTS, 64)
    q = Q.quantize(net)
    a, b = forward(net, batch), forward(q, batch)
    cos = torch.nn.functional.cosine_similarity(a.hidden_states[-1][:, 0], b.hidden_states[-1][:, 0], dim=-1)
    assert cos.min() > 0.97, cos


@pytest.mark.parametrize("seconds, expected", [({"x86": 1.0, "fbgemm": 0.9, "onednn": 0.6}, "onednn"),
                                               ({"x86": 1.0, "onednn": 0.97}, "x86")])  # within the margin: the default
def test_the_fastest_int8_engine_is_measured_and_kept(monkeypatch, tmp_path, seconds, expected):
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path))
    monkeypatch.setattr(Q, "_engine", None)
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "x86"
    monkeypatch.setattr(Q, "time_engines", lambda *a, **k: seconds)
    try:
        assert Q.use_fastest_engine(384, 1536) == expected == torch.backends.quantized.engine
        monkeypatch.setattr(Q, "time_engines", lambda *a, **k: pytest.fail("measured twice in a process"))
        assert Q.use_fastest_engine(32, 64) == expected  # later models: the same engine (weights packed for it)
        monkeypatch.setattr(Q, "_engine", None)
        assert Q.use_fastest_engine(384, 1536) == expected  # a new process: read from the cache folder
    finally:
        torch.backends.quantized.engine = before


def test_the_real_engines_are_timed():
    seconds = Q.time_engines(32, 64, tokens=16, repeats=1)
    assert "x86" in seconds and all(s > 0 for s in seconds.values())
