"""Tests for the web page (app.py), driven headless by Streamlit's AppTest on tiny runs of the
tiny test model: classify, switch models, compare, examples, input rules, CSV round trip."""

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_toy_csv

st = pytest.importorskip("streamlit")  # the page is an optional extra: pip install -e ".[app]"
from streamlit.testing.v1 import AppTest  # noqa: E402

import classifier  # noqa: E402
import export  # noqa: E402
import runs as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TINY = str(ROOT / "tests" / "fixtures" / "tiny-bert")
TOXIC, KIND = "you are bad terrible", "you are good great love"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A runs folder like `train.py all` writes: teacher, odd and even students, LoRA (seconds on the tiny model)."""
    root = tmp_path_factory.mktemp("app")
    toy = write_toy_csv(root / "toy.csv")
    runs = root / "runs"
    # One thread per run: the tiny model is too small to gain from more, and the runs go two at a time.
    common = ["--data", toy, "--batch-size", 8, "--lr", 3e-3, "--no-progress", "--threads", 1]

    def start(*argv):
        return subprocess.Popen([sys.executable, "train.py", *map(str, argv)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(*procs):
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err

    wait(start("teacher", "--model", TINY, "--out", runs / "teacher", "--epochs", 4, *common),
         start("lora", "--model", TINY, "--out", runs / "lora", "--epochs", 1, *common))
    wait(*[start("distill", "--teacher", runs / "teacher", "--layers", layers, "--out", runs / layers, "--epochs", 1, *common)
           for layers in ("odd", "even")])
    return runs


@pytest.fixture(autouse=True)
def restore_main_module(monkeypatch):
    # AppTest runs the script as a fresh __main__ module and leaves it in sys.modules: put pytest's back.
    monkeypatch.setitem(sys.modules, "__main__", sys.modules["__main__"])


def page(runs_dir, monkeypatch):
    monkeypatch.setenv("NANOBERT_RUNS", str(runs_dir))
    return AppTest.from_file(APP, default_timeout=60).run()


def expected(run_dir, text):
    """(label, probability) from the Python API, as the app loads the model: what the page must show."""
    clf = classifier.Classifier.from_run(run_dir, device="cpu")
    p, threshold = clf.predict_proba([text])[0].tolist(), R.decision_threshold(clf.info)
    best = max(range(2), key=p.__getitem__) if threshold is None else int(p[1] >= threshold)  # at its threshold from validation
    return ["not toxic", "toxic"][best], p[best]  # the toy CSV's labels are 0/1: shown as not toxic / toxic


def verdict(at):
    """The result box: red for toxic, green for not toxic."""
    boxes = [(e.value, "red") for e in at.error] + [(s.value, "green") for s in at.success]
    assert len(boxes) == 1, boxes
    return boxes[0]


def classify(at, text):
    at.text_area("text").input(text).run()
    return at.button("classify").click().run()


def test_no_runs_says_how_to_train(tmp_path, monkeypatch):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text("{}")  # still training: no summary.json yet
    at = page(tmp_path, monkeypatch)
    assert not at.exception
    assert "No trained models found" in at.warning[0].value and at.code[0].value == "python train.py all --preset quick"
    assert any("half" in c.value and "Not finished" in c.value for c in at.sidebar.caption)
    assert not at.text_area and not at.selectbox
    at = page(tmp_path / "nowhere", monkeypatch)
    assert "does not exist" in at.warning[0].value and at.code[0].value == "python train.py all --preset quick"


def test_selector_lists_every_run_with_method_and_folder(runs, monkeypatch):
    at = page(runs, monkeypatch)
    assert not at.exception
    assert at.selectbox("model").options == ["teacher — teacher", "odd — distill, teacher layers 1,3",
                                             "even — distill, teacher layers 2", "lora — lora, r=8"]
    assert "Type a comment" in at.info[0].value  # nothing classified yet
    # Runs two levels down (runs/, holding runs/quick/teacher ...) and a run folder itself are found too.
    assert page(runs.parent, monkeypatch).selectbox("model").options[-1] == "runs/lora — lora, r=8"
    assert page(runs / "odd", monkeypatch).selectbox("model").options == ["odd — distill, teacher layers 1,3"]
    # The --runs flag (after `streamlit run app.py --`) wins over NANOBERT_RUNS.
    monkeypatch.setattr(sys, "argv", ["app.py", "--runs", str(runs)])
    monkeypatch.setenv("NANOBERT_RUNS", str(runs / "nowhere"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert at.text_input("runs").value == str(runs) and len(at.selectbox("model").options) == 4


def test_classify_shows_the_chosen_models_label_and_probability(runs, monkeypatch):
    at = classify(page(runs, monkeypatch), TOXIC)
    assert not at.exception
    label, p = expected(runs / "teacher", TOXIC)
    assert label == "toxic"  # the teacher learned the toy task
    text, color = verdict(at)
    assert text.startswith(f"### toxic\n{p:.1%} probability · model teacher — teacher · ") and text.endswith(" ms")
    assert color == "red"
    at = classify(at, KIND)
    assert verdict(at)[0].startswith("### not toxic\n") and verdict(at)[1] == "green"
    # Another model from the selector: its own prediction for the same text.
    for option, folder in [("lora", "lora"), ("even", "even")]:
        at.selectbox("model").set_value(str(runs / folder)).run()
        label, p = expected(runs / folder, KIND)
        text, color = verdict(at)
        assert text.startswith(f"### {label}\n{p:.1%} probability · model {option} — ")
        assert color == ("red" if label == "toxic" else "green")


def test_examples_fill_the_box_and_classify(runs, monkeypatch):
    at = page(runs, monkeypatch)
    labels = [b.label for b in at.button]
    assert "I hate you!" in labels and "You're awesome, have a nice day!" in labels
    at.button("example-1").click().run()
    assert at.text_area("text").value == "You're awesome, have a nice day!"
    label, p = expected(runs / "teacher", "You're awesome, have a nice day!")
    assert verdict(at)[0].startswith(f"### {label}\n{p:.1%} probability")


@pytest.mark.parametrize("text", ["", "   \n\t ", "\u200f\u200b\x00 "])  # nothing, spaces, invisible characters
def test_empty_text_gets_a_message_not_a_prediction(runs, monkeypatch, text):
    at = classify(page(runs, monkeypatch), text)
    assert not at.exception and not at.error and not at.success
    assert "The text is empty" in at.warning[0].value


def test_any_unicode_and_long_text(runs, monkeypatch):
    at = page(runs, monkeypatch)
    for text in ["😡🤬 you are bad 💩", "أنت سيء جدا", "a\x00b\x07c\u202e reversed\r\n", "中文 テスト"]:
        classify(at, text)
        assert not at.exception, text
        label, p = expected(runs / "teacher", text)
        assert verdict(at)[0].startswith(f"### {label}\n{p:.1%} probability"), text
        assert not any("was cut" in c.value for c in at.caption)
    long = "you are bad " * 100  # 300 words; the runs read 64 tokens (run.json max_length)
    classify(at, long)
    label, p = expected(runs / "teacher", long)
    assert verdict(at)[0].startswith(f"### {label}\n{p:.1%}")
    assert any("has 302 tokens; the model reads only the first 64" in c.value for c in at.caption)


def test_compare_all_models_on_one_text(runs, monkeypatch):
    monkeypatch.setenv("NANOBERT_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(text=TOXIC, compare="1")  # a link can carry the text: ?text=...&compare=1
    at.run()
    assert not at.exception and at.toggle("compare").value and verdict(at)[0].startswith("### toxic")
    table = at.dataframe[0].value
    assert list(table.columns) == ["model", "label", "probability", "P(toxic)", "latency (ms)"]
    assert list(table["model"]) == at.selectbox("model").options
    for row, folder in zip(table.to_dict("records"), ["teacher", "odd", "even", "lora"], strict=True):
        label, p = expected(runs / folder, TOXIC)
        assert row["label"] == label and row["probability"] == pytest.approx(p, abs=1e-6)
        assert row["P(toxic)"] == pytest.approx(p if label == "toxic" else 1 - p, abs=1e-6) and row["latency (ms)"] > 0
    agree = len(set(table["label"])) == 1
    assert any(c.value.startswith("All 4 models agree" if agree else "The models disagree") for c in at.caption)
    at.toggle("compare").set_value(False).run()
    assert not at.dataframe and verdict(at)[0].startswith("### toxic")


def test_meaningful_label_names_are_shown_as_they_are(runs, tmp_path, monkeypatch):
    shutil.copytree(runs / "teacher", tmp_path / "hate18")
    info = json.loads((tmp_path / "hate18" / "run.json").read_text())
    info["results"]["id2label"] = {"0": "noHate", "1": "hate"}  # as hate_speech18 runs have it
    (tmp_path / "hate18" / "run.json").write_text(json.dumps(info))
    at = classify(page(tmp_path, monkeypatch), TOXIC)
    assert verdict(at)[0].startswith("### hate\n") and verdict(at)[1] == "red"
    assert verdict(classify(at, KIND))[0].startswith("### noHate\n")


@pytest.mark.parametrize("id2label, shown", [(["noHate", "hate"], "hate"), (None, "toxic")])
def test_a_run_json_whose_id2label_is_a_list_or_missing(runs, tmp_path, monkeypatch, id2label, shown):
    shutil.copytree(runs / "teacher", tmp_path / "teacher")
    info = json.loads((tmp_path / "teacher" / "run.json").read_text())
    info["results"]["id2label"] = id2label
    if id2label is None:
        del info["results"]["id2label"]  # the model's own labels (0 and 1: toxic or not) are shown
    (tmp_path / "teacher" / "run.json").write_text(json.dumps(info))
    at = classify(page(tmp_path, monkeypatch), TOXIC)
    assert not at.exception
    assert verdict(at)[0].startswith(f"### {shown}\n") and verdict(at)[1] == "red"


def test_unfinished_runs_are_served_only_when_asked_and_say_so(runs, tmp_path, monkeypatch):
    run = tmp_path / "teacher"
    shutil.copytree(runs / "teacher", run)
    (run / "summary.json").unlink()  # as Ctrl-C leaves it after epoch 1 of 4
    R.trim_log(run, step=R.read_log(run)[1][0]["step"], epoch=1)
    at = page(tmp_path, monkeypatch)
    assert not at.exception and not at.selectbox
    assert "1 unfinished run(s) are not listed" in at.warning[0].value and "'Show unfinished runs'" in at.warning[0].value
    at.toggle("unfinished").set_value(True).run()
    assert at.selectbox("model").options == ["teacher — teacher (unfinished, epoch 1 of 4)"]
    at = classify(at, TOXIC)
    assert not at.exception and "model teacher — teacher (unfinished, epoch 1 of 4)" in verdict(at)[0]


def test_a_pretraining_run_beside_the_models_is_not_listed(runs, tmp_path, monkeypatch):
    for name in ("teacher", "mlm"):  # mlm: a pretraining run (train.py pretrain) has no classifier to serve
        shutil.copytree(runs / "teacher", tmp_path / name)
    info = R.read_info(tmp_path / "mlm")
    info.settings["method"] = "pretrain"
    R.write_info(tmp_path / "mlm", info)
    at = page(tmp_path, monkeypatch)
    assert not at.exception and at.selectbox("model").options == ["teacher — teacher"] and not at.sidebar.warning


def test_a_run_that_cannot_load_is_said_and_the_others_still_work(runs, tmp_path, monkeypatch):
    shutil.copytree(runs / "teacher", tmp_path / "teacher")
    (tmp_path / "broken").mkdir()  # finished, but its model files are gone
    for name in ("run.json", "summary.json"):
        shutil.copy(runs / "teacher" / name, tmp_path / "broken" / name)
    at = page(tmp_path, monkeypatch)
    at.toggle("compare").set_value(True)
    at = classify(at, TOXIC)
    assert not at.exception
    assert at.selectbox("model").value == str(tmp_path / "broken")
    assert all(e.value.startswith(f"Cannot load {tmp_path / 'broken'}: ") for e in at.error) and len(at.error) == 2
    assert list(at.dataframe[0].value["model"]) == ["teacher — teacher"]


def test_csv_round_trip(runs, monkeypatch):
    downloads = []  # AppTest shows the download button but not its bytes: catch them on the way in
    real = st.download_button

    def catch(label, payload, **kw):
        downloads.append((payload, kw))
        return real(label, payload, **kw)

    monkeypatch.setattr(st, "download_button", catch)
    rows = [["id", "comment", "label"], [1, TOXIC, 1], [2, " ", 0], [3, "NA", 0], [4, "😀 مرحبا, \"quoted\"\nnew line", 1]]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    at = page(runs, monkeypatch)
    at.file_uploader("upload").set_value(("comments.csv", buffer.getvalue().encode(), "text/csv")).run()
    assert not at.exception and not at.error
    assert at.selectbox("column").options == ["comment"]  # id and label hold only numbers
    at.multiselect("batch-models").set_value([str(runs / "teacher"), str(runs / "lora")])
    at.button("label-file").click().run()
    assert not at.exception
    payload, kw = downloads[-1]
    assert kw["file_name"] == "comments-labelled.csv" and kw["mime"] == "text/csv"
    out = list(csv.DictReader(io.StringIO(payload.decode("utf-8"))))
    assert list(out[0]) == ["id", "comment", "label", "teacher label", "teacher probability", "lora label", "lora probability"]
    assert [r["comment"] for r in out] == [r[1] for r in rows[1:]] and [r["id"] for r in out] == ["1", "2", "3", "4"]
    for row in out:
        for run in ("teacher", "lora"):
            if not row["comment"].strip():
                assert row[f"{run} label"] == row[f"{run} probability"] == ""  # a blank row: no prediction
                continue
            label, p = expected(runs / run, row["comment"])
            assert row[f"{run} label"] == label and float(row[f"{run} probability"]) == pytest.approx(p, abs=1e-4)
    assert at.dataframe[0].value.shape == (4, 7)
    assert any("1 blank row(s)" in c.value for c in at.caption)


@pytest.mark.parametrize("name,raw,message", [
    ("comments.txt", b"text\nhello\n", "comments.txt is not a CSV file"),
    ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "image.csv is not UTF-8 text"),
    ("numbers.csv", b"id,label\n1,0\n2,1\n", "No text column in numbers.csv"),
    ("header.csv", b"text,label\n", "header.csv has no rows"),
    ("empty.csv", b"", "empty.csv could not be read as a CSV"),
])
def test_bad_uploads_get_a_clear_message(runs, monkeypatch, name, raw, message):
    at = page(runs, monkeypatch)
    at.file_uploader("upload").set_value((name, raw, "application/octet-stream")).run()
    assert not at.exception and message in at.error[0].value
    assert "label-file" not in [b.key for b in at.button]  # nothing to label


def test_an_int8_export_is_served_like_any_run(runs, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    shutil.copytree(runs / "teacher", folder / "teacher")
    shutil.copy(runs / "split.json", folder / "split.json")
    export.export_int8(folder / "teacher", folder / "teacher-int8")
    at = page(folder, monkeypatch)
    assert at.selectbox("model").options == ["teacher — teacher", "teacher-int8 — teacher, int8"]
    at.selectbox("model").set_value(str(folder / "teacher-int8")).run()
    at = classify(at, TOXIC)
    assert not at.exception
    label, p = expected(folder / "teacher-int8", TOXIC)
    text, _ = verdict(at)
    assert text.startswith(f"### {label}\n{p:.1%} probability · model teacher-int8 — teacher, int8 · ")


def test_a_two_question_model_shows_both_scores_and_decisions(tmp_path, monkeypatch):
    from conftest import write_toy_two_label_csv

    toy2 = write_toy_two_label_csv(tmp_path / "toy2.csv")
    run = tmp_path / "runs" / "two"
    done = subprocess.run([sys.executable, "train.py", "teacher", "--model", TINY, "--data", str(toy2), "--label-column",
                           "toxic,hate", "--out", str(run), "--epochs", "4", "--batch-size", "8", "--lr", "3e-3", "--no-progress",
                           "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    at = classify(page(tmp_path / "runs", monkeypatch), "you are the vermin here")
    text, colour = verdict(at)
    assert text.startswith("### hate\n") and colour == "red" and "toxic " in text and "(yes, threshold" in text
    text, colour = verdict(classify(at, "what a good day"))
    assert text.startswith("### none\n") and colour == "green" and text.count("(no, threshold") == 2


def shading(at):
    """[(word, score shown in its tooltip, depth of its shade, red or blue)] of each shaded comment on the page."""
    import re

    out = []
    for element in at.get("html"):
        spans = re.findall(r'<span title="([+-][0-9.]+)" style="background: rgba\((\d+), \d+, \d+, ([0-9.]+)\);[^"]*">([^<]*)</span>',
                           element.value)
        out.append([(word, float(score), float(alpha), "red" if r == "220" else "blue") for score, r, alpha, word in spans])
    return out


def test_explain_shades_the_words_by_their_contribution(runs, monkeypatch):
    at = page(runs, monkeypatch)
    assert not at.toggle("explain").value
    at = classify(at, TOXIC)
    assert not at.get("html")  # off by default
    at.toggle("explain").set_value(True).run()
    assert not at.exception
    [words] = shading(at)
    clf = classifier.Classifier.from_run(runs / "teacher", device="cpu")
    want = clf.explain([TOXIC])[0]["attributions"][clf.labels[1]]  # class 1, shown as "toxic"
    assert [w[0] for w in words] == [w["text"] for w in want["words"]] == TOXIC.split()
    assert [w[1] for w in words] == pytest.approx([round(w["score"], 3) for w in want["words"]], abs=1e-3)
    deepest = max(words, key=lambda w: w[2])
    assert deepest[0] in ("bad", "terrible") and deepest[3] == "red" and deepest[2] == pytest.approx(0.8)
    assert all((w[3] == "red") == (w[1] > 0) for w in words if w[1] != 0)
    assert any(c.value.startswith("toxic: logit ") for c in at.caption)
    assert any(c.value.startswith("Red: the word pushes towards the label; blue: away from it") for c in at.caption)
    assert "Which words decided it" in [m.value.strip("*") for m in at.markdown]
    at.toggle("explain").set_value(False).run()
    assert not at.get("html")


def test_a_link_can_ask_for_the_explanation(runs, monkeypatch):
    monkeypatch.setenv("NANOBERT_RUNS", str(runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update(text="<b>you</b> are *bad*", explain="1")  # HTML and markdown in a comment stay text
    at.run()
    assert not at.exception and at.toggle("explain").value
    [words] = shading(at)
    assert [w[0] for w in words] == ["&lt;", "b", "&gt;", "you", "&lt;", "/", "b", "&gt;", "are", "*", "bad", "*"]
    assert "<b>" not in at.get("html")[0].value


def test_a_two_question_model_is_explained_per_question_and_int8_through_its_source(runs, two_label_run, tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    shutil.copytree(two_label_run, folder / "two")
    shutil.copytree(runs / "teacher", folder / "teacher")
    export.export_int8(folder / "teacher", folder / "teacher-int8")
    at = page(folder, monkeypatch)
    at.toggle("explain").set_value(True)
    at.selectbox("model").set_value(str(folder / "two")).run()
    at = classify(at, "you are the vermin here")
    assert not at.exception
    toxic, hate = shading(at)
    assert max(hate, key=lambda w: w[2])[0] == "vermin" and max(toxic, key=lambda w: w[2])[0] == "vermin"
    assert [c.value.split(":")[0] for c in at.caption if ": logit " in c.value] == ["toxic", "hate"]
    at.selectbox("model").set_value(str(folder / "teacher-int8")).run()
    assert not at.exception and len(shading(at)) == 1
    assert any(c.value == f"Note: an int8 run: explained through its fp32 source run {folder / 'teacher'}." for c in at.caption)
