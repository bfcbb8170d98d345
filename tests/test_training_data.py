"""Tests for training_data.py: what one run trains and validates on."""

import pytest
from conftest import ROOT, TINY, common, run

import runs as R


def test_augment_adds_template_texts_to_the_training_part_only(toy, toy2, tmp_path):
    import augment

    out = tmp_path / "aug"
    run("teacher", "--model", TINY, "--label-column", "toxic,hate", "--augment", ROOT / "suites" / "augment.toml",
        *common(toy2, out, "--epochs", 1, "--max-train", 40))
    info = R.read_info(out)
    added = len(augment.load_augment(ROOT / "suites" / "augment.toml", seed=0))
    assert info["train_size"] == 40 + added and info["val_size"] == 24  # validation and test untouched
    with pytest.raises(SystemExit) as e:  # one class per text: no toxic / hate labels to add to
        run("teacher", "--model", TINY, "--augment", ROOT / "suites" / "augment.toml", *common(toy, tmp_path / "single" / "x"))
    assert "--augment" in str(e.value) and "expected a two-question dataset" in str(e.value)


def test_perturb_adds_misspelt_copies_of_real_training_texts_only(toy2, tmp_path):
    out = tmp_path / "noisy"
    run("teacher", "--model", TINY, "--label-column", "toxic,hate", "--perturb", 0.5, *common(toy2, out, "--epochs", 1, "--max-train", 40))
    info = R.read_info(out)
    assert 30 <= info["train_size"] <= 60 and info["val_size"] == 24  # up to 20 copies; validation untouched
    assert info["perturb"] == 0.5
    with pytest.raises(SystemExit) as e:
        run("teacher", "--model", TINY, "--perturb", 1.5, *common(toy2, tmp_path / "bad"))
    assert "--perturb 1.5: expected a number in [0, 1]" in str(e.value)
