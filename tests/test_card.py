"""Tests for card.py: the model card in every run folder train.py writes (conftest.py's tiny runs),
and the card of a two-label model trained on Davidson, with its scores per label and the data's limitation."""

import runs as runs_module
import tables
from card import LIMITATIONS, model_card


def test_every_run_folder_has_a_model_card(runs):
    card = (runs["teacher"] / "README.md").read_text()
    info = runs_module.read_info(runs["teacher"])
    assert card.startswith("# teacher: teacher") and f"{info['test']['n']} texts" in card
    assert f"macro-F1 {tables.fmt_num(info['test']['macro_f1'])}" in card and "Classifier.from_run" in card
    assert info["split_sha256"][:12] in card and "Intended use and limitations" in card
    student = (runs["odd"] / "README.md").read_text()
    assert "# odd: odd" in student and "layers [1, 3] of the teacher" in student


def test_a_two_label_card_has_a_row_per_label_and_says_what_the_data_gets_wrong():
    info = runs_module.RunInfo(
        {"method": "teacher", "model": "bert-base-uncased", "data": "davidson+hate_speech18", "split": "split.json", "seed": 0},
        {"id2label": {"0": "toxic", "1": "hate"}, "split_sha256": "ab" * 32, "params_total": 1000, "params_trainable": 1000,
         "test": {"n": 10, "labels": {"toxic": {"n": 8, "macro_f1": 0.75, "threshold": 0.4},
                                      "hate": {"n": 10, "macro_f1": 0.5, "threshold": 0.625}}}})
    card = model_card(info, {"best_epoch": 2, "best_val_macro_f1": 0.8, "wall_seconds": 30.0}, name="both")
    assert card.startswith("# both: teacher") and "| labels | toxic, hate |" in card
    assert "| test, toxic (8 texts) | macro-F1 0.7500 at threshold 0.400 |" in card
    assert "| test, hate (10 texts) | macro-F1 0.5000 at threshold 0.625 |" in card
    assert "| best epoch | 2 (validation macro-F1 0.8000); 30.0 s of training |" in card
    assert f"- {LIMITATIONS['davidson']}" in card and f"- {LIMITATIONS['hate_speech18']}" in card


def test_a_card_gives_the_test_scores_with_their_intervals_and_how_the_run_decides():
    def card_of(test, **results):
        info = runs_module.RunInfo({"method": "teacher", "model": "m", "data": "hate_speech18", "split": "s.json", "seed": 0},
                                   {"id2label": {"0": "noHate", "1": "hate"}, "split_sha256": "ab" * 32, "params_total": 10,
                                    "params_trainable": 10, "test": test, **results})
        return model_card(info, name="t")
    test = {"n": 40, "accuracy": 0.9, "macro_f1": 0.8, "threshold": 0.35, "intervals": {"accuracy": [0.85, 0.95], "macro_f1": [0.7, 0.88]},
            "bootstrap": {"clusters_of": "authors", "clusters": 12, "resamples": 1000}}
    card = card_of(test)
    assert "| test (40 texts) | accuracy 0.9000 [0.8500, 0.9500], macro-F1 0.8000 [0.7000, 0.8800]" in card
    assert "(precision/recall/F1 of *hate*) at threshold 0.350 (chosen on validation) |" in card
    assert "| intervals | in brackets: 95% cluster bootstrap over 12 authors (40 test texts), 1,000 resamples; one seed" in card
    # A run of an earlier version: no threshold (argmax) and no intervals, and the card says only what it has.
    old = card_of({"n": 40, "accuracy": 0.9, "macro_f1": 0.8})
    assert "| test (40 texts) | accuracy 0.9000, macro-F1 0.8000 (precision/recall/F1 of *hate*) at the most probable class |" in old
    assert "| intervals |" not in old


def test_a_card_states_the_temperatures_and_thresholds_and_what_transformers_does_not_apply(runs):
    info = runs_module.read_info(runs["teacher"])
    card = (runs["teacher"] / "README.md").read_text()
    t, threshold, ece = info["temperatures"]["toxic"], info["thresholds"]["toxic"], info["calibration"]["validation_ece"]["toxic"]
    assert f"| calibration | temperatures fitted on validation (T = {t:.3f}, dividing each logit of the softmax); expected calibration error (15 bins), " \
           f"toxic: validation {tables.fmt_num(ece['before'])} → {tables.fmt_num(ece['after'])}, test " \
           f"{tables.fmt_num(info['test']['ece'])} |" in card
    assert f"the temperatures (T = {t:.3f}, dividing each logit of the softmax) and the thresholds (toxic {threshold:.3f})" in card
    assert "`transformers.pipeline` on this folder applies neither: it returns the raw softmax" in card
    # A run made before calibration: nothing to state but that.
    older = runs_module.RunInfo(info.settings, {k: v for k, v in info.results.items() if k not in ("temperatures", "calibration")})
    text = model_card(older, name="older")
    assert "| calibration | not calibrated (a run made before calibration)" in text and "the temperatures (none: T = 1" in text
