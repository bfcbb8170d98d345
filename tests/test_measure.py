"""Tests for measure.py: the int8 export measured beside its fp32 source, on conftest.py's tiny runs
(the report's rows, which evaluate_run makes, are tested with the report in test_eval.py)."""

import json

import pytest

import batching
import classifier
import export
import measure
import naming
import runs as runs_module


@pytest.mark.parametrize("name", ["odd", "lora"])
def test_export_int8_is_a_run_close_to_fp32(runs, name, tmp_path):
    out = tmp_path / f"{name}-int8"
    export.export_int8(runs[name], out)
    result = measure.measure_export(runs[name], out, latency_n=5)
    assert runs_module.is_lora_run(out) is False and (out / "summary.json").is_file()
    info = runs_module.read_info(out)
    assert info["quantized"] == "nanobert-dynamic-int8" and info["source_run"] == str(runs[name])
    assert naming.method_label(info) == f"{name} int8"
    # The export decides as its source: the same temperatures and thresholds (run.json), applied to its own logits.
    source = runs_module.read_info(runs[name])
    assert info["temperatures"] == source["temperatures"] and info["thresholds"] == source["thresholds"]
    assert result["int8"]["temperature"] == result["fp32"]["temperature"] == next(iter(source["temperatures"].values()))
    net, _, _ = runs_module.load_run(out)
    assert type(net.classifier).__name__ == "Linear" and net.classifier.__module__.startswith("torch.ao.nn.quantized")
    # Close to the fp32 model on every test text; the speed and size measured beside it. A label
    # can only change where the fp32 probability is that close to the threshold (the toy LoRA run's
    # hug it).
    assert result["max_abs_prob_diff"] < 0.1
    info, fp32 = runs_module.read_info(runs[name]), runs_module.plain_model(runs_module.load_run(runs[name])[0])
    test, _, _ = runs_module.load_test_split(runs[name], info)
    p = classifier.predict_probs(fp32, batching.Loader(test.texts, None, runs_module.load_run(runs[name])[1], 64, 64),
                                 classifier.run_temperatures(fp32, info))[:, 1]
    near = float(((p - runs_module.decision_threshold(info)).abs() <= result["max_abs_prob_diff"]).float().mean())
    assert result["agreement"] >= 1 - near - 1e-9
    # Accuracy can only differ on the texts whose label differs (16 texts: macro-F1 jumps with one).
    assert abs(result["int8"]["accuracy"] - result["fp32"]["accuracy"]) <= 1 - result["agreement"] + 1e-9
    assert result["int8"]["size_bytes"] < result["fp32"]["size_bytes"]
    assert result["fp32"]["sentences_per_s"] > 0 and result["int8"]["latency_p50_ms"] > 0
    assert "| int8 |" in (out / "export.md").read_text() and json.loads((out / "export.json").read_text())["n"] == 16
    with pytest.raises(runs_module.RunError, match="already an int8 model"):
        export.export_int8(out, tmp_path / "again")
    with pytest.raises(runs_module.RunError, match="must not overwrite its own source run"):
        export.export_int8(runs[name], runs[name])
