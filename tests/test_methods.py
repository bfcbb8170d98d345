"""Tests for methods.py: the model each method starts from. A student keeps the layers it is told (or
the ones the teacher needs most), on its teacher's split; LoRA on a base without a pooler keeps the
pooler; LoRA on a trained run trains only its adapters; runs that cannot be built on are refused."""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, common, run
from safetensors.torch import load_file

import export
import methods
import naming
import pretrained
import runs as R


def test_distill_bad_layer_list_is_a_clear_error(toy, teacher_run, capsys):
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", teacher_run, "--layers", "1,9", *common(toy, teacher_run.parent / "bad"))
    assert "layer 9 out of range; the teacher has layers 1..3" in str(e.value)


def test_distill_refuses_a_teacher_on_another_split(toy, teacher_run, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", teacher_run, "--split", tmp_path / "other.json", "--split-seed", 7, *common(toy, tmp_path / "student"))
    assert "the teacher was trained on another split" in str(e.value)


def test_distill_auto_ranks_the_teachers_layers_on_validation(toy, teacher_run, capsys):
    out = teacher_run.parent / "auto"
    run("distill", "--teacher", teacher_run, "--layers", "auto:2", "--importance-texts", 10,
        *common(toy, out, "--epochs", 1, "--lr", 3e-3))
    info = R.read_info(out)
    scores, ranking = info["layer_importance"], info["layer_ranking"]
    assert len(scores) == 3 and sorted(ranking) == [1, 2, 3] and info["importance_n"] == 10
    assert [scores[i - 1] for i in ranking] == sorted(scores, reverse=True)
    assert info["teacher_layers"] == sorted(ranking[:2]) and info["importance_seconds"] >= 0
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert "most important first" in capsys.readouterr().out


def test_lora_on_a_base_without_pooler_keeps_the_pooler_in_the_adapter(toy, tmp_path):
    # bge-small-en ships no pooler. A LoRA adapter that left the freshly drawn pooler out would
    # load as a different model every time (this happened: validation macro-F1 0.94, test 0.57).
    import model as M

    base = tmp_path / "no-pooler"
    base.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (base / name).write_bytes((Path(TINY) / name).read_bytes())
    weights = {k: v for k, v in load_file(Path(TINY) / "model.safetensors").items() if not k.startswith(("bert.pooler.", "classifier."))}
    from safetensors.torch import save_file
    save_file(weights, base / "model.safetensors")
    out = tmp_path / "lora"
    run("lora", "--model", base, *common(toy, out, "--epochs", 1, "--lr", 1e-2))
    assert any(".pooler." in k for k in load_file(out / "adapter_model.safetensors"))
    ids = torch.randint(5, 900, (2, 6))
    logits = []
    for seed in (1, 2):  # a different random state before each load must not matter
        torch.manual_seed(seed)
        net, _, _ = R.load_run(out)
        logits.append(net(ids).logits)
    assert torch.equal(logits[0], logits[1])
    assert M.count_parameters(net)[0] > 0


def test_lora_on_a_student_trains_only_the_adapters(toy, teacher_run, capsys):
    student = teacher_run.parent / "odd-for-lora"
    run("distill", "--teacher", teacher_run, "--layers", "odd", *common(toy, student, "--epochs", 1, "--lr", 3e-3))
    out = teacher_run.parent / "lora-on-student"
    run("lora", "--base", student, "--out", out, "--no-progress", "--epochs", 2, "--lr", 1e-2, "--batch-size", 8)
    info, s = R.read_info(out), R.read_info(student)
    assert info["split_sha256"] == s["split_sha256"] and info["data"] == toy  # the student's data and split
    assert info["base_model"] == str(student.resolve()) and info["lora_trainable"] == ""
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert info["params_trainable"] == sum(v.numel() for v in adapter.values())
    # Everything but the adapters is the student as it was; the adapters did learn.
    net, _, _ = R.load_run(out, merge=False)
    base = load_file(student / "model.safetensors")
    for k, v in net.state_dict().items():
        if "lora_" not in k:
            assert torch.equal(v, base[k]), k
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if ".lora_B." in k)
    assert naming.method_label(info) == "lora on odd"


def test_lora_base_errors(toy, teacher_run, tmp_path):
    with pytest.raises(SystemExit) as e:
        run("lora", "--base", teacher_run, "--model", TINY, "--out", tmp_path / "x", "--no-progress")
    assert "--base and --model both name the model" in str(e.value)
    lora_run = tmp_path / "lora"
    run("lora", "--model", TINY, *common(toy, lora_run, "--epochs", 1, "--split", teacher_run.parent / "split.json"))
    with pytest.raises(SystemExit) as e:
        run("lora", "--base", lora_run, "--out", tmp_path / "y", "--no-progress")
    assert "a LoRA run; expected a run with a full model" in str(e.value)


def test_an_int8_export_or_a_bad_importance_count_is_refused(toy, teacher_run, tmp_path):

    export.export_int8(teacher_run, tmp_path / "teacher-int8")
    for argv in (["distill", "--teacher", tmp_path / "teacher-int8"], ["lora", "--base", tmp_path / "teacher-int8"]):
        with pytest.raises(SystemExit) as e:
            run(*argv, "--out", tmp_path / "x", "--no-progress")
        assert "an int8 export (eval.py export); expected a run with fp32 weights" in str(e.value)
    with pytest.raises(SystemExit) as e:
        run("distill", "--teacher", teacher_run, "--layers", "auto", "--importance-texts", 0, "--out", tmp_path / "y", "--no-progress")
    assert "--importance-texts 0: expected at least 1 validation text" in str(e.value)
    with pytest.raises(SystemExit) as e:  # refused before any measuring
        run("distill", "--teacher", teacher_run, "--layers", "auto:9", "--out", tmp_path / "z", "--no-progress")
    assert "auto:K with K in 1..3" in str(e.value)


def test_set_dropout_reaches_every_dropout_of_the_model():
    net = pretrained.from_pretrained(TINY, verbose=False)
    methods.set_dropout(net, 0.0)
    dropouts = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)
    assert all(m.dropout_p == 0.0 for m in net.modules() if hasattr(m, "dropout_p"))
    net.train()
    ids = torch.randint(5, 900, (2, 6))
    assert torch.equal(net(ids).logits, net(ids).logits)  # no dropout left: training mode is deterministic


def test_distill_from_an_ensemble_of_teachers(toy, teacher_run, tmp_path, capsys):
    other = tmp_path / "teacher-s1"  # the same teacher, another seed, on the same split
    run("teacher", "--model", TINY, "--seed", 1, "--split", teacher_run.parent / "split.json",
        *common(toy, other, "--epochs", 1, "--lr", 3e-3))
    out = tmp_path / "student"
    run("distill", "--teacher", teacher_run, "--ensemble", other, "--split", teacher_run.parent / "split.json",
        *common(toy, out, "--epochs", 1, "--lr", 3e-3))
    info = R.read_info(out)
    assert info.settings["ensemble"] == str(other) and info["teacher_layers"] == [1, 3]
    assert info["ensemble_sha256"] == methods.files.sha256_file(R.weights_file(other))
    assert f"the mean of it and `{other}` (an ensemble teacher)" in (out / "README.md").read_text()  # the model card
    with pytest.raises(SystemExit) as e:  # the teacher itself is no second opinion
        run("distill", "--teacher", teacher_run, "--ensemble", teacher_run, *common(toy, tmp_path / "bad"))
    assert "that is --teacher itself" in str(e.value)
    run("teacher", "--model", TINY, "--split", tmp_path / "other.json", "--split-seed", 7,
        *common(toy, tmp_path / "elsewhere", "--epochs", 1))
    with pytest.raises(SystemExit) as e:  # another split's teacher is refused
        run("distill", "--teacher", teacher_run, "--ensemble", tmp_path / "elsewhere", *common(toy, tmp_path / "bad2"))
    assert "the teacher was trained on another split" in str(e.value)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad2").exists()
