"""Tests for integrated gradients (explain.py), Classifier.explain and `eval.py explain`: completeness
(the scores add up to the logit's change, and closer as the steps grow), the model-randomisation
sanity check (Adebayo et al. 2018), the word that decides a toy text coming out on top, words from
word pieces, and every kind of run (teacher, student, LoRA merged or not, int8 through its source)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import NEUTRAL, ROOT

import classifier
import explain
import export
import precision
import runs as R

TEXTS = ["you are bad and the day was good", "the people there love it, great", "what a terrible thing to say",
         "they said it was bad for them", "your day will be great", "Unbelievably bad!! (said he)"]


@pytest.fixture(scope="module")
def two_label(two_label_run):
    return two_label_run


@pytest.fixture(scope="module")
def int8(runs, tmp_path_factory):
    return export.export_int8(runs["teacher"], tmp_path_factory.mktemp("int8") / "teacher-int8")


def plain(run_dir, merge=True):
    net, tokenizer, info = R.load_run(run_dir, merge=merge)
    return explain.plain_copy(net), tokenizer


def rank_correlation(a, b):
    """Spearman's rho, by hand: the Pearson correlation of the ranks (ties get their mean rank)."""

    def ranks(x):
        x = np.asarray(x, dtype=float)
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x))
        for value in np.unique(x):  # ties: each gets the mean of the ranks they share
            r[x == value] = r[x == value].mean()
        return r

    ra, rb = ranks(a) - ranks(a).mean(), ranks(b) - ranks(b).mean()
    return float((ra * rb).sum() / np.sqrt((ra * ra).sum() * (rb * rb).sum()))


def test_rank_correlation_by_hand():
    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 3, 4], [1, 100, 2, 3]) == pytest.approx(0.4)  # a monotone map leaves ranks alone
    assert rank_correlation([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)  # a tie (scipy's value)


def test_path_points_integrate_a_line_and_a_curve():
    for rule in explain.RULES:
        a, w = explain.path_points(8, rule)
        assert float(w.sum()) == pytest.approx(1.0) and float(a.max()) == 1.0
    a, w = explain.path_points(8, "trapezoid")
    assert float((w * a).sum()) == pytest.approx(0.5)  # exact on a straight line
    errors = {rule: abs(float((w * a**2).sum()) - 1 / 3) for rule, (a, w) in
              ((r, explain.path_points(8, r)) for r in explain.RULES)}
    assert errors["trapezoid"] < errors["riemann"] / 5  # 1/m^2 against 1/m
    with pytest.raises(ValueError, match="steps 0: expected a number of at least 1"):
        explain.path_points(0)
    with pytest.raises(ValueError, match="rule 'simpson': expected one of trapezoid, riemann"):
        explain.path_points(4, "simpson")


@pytest.mark.parametrize("kind", ["teacher", "odd", "lora", "two-label"])
def test_completeness_at_the_default_steps(runs, two_label, kind):
    net, tokenizer = plain(two_label if kind == "two-label" else runs[kind])
    for result in explain.explain(net, tokenizer, TEXTS):
        for label, r in result["labels"].items():
            pieces = sum(p["score"] for p in r["pieces"])
            assert pieces == pytest.approx(r["attributed"], abs=1e-5) == pytest.approx(sum(w["score"] for w in r["words"]), abs=1e-5)
            assert r["change"] == pytest.approx(r["logit"] - r["baseline_logit"])
            # The raw (unrescaled) scores add up to the logit's change within max(1% of it, 0.01).
            assert abs(r["attributed"] - r["change"]) <= max(0.01 * abs(r["change"]), 0.01), (kind, label, r["error"], r["change"])
            assert explain.completeness_ok(r)


@pytest.mark.parametrize("rule", explain.RULES)
def test_the_error_shrinks_as_the_steps_grow(runs, rule):
    net, tokenizer = plain(runs["teacher"])
    errors = []
    for steps in (1, 4, 16, 64):
        results = explain.explain(net, tokenizer, TEXTS[:3], steps=steps, rule=rule, tolerance=None)
        errors.append(sum(abs(r["error"]) for res in results for r in res["labels"].values()))
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 20, errors
    one = explain.explain(net, tokenizer, TEXTS[:3], steps=1, rule=rule, tolerance=None)
    assert not all(explain.completeness_ok(r) for res in one for r in res["labels"].values())  # the check can fail


@pytest.mark.parametrize("rule", explain.RULES)
def test_too_few_steps_are_doubled_until_the_scores_add_up(runs, rule):
    net, tokenizer = plain(runs["teacher"])
    for text, result in zip(TEXTS[:3], explain.explain(net, tokenizer, TEXTS[:3], steps=1, rule=rule), strict=True):
        assert result["steps"] > 1 and all(explain.completeness_ok(r) for r in result["labels"].values())
        # Doubling keeps the points computed and adds the midpoints: the same sum as that many steps at once.
        [again] = explain.explain(net, tokenizer, [text], steps=result["steps"], rule=rule, tolerance=None)
        for label, r in result["labels"].items():
            assert [p["score"] for p in r["pieces"]] == pytest.approx([p["score"] for p in again["labels"][label]["pieces"]], abs=1e-5)
    [capped] = explain.explain(net, tokenizer, TEXTS[:1], steps=1, max_steps=2, rule=rule)
    assert capped["steps"] == 2  # max_steps: no further, and the answer's error says how far off it is


def test_a_zero_baseline_is_complete_too(runs):
    net, tokenizer = plain(runs["teacher"])
    [pad], [zero] = explain.explain(net, tokenizer, TEXTS[:1]), explain.explain(net, tokenizer, TEXTS[:1], baseline="zero")
    assert all(explain.completeness_ok(r) for r in zero["labels"].values())
    assert zero["labels"]["toxic"]["baseline_logit"] != pad["labels"]["toxic"]["baseline_logit"]
    with pytest.raises(ValueError, match="baseline 'mean': expected one of pad, zero"):
        explain.explain(net, tokenizer, TEXTS[:1], baseline="mean")


def randomised(net, seed):
    """The model with every weight drawn again as BERT initialises it (the model-randomisation test)."""
    torch.manual_seed(seed)
    return net.apply(net._init_weights).eval()


@pytest.mark.parametrize("kind", ["teacher", "odd", "lora", "unmerged-lora", "int8", "two-label"])
def test_a_randomised_model_gives_other_attributions(runs, two_label, int8, kind):
    if kind == "int8":
        net, tokenizer, info = R.load_run(int8)
        net, note = explain.explaining_model(net, info)
    else:
        net, tokenizer = plain(two_label if kind == "two-label" else runs[kind.removeprefix("unmerged-")], merge=kind != "unmerged-lora")
    labels = ["toxic", "hate"] if kind == "two-label" else ["toxic"]
    trained = explain.explain(net, tokenizer, TEXTS)
    rhos = []
    for seed in range(3):
        other = explain.explain(randomised(explain.plain_copy(net), seed), tokenizer, TEXTS)
        for t, o in zip(trained, other, strict=True):
            for label in labels:
                a = [p["score"] for p in t["labels"][label]["pieces"]]
                b = [p["score"] for p in o["labels"][label]["pieces"]]
                rhos.append(rank_correlation(a, b))
    assert np.mean(rhos) < 0.5, (kind, np.mean(rhos))
    # ... where the trained model against itself is 1: the measure can see agreement.
    again = explain.explain(net, tokenizer, TEXTS[:1])[0]["labels"][labels[0]]["pieces"]
    assert rank_correlation([p["score"] for p in again], [p["score"] for p in trained[0]["labels"][labels[0]]["pieces"]]) > 0.99


def template(word, seed):
    rng = np.random.default_rng(seed)
    words = list(rng.choice(NEUTRAL, 6, replace=False)) + [word]
    rng.shuffle(words)
    return " ".join(words)


@pytest.mark.parametrize("kind,label,word,sign", [("teacher", "toxic", "bad", 1), ("teacher", "toxic", "terrible", 1),
                                                  ("odd", "toxic", "bad", 1), ("teacher", "ok", "bad", -1),
                                                  ("two-label", "toxic", "idiot", 1), ("two-label", "hate", "vermin", 1)])
def test_the_word_that_decides_gets_the_largest_attribution(runs, two_label, kind, label, word, sign):
    # The toy models say "ok" unless a bad word is there (the [PAD] baseline is "ok" already): for "ok"
    # the deciding word is the one that pulls hardest the other way.
    net, tokenizer = plain(two_label if kind == "two-label" else runs[kind])
    for seed in range(5):
        text = template(word, seed)
        words = explain.explain(net, tokenizer, [text])[0]["labels"][label]["words"]
        top = max(words, key=lambda w: sign * w["score"])
        assert top["text"] == word and text[top["start"]:top["end"]] == word, (text, words)


def test_words_are_spans_of_the_text_and_sums_of_their_pieces(runs):
    net, tokenizer = plain(runs["teacher"])
    text = "Unbelievably bad!! (said he)"
    [result] = explain.explain(net, tokenizer, [text])
    r = result["labels"]["toxic"]
    assert [w["text"] for w in r["words"]] == ["Unbelievably", "bad", "!", "!", "(", "said", "he", ")"]
    for w in r["words"]:
        assert text[w["start"]:w["end"]] == w["text"]
        inside = [p["score"] for p in r["pieces"] if w["start"] <= p["start"] and p["end"] <= w["end"]]
        assert w["score"] == pytest.approx(sum(inside), abs=1e-6)
    assert len(r["pieces"]) > len(r["words"])  # the tiny vocabulary cuts "Unbelievably" into pieces
    assert result["tokens"] == len(r["pieces"]) + 2 and not result["cut"]


def test_a_long_text_is_cut_as_the_model_reads_it(runs):
    net, tokenizer = plain(runs["teacher"])
    text = "you are bad " * 30
    [result] = explain.explain(net, tokenizer, [text], max_length=16)
    r = result["labels"]["toxic"]
    assert result["cut"] and result["tokens"] == 16 and len(r["words"]) == 14 and explain.completeness_ok(r)


def test_lora_merged_or_not_and_the_fast_path_give_the_same_scores(runs):
    ids = torch.tensor(R.load_run(runs["lora"])[1].encode(TEXTS[0]).ids)
    merged = explain.integrated_gradients(plain(runs["lora"])[0], ids, steps=16)
    unmerged_net = R.load_run(runs["lora"], merge=False)[0].requires_grad_(False)
    unmerged = explain.integrated_gradients(unmerged_net, ids, steps=16)  # LoRA layers, adapters not folded in
    fast = precision.prepare(R.load_run(runs["lora"])[0], precision.choose("fp32", "cpu"), inference=True)
    on_fast = explain.integrated_gradients(fast, ids, steps=16)
    for other in (unmerged, on_fast):
        for a, b in zip(merged, other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_an_int8_run_is_explained_through_its_fp32_source(runs, int8, tmp_path):
    net, tokenizer, info = R.load_run(int8)
    source, note = explain.explaining_model(net, info)
    assert note == f"an int8 run: explained through its fp32 source run {runs['teacher']}"
    want = explain.explain(plain(runs["teacher"])[0], tokenizer, TEXTS[:1])
    assert explain.explain(source, tokenizer, TEXTS[:1]) == want
    clf = classifier.Classifier.from_run(int8, device="cpu")
    [result] = clf.explain(TEXTS[:1])
    assert result["note"] == note and result["attributions"] == {k: v for k, v in want[0]["labels"].items()}
    # Without the source run: a one-line error that says what is missing.
    moved = tmp_path / "teacher-int8"
    shutil.copytree(int8, moved)
    info = R.read_info(moved)
    info.results["source_run"] = str(tmp_path / "gone")
    R.write_info(moved, info)
    with pytest.raises(R.RunError, match=r"explained through its fp32 source run .*gone, which is not there") as e:
        classifier.Classifier.from_run(moved, device="cpu").explain(["you"])
    assert "\n" not in str(e.value)


def test_classifier_explain_answers_with_the_prediction(runs, two_label):
    for run_dir in (runs["odd"], two_label):
        clf = classifier.Classifier.from_run(run_dir, device="cpu")
        results = clf.explain(TEXTS[:2], steps=32)
        for result, predicted in zip(results, clf.predict(TEXTS[:2]), strict=True):
            assert {k: result[k] for k in predicted} == predicted
            assert list(result["attributions"]) == clf.labels and result["method"] == {
                "name": "integrated gradients", "steps": 32, "rule": "trapezoid", "baseline": "pad", "tolerance": 0.01,
                "max_steps": 1024}
            assert result["steps"] >= 32
            assert result["note"] is None
            for r in result["attributions"].values():
                assert explain.completeness_ok(r) and {"text", "start", "end", "score"} == set(r["words"][0])
    assert clf.explain([]) == []


def eval_cli(*argv):
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), "explain", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_eval_explain_prints_a_line_per_word_and_json(runs, int8):
    done = eval_cli("--run", runs["teacher"], "--steps", 32, "you are bad", "a great day")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("toxic ") and lines[0].endswith("you are bad")
    assert any(line.split()[:1] == ["bad"] for line in lines)
    bad = next(line for line in lines if line.split()[:1] == ["bad"])
    assert bad.split()[1].startswith("+")  # bad pushes toxic up
    done = eval_cli("--run", int8, "--json", "you are bad")
    assert done.returncode == 0, done.stderr
    [record] = map(json.loads, done.stdout.splitlines())
    assert record["note"].startswith("an int8 run: explained through its fp32 source run")
    assert [w["text"] for w in record["attributions"]["toxic"]["words"]] == ["you", "are", "bad"]
    assert "note: an int8 run: explained through its fp32 source run" in eval_cli("--run", int8, "you").stderr
    done = eval_cli("--run", runs["teacher"], "--steps", 0, "you")
    assert done.returncode != 0 and done.stderr.strip() == "error: --steps 0: expected a number of at least 1"
