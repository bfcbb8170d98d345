"""Tests for naming.py: what a run is called, which runs are seeds of one model."""

import json
from pathlib import Path

import naming as N
import runs as R


def test_method_labels_and_groups(tmp_path):
    (tmp_path / "t6").mkdir()
    (tmp_path / "t6" / "config.json").write_text(json.dumps({"num_hidden_layers": 6}))
    def student(layers, spec="list", teacher=str(tmp_path / "t6")):
        return {"method": "distill", "teacher_layers": layers, "layers": spec, "teacher": teacher}

    assert N.method_label(student([1, 3, 5])) == "odd" and N.method_label(student([2, 4, 6])) == "even"
    assert N.method_label(student([1, 3], "1,3")) == "layers 1,3"  # not all odd layers of six
    assert N.method_label(student([1, 3], "odd", teacher="/gone")) == "odd"  # teacher moved: its own words
    assert N.method_label(student([1, 2, 12], "1,2,12", teacher="/gone")) == "layers 1,2,12"
    assert N.method_label({"method": "lora"}) == "lora" and N.method_label({"method": "teacher"}) == "teacher"
    assert N.method_label(student([1, 2, 3])) == "bottom" and N.method_label(student([4, 5, 6])) == "top"
    assert N.method_label(student([4, 5, 6], "top", teacher="/gone")) == "top"
    assert N.method_label(student([1, 2, 6], "auto")) == "auto (1,2,6)"
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "run.json").write_text(json.dumps(student([1, 3, 5], "odd")))
    assert N.method_label({"method": "lora", "base": str(tmp_path / "odd")}) == "lora on odd"
    assert N.method_label({"method": "lora", "base": "/gone/even"}) == "lora on even"  # base moved: its folder name
    assert N.method_label({**student([1, 3, 5]), "quantized": "dynamic-int8"}) == "odd int8"
    infos = [{"method": "teacher", "lr": 1e-4, "seed": 0, "run_dir": "a"}, {"method": "teacher", "lr": 3e-4, "seed": 0},
            {"method": "distill", "teacher_layers": [2, 4, 6], "layers": "even", "teacher": "x", "seed": 0},
            {"method": "distill", "teacher_layers": [2, 4, 6], "layers": "even", "teacher": "y", "seed": 1}]
    groups = N.group_runs(infos, ["a", "b", "c", "d"])
    assert [(g["label"], g["names"]) for g in groups] == [
        ("teacher (lr=0.0001)", ["a"]), ("teacher (lr=0.0003)", ["b"]), ("even", ["c", "d"])]
    assert N.run_names([Path("s0/odd"), Path("s1/odd"), Path("s0/lora")]) == ["s0-odd", "s1-odd", "s0-lora"]
    # Seeds of one model group, whatever differs from seed to seed: timings, the teacher's measured
    # ranking, the base or source folder; and a run of an older version without newer fields.
    auto = {"method": "distill", "layers": "auto", "teacher_layers": [1, 3], "importance_texts": 1000}
    lora_on = {"method": "lora", "lora_r": 8, "importance_texts": 1000}
    infos = [{**auto, "seed": 0, "importance_seconds": 3.1, "layer_importance": [0.2, 0.1, 0.3], "teacher": "s0/t"},
            {**auto, "seed": 1, "importance_seconds": 3.3, "layer_importance": [0.25, 0.1, 0.3], "teacher": "s1/t"},
            {**lora_on, "seed": 0, "base": "s0/odd", "model": "s0/odd"}, {**lora_on, "seed": 1, "base": "s1/odd", "model": "s1/odd"},
            {"method": "distill", "layers": "odd", "teacher_layers": [1, 3], "seed": 0},
            {"method": "distill", "layers": "odd", "teacher_layers": [1, 3], "seed": 1, "importance_texts": 1000, "base": None},
            {"method": "teacher", "quantized": "q", "source_run": "s0/teacher", "seed": 0},
            {"method": "teacher", "quantized": "q", "source_run": "s1/teacher", "seed": 1}]
    groups = N.group_runs(infos, list("abcdefgh"))
    assert [g["names"] for g in groups] == [["a", "b"], ["c", "d"], ["e", "f"], ["g", "h"]]
    assert N.model_key({**auto, "importance_texts": 500}) != N.model_key(auto)  # it does matter for auto


def test_seeds_group_on_settings_only(tmp_path):
    a = R.RunInfo({"method": "teacher", "lr": 1e-4, "seed": 0, "threads": 2, "out": "a"}, {"torch": "2.1", "params_total": 5})
    b = R.RunInfo({"method": "teacher", "lr": 1e-4, "seed": 1, "threads": 1, "out": "b"}, {"torch": "2.2", "params_total": 5})
    c = R.RunInfo({"method": "teacher", "lr": 3e-4, "seed": 0}, {})
    assert N.model_key(a) == N.model_key(b) != N.model_key(c)
    int8 = R.RunInfo(a.settings, {"quantized": "nanobert-dynamic-int8"})
    assert N.model_key(int8) != N.model_key(a)
    # The precision a run computed in (what `auto` chose) keeps bf16 and fp32 seeds apart; a run of an
    # older version (a bf16 flag, no precision) groups with the new runs of its precision.
    bf16 = R.RunInfo({**a.settings, "precision": "auto"}, {"precision_chosen": "bf16"})
    fp32 = R.RunInfo({**a.settings, "precision": "auto"}, {"precision_chosen": "fp32"})
    old_fp32, old_bf16 = R.RunInfo({**a.settings, "bf16": False}, {}), R.RunInfo({**a.settings, "bf16": True}, {})
    asked = R.RunInfo({**a.settings, "precision": "fp32"}, {"precision_chosen": "fp32"})
    assert N.model_key(bf16) == N.model_key(old_bf16) != N.model_key(fp32)
    assert N.model_key(old_fp32) == N.model_key(a) == N.model_key(asked) == N.model_key(fp32) != N.model_key(bf16)
    groups = N.group_runs([old_fp32, bf16, asked, old_bf16], list("wxyz"))
    assert [(g["label"], g["names"]) for g in groups] == [("teacher (precision=fp32)", ["w", "y"]),
                                                         ("teacher (precision=bf16)", ["x", "z"])]


def test_labels_stay_unique_when_three_settings_do_not_tell_the_arms_apart():
    base = {"method": "teacher", "data": "davidson", "epochs": 1, "model": "m", "seed": 0}
    infos = [base, {**base, "perturb": 0.3}, {**base, "epochs": 3}, {**base, "data": "hate_speech18"}]
    labels = [g["label"] for g in N.group_runs(infos, list("abcd"))]
    assert len(set(labels)) == 4 and "perturb=0.3" in labels[1]  # the fourth differing setting is shown too
    # A setting added later, at 0 (changes nothing), groups an older run without it with a new one.
    assert N.model_key({**base, "perturb": 0.0}) == N.model_key(base) != N.model_key({**base, "perturb": 0.3})
    # So does calibration at its default (it changes no weight), and the mask rate of a run that does not pretrain.
    assert N.model_key({**base, "calibrate": True, "mask_rate": 0.15}) == N.model_key(base)
    assert N.model_key({**base, "calibrate": False}) != N.model_key(base)
    pretrain = {**base, "method": "pretrain"}
    assert N.model_key({**pretrain, "mask_rate": 0.3}) != N.model_key({**pretrain, "mask_rate": 0.15})


def test_a_folder_in_a_label_is_shown_by_its_name_unless_two_would_read_alike():
    base = {"method": "distill", "data": "davidson", "layers": "odd", "teacher_layers": [1, 3], "seed": 0}
    infos = [base, {**base, "ensemble": "runs/x/teacher-s1,runs/x/teacher-s2"}]
    assert [g["label"] for g in N.group_runs(infos, list("ab"))] == ["odd (ensemble=None)", "odd (ensemble=teacher-s1,teacher-s2)"]
    infos = [{**base, "model": "runs/a/mlm"}, {**base, "model": "runs/b/mlm"}]
    assert [g["label"] for g in N.group_runs(infos, list("ab"))] == ["odd (model=runs/a/mlm)", "odd (model=runs/b/mlm)"]
