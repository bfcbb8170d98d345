"""
A web page for the trained models: type a comment and see "toxic" or "not toxic" from any run,
compare every run on the same text, or label a whole CSV file.

    pip install -e ".[app]"                        # streamlit is an optional extra
    streamlit run app.py -- --runs runs/quick      # or: NANOBERT_RUNS=runs/quick streamlit run app.py

It serves the run folders that train.py writes (`python train.py all --preset quick` makes four:
teacher, odd and even students, LoRA; `--extended` adds more students, LoRA on a student and int8
models), found and loaded through runs.py and classifier.py, and kept in memory for the life of the server. An int8 model
(`python eval.py export RUN`) is served like any other run, on the CPU. A LoRA run loads its base
model by name: offline, set NANOBERT_MODELS as for training.
A link can carry a text to classify: http://localhost:8501/?text=I%20hate%20you!&compare=1
(and &explain=1: the words shaded by how much each made the answer, explain.py).
"""

import argparse
import html
import io
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

import classifier
import files
import runs

TRAIN_COMMAND = "python train.py all --preset quick"
EXAMPLES = ["I hate you!", "You're awesome, have a nice day!", "Shut up, idiot.", "What a sunset 🌅"]
METHOD_ORDER = {"teacher": 0, "distill": 1, "lora": 2}  # the order of the comparison: teacher, students, LoRA

# -----------------------------------------------------------------------------
# Finding the runs


@dataclass
class Run:
    dir: str  # the run folder; also the key of the model cache and of the model selector
    name: str  # the folder relative to the runs folder, e.g. "odd": names its output columns
    label: str  # what the selector shows: folder and method (and "unfinished, epoch k of n")
    info: dict  # run.json
    unfinished: str | None = None  # "unfinished, epoch k of n" for a run shown before it finished


def default_runs_folder():
    # `streamlit run app.py -- --runs DIR` hands the flags after `--` to the script in sys.argv.
    # Known args only and no -h: under pytest, sys.argv holds pytest's own flags.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--runs")
    args, _ = parser.parse_known_args(sys.argv[1:])
    # By default the two-question models of `train.py all --preset robust`, which tell hate from
    # swearing, where they exist; else every run under runs/.
    default = "runs/robust" if Path("runs/robust").is_dir() else "runs"
    return args.runs or os.environ.get("NANOBERT_RUNS") or default


def describe(info):
    method = info.get("method", "?")
    text = method
    if method == "distill" and info.get("teacher_layers"):
        text = f"distill, teacher layers {','.join(map(str, info['teacher_layers']))}"
    elif method == "lora" and info.get("lora_r"):
        text = f"lora, r={info['lora_r']}" + (f", on {Path(info['base']).name}" if info.get("base") else "")
    return text + (", int8" if info.get("quantized") else "")


def find_runs(root, with_unfinished=False):
    """(runs to serve, unfinished folders left out, unreadable folders with why) under root: the folder
    itself, its subfolders, and theirs. with_unfinished: unfinished runs that saved a model are served
    too, each labelled "unfinished, epoch k of n" (runs.check_finished)."""
    root = Path(root)
    finished, unfinished = runs.find_runs(root)
    found, left_out, broken = [], [], []
    for folder in finished + unfinished:
        try:
            info = runs.read_info(folder)
        except runs.RunError as e:
            broken.append((str(folder), str(e)))
            continue
        if info.get("method") == "pretrain":  # an encoder without a classifier: nothing to serve
            continue
        note = runs.unfinished_note(folder, info)
        if note and not (with_unfinished and runs.weights_file(folder).is_file()):  # listed once it saved a model
            left_out.append((str(folder), note))
            continue
        name = folder.relative_to(root).as_posix() if folder != root else folder.name
        found.append(Run(str(folder), name, f"{name} — {describe(info)}" + (f" ({note})" if note else ""), info, note))
    found.sort(key=lambda r: (bool(r.info.get("quantized")), METHOD_ORDER.get(r.info.get("method"), 9),
                              bool(r.info.get("base")), r.info.get("teacher_layers") or [], r.name))
    return found, left_out, broken


def label_names(model):
    """A display name per class: run.json's id2label (an object or a list; the model's own labels where
    it has none, or not one per class), except that a binary task with bare numbers for names reads
    "not toxic" / "toxic" (the toxic datasets put the toxic or hate class at 1)."""
    names = runs.label_names_of(model.info)
    names = [str(n) for n in (names if names and len(names) == len(model.labels) else model.labels)]
    if len(names) == 2 and all(re.fullmatch(r"(label_?)?\d+", n, re.IGNORECASE) for n in names):
        return ["not toxic", "toxic"]
    return names


# -----------------------------------------------------------------------------
# Loading and predicting


@st.cache_resource(show_spinner="Loading the model…", max_entries=16)
def load_model(run_dir, stamp, allow_unfinished=False):
    """A run's model, loaded once per server process and shared by every visitor. `stamp` (the time
    summary.json, or for an unfinished run the weights, were written) is part of the cache key only,
    so that a retrained run is reloaded."""
    model = classifier.Classifier.from_run(run_dir, device="cpu",  # a LoRA adapter comes merged into its base weights
                                           allow_unfinished=allow_unfinished)
    classify(model, ["warm-up"])  # the first forward pass pays one-off costs; keep them out of the latency shown
    return model


def get_model(run):
    """The run's model, or None after saying on the page why it cannot be loaded (the rest of the page goes on)."""
    try:
        stamp = Path(run.dir) / "summary.json" if not run.unfinished else runs.weights_file(run.dir)
        return load_model(run.dir, os.stat(stamp).st_mtime_ns, allow_unfinished=bool(run.unfinished))
    except (runs.RunError, files.DataError, OSError, ValueError) as e:
        st.error(f"Cannot load {run.dir}: {e}")
        return None


def classify(model, texts):
    """(probabilities (N, C), seconds taken, each text's length in tokens before cutting)."""
    start = time.perf_counter()
    probs = model.predict_proba(texts)
    seconds = time.perf_counter() - start
    return probs, seconds, model.token_counts(texts)


def verdict(model, probs):
    """(name, probability) of one text: the classifier's verdict (Classifier.verdict: for a two-question
    model "none" when it says no to both), a binary task's bare class numbers read as "not toxic" / "toxic"."""
    label, p = model.verdict(probs)
    return (label if model.multilabel else label_names(model)[model.labels.index(label)]), p


def flagged(model, probs):
    """Does the answer warn (red), or not (green)? None for a task of more than two classes (blue)."""
    if model.multilabel:
        return any(v >= model.thresholds[k] for k, v in zip(model.labels, probs.tolist(), strict=True))
    if len(model.labels) != 2:
        return None
    return model.verdict(probs)[0] == model.labels[1]  # class 1 as the verdict decides it (at its threshold)


def each_label(model, probs):
    """'toxic 97.0% (yes) · hate 12.0% (no, threshold 40.0%)': every question of a two-label model."""
    return " · ".join(f"{k} {v:.1%} ({'yes' if v >= model.thresholds[k] else 'no'}, threshold {model.thresholds[k]:.1%})"
                      for k, v in zip(model.labels, probs.tolist(), strict=True))


# -----------------------------------------------------------------------------
# Which words made the answer: integrated gradients (explain.py), shown as shading

UP, DOWN = "220, 38, 38", "37, 99, 235"  # red: towards the label; blue: away from it
LEGEND = ("Red: the word pushes towards the label; blue: away from it; the deeper the shade, the larger its share "
          "(integrated gradients from a text of [PAD]s, {steps} steps; docs/explain.md).")


@st.cache_data(show_spinner="Finding the words that decided it…", max_entries=64)
def explain_text(run_dir, stamp, text):
    """Classifier.explain of one text, computed once per run and text (a few hundred forward and backward passes)."""
    return load_model(run_dir, stamp).explain([text])[0]


def shaded(text, words):
    """The text as HTML, each word on a background whose colour is the sign of its score and whose depth
    is its size against the largest in the text (the score itself in its tooltip)."""
    largest = max((abs(w["score"]) for w in words), default=0.0) or 1.0
    parts, at = [], 0
    for w in words:
        alpha = 0.8 * abs(w["score"]) / largest
        parts.append(html.escape(text[at:w["start"]]))
        parts.append(f'<span title="{w["score"]:+.3f}" style="background: rgba({UP if w["score"] > 0 else DOWN}, {alpha:.2f}); '
                     f'border-radius: 3px; padding: 1px 2px">{html.escape(w["text"])}</span>')
        at = w["end"]
    parts.append(html.escape(text[at:]))
    return f'<div style="white-space: pre-wrap; line-height: 1.9; font-size: 1.05rem">{"".join(parts)}</div>'


def show_explanation(run, text):
    """Under the answer: the comment once per label the answer is about (every question of a two-question
    model; the class chosen otherwise), its words shaded by their contribution to that label's logit."""
    model = get_model(run)
    if model is None:
        return
    result = explain_text(run.dir, os.stat(Path(run.dir) / "summary.json").st_mtime_ns, text)
    st.markdown("**Which words decided it**")
    names = dict(zip(model.labels, label_names(model) if not model.multilabel else model.labels, strict=True))
    for label in model.labels if model.multilabel else [result["label"]]:
        r = result["attributions"][label]
        st.caption(f"{names[label]}: logit {r['logit']:+.2f}, {r['change']:+.2f} from a text of [PAD]s; the words add up to "
                   f"{r['attributed']:+.2f}")
        st.html(shaded(text, r["words"]))
    st.caption(LEGEND.format(steps=result["steps"]))
    if result["note"]:
        st.caption(f"Note: {result['note']}.")


# -----------------------------------------------------------------------------
# Batch mode: a CSV in, the same CSV with prediction columns out


def read_csv(name, raw):
    """(table, None), or (None, a message saying what is wrong) for an uploaded file."""
    # The uploader takes any file (a type filter would turn a wrong file into a Streamlit error, not a message).
    if not name.lower().endswith(".csv"):
        return None, f"{name} is not a CSV file; expected a .csv file with a header row and one row per comment."
    try:
        # Every cell as text, and no "NA"/"null" turned into missing values: those are words a comment may hold.
        # utf-8-sig: Excel starts its UTF-8 CSV files with a byte-order mark.
        table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except UnicodeDecodeError:
        return None, f"{name} is not UTF-8 text; expected a CSV file (save it as 'CSV UTF-8')."
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        return None, f"{name} could not be read as a CSV ({str(e).strip()}); expected a header row, then one row per comment."
    if table.empty:
        return None, f"{name} has no rows under its header {list(table.columns)}; expected one row per comment."
    return table, None


def text_columns(table):
    """The columns holding text, the likeliest first: some cell is not a number (ids and labels are)."""

    def is_number(s):
        try:
            float(s)
            return True
        except ValueError:
            return False

    found = [c for c in table.columns if any(v.strip() and not is_number(v) for v in table[c])]
    return sorted(found, key=lambda c: (c.lower() != "text", -table[c].str.len().mean()))


def label_table(table, column, chosen_runs):
    """The table with a label and a probability column per run, and notes for the page."""
    out = table.copy()
    texts = out[column].tolist()
    keep = [i for i, t in enumerate(texts) if not classifier.is_blank(t)]  # blank rows get no prediction, as on the page
    notes = [f"{len(texts) - len(keep)} blank row(s) left without a prediction."] if len(keep) < len(texts) else []
    for run in chosen_runs:
        model = get_model(run)
        if model is None:
            continue
        labels, probabilities = [""] * len(texts), [None] * len(texts)
        if keep:
            probs, _, lengths = classify(model, [texts[i] for i in keep])
            for i, p in zip(keep, probs, strict=True):
                labels[i], probability = verdict(model, p)
                probabilities[i] = round(probability, 4)
            cut = sum(n > model.max_length for n in lengths)
            if cut:
                notes.append(f"{run.name}: {cut} text(s) longer than {model.max_length} tokens were cut to that length.")
        if run.unfinished:
            notes.append(f"{run.name}: {run.unfinished}; its labels are those of the best epoch saved so far.")
        out[f"{run.name} label"], out[f"{run.name} probability"] = labels, probabilities
    return out, notes


# -----------------------------------------------------------------------------
# Parts of the page


def use_example(text):
    st.session_state.text = st.session_state.query = text


def submit():
    st.session_state.query = st.session_state.text


def show_verdict(run, text):
    """The chosen model's answer: red for toxic, green for not toxic (blue for a task of more classes)."""
    model = get_model(run)
    if model is None:
        return
    probs, seconds, lengths = classify(model, [text])
    name, p = verdict(model, probs[0])
    box = {True: st.error, False: st.success, None: st.info}[flagged(model, probs[0])]
    box(f"### {name}\n{p:.1%} probability · model {run.label} · {seconds * 1000:.0f} ms"
        + (f"\n\n{each_label(model, probs[0])}" if model.multilabel else ""))
    if lengths[0] > model.max_length:
        st.caption(f"Note: the text has {lengths[0]} tokens; the model reads only the first {model.max_length} "
                   f"(its max_length), so the rest was cut.")
    if any("unknown tokens only" in note for note in model.notes([text])):
        st.caption("Note: the model's vocabulary knows none of this text (emoji only, or a script it lacks): "
                   "the answer says little about the text.")


def show_comparison(all_runs, text):
    """One row per model for the same text, to see where the students and LoRA part from the teacher."""
    st.subheader("All models on this text")
    rows, cut = [], []
    for run in all_runs:
        model = get_model(run)
        if model is None:
            continue
        probs, seconds, lengths = classify(model, [text])
        name, p = verdict(model, probs[0])
        two = len(model.labels) == 2
        rows.append({"model": run.label, "label": name, "probability": p,
                     "P(toxic)": float(probs[0, model.labels.index("toxic")]) if model.multilabel else float(probs[0, 1]) if two else None,
                     "P(hate)": float(probs[0, model.labels.index("hate")]) if model.multilabel and "hate" in model.labels else None,
                     "latency (ms)": seconds * 1000})
        if lengths[0] > model.max_length:
            cut.append(run.name)
    if all(r["P(hate)"] is None for r in rows):  # no two-question model here: no hate column
        for r in rows:
            del r["P(hate)"]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", column_config={
        "probability": st.column_config.NumberColumn(format="%.3f", help="of the label shown"),
        "P(toxic)": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f",
                                                    help="probability of class 1 (toxic / hate), or of toxic"),
        "P(hate)": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f",
                                                   help="two-question models: probability of hate"),
        "latency (ms)": st.column_config.NumberColumn(format="%.1f", help="tokenizing and one forward pass, CPU")})
    labels = {r["label"] for r in rows}
    st.caption(f"All {len(rows)} models agree." if len(labels) == 1 else f"The models disagree: {', '.join(sorted(labels))}.")
    if cut:
        st.caption(f"The text was cut to the max_length of: {', '.join(cut)}.")


# -----------------------------------------------------------------------------
# The page. Streamlit runs this script top to bottom on every click; st.session_state keeps what must last.

st.set_page_config(page_title="nanobert: is this comment toxic?", page_icon="🛡️")
params = st.query_params
st.session_state.setdefault("text", params.get("text", ""))
st.session_state.setdefault("query", params.get("text"))  # the text last sent to classify; None: none yet
st.session_state.setdefault("compare", params.get("compare", "") in ("1", "true"))
st.session_state.setdefault("explain", params.get("explain", "") in ("1", "true"))

with st.sidebar:
    st.header("Models")
    root = st.text_input("Runs folder", value=default_runs_folder(), key="runs",
                         help="A folder of run folders written by train.py, e.g. runs/quick")
    with_unfinished = st.toggle("Show unfinished runs", key="unfinished",
                                help="Runs without summary.json (interrupted, or still training), with the best epoch "
                                     "they saved; each is marked 'unfinished, epoch k of n'")
    available, unfinished, broken = find_runs(root, with_unfinished)
    by_dir = {r.dir: r for r in available}
    if available:
        chosen = by_dir[st.selectbox("Model", list(by_dir), format_func=lambda d: by_dir[d].label, key="model")]
        st.caption("Each model is loaded once and kept in memory; LoRA adapters are served merged into their base model.")
    if unfinished:
        st.caption("Not finished (no summary.json yet), so not listed: "
                   + ", ".join(f"{folder} ({why})" for folder, why in unfinished))
    for folder, why in broken:
        st.warning(f"Cannot read {folder}: {why}")

st.title("Is this comment toxic?")
st.caption("A BERT teacher, two students distilled from its odd and even layers, and LoRA, trained by nanobert.")

if not available:
    where = f"in `{root}`" if Path(root).is_dir() else f"`{root}` does not exist"
    waiting = (f" {len(unfinished)} unfinished run(s) are not listed ({', '.join(f for f, _ in unfinished)}): turn on "
               "'Show unfinished runs' in the sidebar to use the best epoch each saved." if unfinished else "")
    st.warning(f"No trained models found: no run folder (run.json and summary.json) {where}.{waiting} "
               f"Train the four models with the command below, or give another runs folder in the sidebar "
               f"(`streamlit run app.py -- --runs DIR`, or NANOBERT_RUNS=DIR).")
    st.code(TRAIN_COMMAND, language="bash")
    st.stop()


one, batch = st.tabs(["Classify a comment", "Label a CSV file"])

with one:
    st.caption("Try an example:")
    with st.container(horizontal=True):  # a row of buttons that wraps when it runs out of room
        for i, example in enumerate(EXAMPLES):
            st.button(example, key=f"example-{i}", on_click=use_example, args=(example,))
    text = st.text_area("Comment", key="text", height=100, placeholder="Type or paste a comment…")
    left, right = st.columns([1, 3])
    left.button("Classify", type="primary", key="classify", on_click=submit)
    compare = right.toggle("Compare all models", key="compare")
    explain_words = right.toggle("Show which words decided it", key="explain")

    query = st.session_state.query
    if query is None:
        st.info("Type a comment and press Classify, or click an example.")
    elif classifier.is_blank(query):
        st.warning("The text is empty: type a comment to classify.")
    else:
        if query != text:
            st.caption(f"Result for the text last classified: “{query[:80]}{'…' if len(query) > 80 else ''}”")
        show_verdict(chosen, query)
        if explain_words:
            show_explanation(chosen, query)
        if compare:
            show_comparison(available, query)

with batch:
    upload = st.file_uploader("A CSV file with a column of comments", key="upload")
    if upload is not None:
        table, problem = read_csv(upload.name, upload.getvalue())
        columns = text_columns(table) if table is not None else []
        if problem:
            st.error(problem)
        elif not columns:
            st.error(f"No text column in {upload.name}: the columns {list(table.columns)} hold only numbers or nothing; "
                     f"expected one column of comments.")
        else:
            column = st.selectbox("Text column", columns, key="column")
            picked = st.multiselect("Models", list(by_dir), default=[chosen.dir], key="batch-models",
                                    format_func=lambda d: by_dir[d].label)
            if st.button("Label the file", type="primary", key="label-file", disabled=not picked):
                with st.spinner(f"Labelling {len(table)} rows…"):
                    out, notes = label_table(table, column, [by_dir[d] for d in picked])
                for note in notes:
                    st.caption(note)
                st.dataframe(out, hide_index=True)
                # on_click="ignore": downloading does not rerun the script, so the table stays on the page.
                st.download_button("Download the labelled CSV", out.to_csv(index=False).encode("utf-8"),
                                   file_name=f"{Path(upload.name).stem}-labelled.csv", mime="text/csv",
                                   key="download", on_click="ignore")
