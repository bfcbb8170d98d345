"""
Evaluation: metrics written out by hand, loading a trained run, and predicting with it.

    python eval.py predict --run runs/quick/lora "you are awesome"
"""

import argparse
import json
import math
import sys
from pathlib import Path

import torch

import data
import lora
import model as M

# -----------------------------------------------------------------------------
# Metrics (no sklearn: each is a few lines, and the degenerate cases are said, not hidden)


def confusion_matrix(labels, preds, num_classes):
    """cm[true][pred] counts."""
    cm = [[0] * num_classes for _ in range(num_classes)]
    for y, p in zip(labels, preds, strict=True):
        cm[int(y)][int(p)] += 1
    return cm


def safe_div(a, b):
    # Undefined (0/0) is reported as NaN rather than silently as 0: a model that never
    # predicts a class has no precision for it, and the report says so.
    return a / b if b else float("nan")


def class_scores(cm, c):
    """precision, recall, F1 of class c. F1 is 0 when the class exists but is never found."""
    tp = cm[c][c]
    predicted = sum(row[c] for row in cm)
    actual = sum(cm[c])
    precision, recall = safe_div(tp, predicted), safe_div(tp, actual)
    if tp == 0:
        f1 = 0.0 if predicted + actual else float("nan")
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return precision, recall, f1


def roc_auc(labels, scores):
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties half."""
    pairs = sorted(zip(scores, labels))
    n_pos = sum(1 for y in labels if y == 1)
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    # Rank-sum (Mann-Whitney U) with average ranks for tied scores.
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1] == 1)
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def metrics(labels, preds, num_classes, pos_scores=None):
    """Accuracy, macro-F1, and for two classes the precision/recall/F1 of class 1 (toxic / hate) and ROC-AUC."""
    cm = confusion_matrix(labels, preds, num_classes)
    per_class = [class_scores(cm, c) for c in range(num_classes)]
    f1s = [f for _, _, f in per_class if not math.isnan(f)]
    out = {
        "n": len(labels),
        "accuracy": safe_div(sum(cm[c][c] for c in range(num_classes)), len(labels)),
        "macro_f1": sum(f1s) / len(f1s) if f1s else float("nan"),
        "confusion_matrix": cm,
    }
    if num_classes == 2:
        out["precision"], out["recall"], out["f1"] = per_class[1]
        if pos_scores is not None:
            out["roc_auc"] = roc_auc(labels, pos_scores)
    return out


# -----------------------------------------------------------------------------
# Loading a run and predicting


class RunError(ValueError):
    pass


def load_run(run_dir, merge=True, verbose=False):
    """
    (model, tokenizer, run_info) for a run folder written by train.py: a full checkpoint
    (teacher, student) or a LoRA adapter on its base model, merged for inference by default.
    """
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if not info_path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no run.json); expected a folder written by train.py")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    try:
        if (run_dir / lora.CONFIG_NAME).is_file():
            # A LoRA run holds only the adapter: load its base model, then the adapter onto it.
            base = lora.read_adapter_config(run_dir)["base_model_name_or_path"]
            net = M.from_pretrained(base, id2label=info["id2label"], verbose=verbose)
            lora.load_adapter(net, run_dir, base)
            if merge:
                lora.merge_all(net)
        else:
            net = M.from_pretrained(str(run_dir), verbose=verbose)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise RunError(f"{run_dir}: cannot load the trained model ({e})") from None
    return net.eval(), data.load_tokenizer(run_dir), info


@torch.no_grad()
def predict(net, loader):
    """Class probabilities (N, C) in the order of the loader's texts."""
    net.eval()
    probs = None
    for batch in loader:
        logits = net(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
        p = torch.softmax(logits.float(), dim=-1)
        if probs is None:
            probs = torch.empty(len(loader.ids), p.size(1))
        probs[batch["index"]] = p
    return probs


def evaluate(net, loader, labels, num_classes):
    probs = predict(net, loader)
    preds = probs.argmax(-1).tolist()
    return metrics(labels, preds, num_classes, probs[:, 1].tolist() if num_classes == 2 else None)


# -----------------------------------------------------------------------------
# Command line


def cmd_predict(args):
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    if not texts or any(not t.strip() for t in texts):
        raise RunError("empty text to predict; expected at least one non-blank text (argument or stdin line)")
    net, tokenizer, info = load_run(args.run)
    loader = data.Loader(texts, None, tokenizer, info.get("max_length", 128), 64)
    probs = predict(net, loader)
    names = net.config.id2label
    for text, p in zip(texts, probs.tolist()):
        label = max(range(len(p)), key=p.__getitem__)
        if args.json:
            print(json.dumps({"text": text, "label": names[label], "probability": round(p[label], 6),
                              "probabilities": {names[i]: round(x, 6) for i, x in enumerate(p)}}, ensure_ascii=False))
        else:
            print(f"{names[label]}\t{p[label]:.3f}\t{text}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="label texts with a trained run (arguments, or stdin one per line)")
    p.add_argument("--run", required=True, help="run folder written by train.py")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.add_argument("texts", nargs="*", help="texts to classify; none: read stdin")
    args = parser.parse_args(argv)
    try:
        {"predict": cmd_predict}[args.command](args)
    except (RunError, data.DataError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
