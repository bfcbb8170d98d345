"""machine.py: what the CPU says it has, the measurements of the model's own work, and their cache.
The choice of precision made from them: tests/test_precision.py."""

import json

import pytest
import torch

import fast
import machine
import model


def test_cpuinfo_is_read(tmp_path):
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512_bf16 amx_tile\n")
    assert machine.cpu_flags(tmp_path / "cpuinfo") == {"fpu", "avx512_bf16", "amx_tile"}
    assert machine.cpu_model(tmp_path / "cpuinfo") == "Some CPU"
    assert machine.cpu_flags(tmp_path / "missing") is None and machine.cpu_model(tmp_path / "missing")


def test_the_machine_is_described():
    m = machine.info()
    assert m["threads"] == torch.get_num_threads() and m["torch"] == torch.__version__ and m["cpu"]
    line = machine.describe({**m, "units": ["AMX-BF16", "AVX-512 VNNI"]})
    assert "AMX-BF16 AVX-512 VNNI" in line and f"{m['threads']} threads" in line and m["torch"] in line
    assert "no AMX, AVX-512 BF16 or VNNI" in machine.describe({**m, "units": []})


def test_a_measurement_is_kept_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path))
    calls = []

    def measure():
        calls.append(1)
        return {"x": 1.5}

    first = machine.cached("thing", {"shapes": [1, 2]}, measure)
    again = machine.cached("thing", {"shapes": [1, 2]}, measure)
    assert len(calls) == 1 and first["x"] == again["x"] == 1.5 and not first["cached"] and again["cached"]
    saved = json.loads((tmp_path / "machine").joinpath(first["cache"].rsplit("/", 1)[1]).read_text())
    assert saved["key"]["shapes"] == [1, 2] and saved["key"]["torch"] == torch.__version__ and saved["result"] == {"x": 1.5}
    machine.cached("thing", {"shapes": [1, 3]}, measure)  # another key: measured
    assert len(calls) == 2


def test_the_real_probe_times_both_precisions():
    seconds = machine.probe_matmuls(64, 256, tokens=128, repeats=1)
    assert set(seconds) == {"fp32", "bf16"} and all(0 < v < 10 for v in seconds.values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_batch_size_is_measured_on_a_layer(tmp_path, monkeypatch, dtype):
    monkeypatch.setenv("NANOBERT_CACHE", str(tmp_path))
    config = model.BertConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, num_hidden_layers=1)
    net = fast.prepare(model.BertForSequenceClassification(config).eval(), dtype)
    layer = net.bert.encoder.layer[0]
    seconds = machine.time_batch_sizes(layer, 32, dtype, sizes=(2, 4), tokens=8, repeats=1)
    assert set(seconds) == {2, 4} and all(s > 0 for s in seconds.values())
    # The fastest per text wins, the smaller within 3% of it.
    monkeypatch.setattr(machine, "time_batch_sizes", lambda *a, **k: {16: 1.0, 32: 0.8, 64: 0.79, 128: 0.9})
    chosen = machine.best_batch_size(layer, 32, dtype, {"layers": 1})
    assert chosen["batch_size"] == 32 and set(chosen["per_text_ms"]) == {"16", "32", "64", "128"}
    assert machine.best_batch_size(layer, 32, dtype, {"layers": 1})["cached"]
