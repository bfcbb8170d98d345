"""
The report's plots, drawn with matplotlib's object-oriented API (no pyplot, no global figure
state, no GUI backend chosen for the caller). matplotlib is optional: without it the report's
tables are still written.

    metrics.png     bars per model for every score, std over seeds as error bars
    confusion.png   one confusion matrix per run
    training.png    training loss per step and validation macro-F1 per epoch
    efficiency.png  test macro-F1 against the latency of one sentence
    precision-recall.png  a yes/no question (two classes, or one label of two): each run's test
                    precision-recall curve, its threshold marked (calibration.pr_curve)

Each plot_* takes (Figure, groups, rows by run name, run folders by name, a colour per group);
plot_pr_curves also each run's test probabilities and the test labels.
"""

import math

import numpy as np

import calibration
import files
import runs
from metrics import SCORE_NAMES, mean_std

PR_CURVES = "precision-recall"


def write_plots(out_dir, groups, by_name, run_dirs, names, probs=None, labels=None):
    """metrics.png, confusion.png, training.png, efficiency.png, and with probs ({run name: (N, 2)}) and
    labels (N,) of a yes/no question precision-recall.png; [] with a message when matplotlib is missing."""
    try:
        # The object-oriented API: no pyplot, no global figure state, no GUI backend chosen for the caller.
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plots (the tables are written); pip install 'nanobert[plots]'")
        return []
    colors = {g["label"]: f"C{i % 10}" for i, g in enumerate(groups)}
    paths = []
    draws = [("metrics", plot_metrics), ("confusion", plot_confusions), ("training", plot_training),
             ("efficiency", plot_efficiency)]
    if probs is not None:
        draws.append((PR_CURVES, lambda *a: plot_pr_curves(*a, probs=probs, labels=labels)))
    for name, draw in draws:
        fig = draw(Figure, groups, by_name, dict(zip(names, run_dirs, strict=True)), colors)
        path = out_dir / f"{name}.png"
        files.atomic_write(path, lambda p, f=fig: f.savefig(p, format="png", dpi=110, bbox_inches="tight"))
        paths.append(path)
    return paths


def plot_metrics(Figure, groups, by_name, run_dirs, colors):
    """Bars per model for every score, the std over seeds as error bars."""
    binary = len(by_name[groups[0]["names"][0]]["label_names"]) == 2
    keys = [(h, k) for h, k in SCORE_NAMES if binary or k in ("accuracy", "macro_f1")]
    fig = Figure(figsize=(max(6, 1.6 * len(keys) * max(1, len(groups) / 3)), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(groups)
    for i, g in enumerate(groups):
        stats = [mean_std([by_name[n].get(k) for n in g["names"]]) for _, k in keys]
        x = np.arange(len(keys)) + (i - (len(groups) - 1) / 2) * width
        means = np.array([0.0 if math.isnan(m) else m for m, _ in stats])
        several = len(g["names"]) > 1
        ax.bar(x, means, width, yerr=[s for _, s in stats] if several else None, capsize=3, color=colors[g["label"]],
               label=g["label"] + (f" ({len(g['names'])} seeds, ± std)" if several else ""))
        for xi, (m, sd) in zip(x, stats, strict=True):
            ax.text(xi, 0.01 if math.isnan(m) else m + sd + 0.01, "n/a" if math.isnan(m) else f"{m:.3f}",
                    ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(np.arange(len(keys)), [h for h, _ in keys])
    ax.set_ylim(0, 1.18)
    ax.set_ylabel("score on the test set")
    positive = by_name[groups[0]["names"][0]]["label_names"][-1]
    ax.set_title("Test scores per model" + (f" (precision, recall, F1 of: {positive})" if binary else ""))
    ax.legend(loc="upper center", ncols=min(4, len(groups)), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.08))
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_confusions(Figure, groups, by_name, run_dirs, colors):
    """One matrix per run: counts, coloured by the share of each true class (the row)."""
    names = [n for g in groups for n in g["names"]]
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    labels = by_name[names[0]]["label_names"]
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows + 0.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, name in zip(axes, names, strict=False):  # more panels than runs: the rest are hidden below
        cm = np.array(by_name[name]["confusion_matrix"], dtype=float)
        share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (t, p), count in np.ndenumerate(cm):
            ax.text(p, t, f"{int(count)}\n{share[t, p]:.0%}", ha="center", va="center", fontsize=9,
                    color="white" if share[t, p] > 0.6 else "black")
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8, rotation=90, va="center")
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        group = by_name[name]["group"]
        ax.set_title(name if name == group else f"{name}\n{group}", fontsize=9)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Confusion matrices on the test set (colour: share of the true class)", fontsize=10)
    return fig


def plot_training(Figure, groups, by_name, run_dirs, colors):
    """Training loss per logged step, and validation macro-F1 per epoch, one colour per model."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, f1_ax = fig.subplots(1, 2)
    styles = ["-", "--", ":", "-."]
    last_epoch = 1
    for g in groups:
        for i, name in enumerate(g["names"]):
            steps, epochs = runs.read_log(run_dirs[name])
            label = g["label"] + (f" seed {by_name[name]['seed']}" if len(g["names"]) > 1 else "")
            style = dict(color=colors[g["label"]], linestyle=styles[i % len(styles)], label=label)
            if steps:
                x, y = np.array([r["step"] for r in steps]), np.array([r["loss"] for r in steps])
                # A running mean over ~5% of the points shows the trend under the batch-to-batch noise.
                k = max(1, len(y) // 20)
                if k > 1:
                    loss_ax.plot(x, y, alpha=0.2, linewidth=0.7, color=style["color"])
                loss_ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), **style)
            if epochs:
                f1_ax.plot([r["epoch"] for r in epochs], [r["val_macro_f1"] for r in epochs], marker="o", **style)
                last_epoch = max(last_epoch, epochs[-1]["epoch"])
    loss_ax.set_xlabel("optimizer step")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_title("Training loss (distill: α·CE + β·KL + γ·hidden, not the scale of plain CE)", fontsize=9)
    f1_ax.set_xlabel("epoch")
    f1_ax.set_ylabel("validation macro-F1")
    f1_ax.set_title("Validation macro-F1 after each epoch", fontsize=9)
    f1_ax.set_xticks(range(1, last_epoch + 1))
    f1_ax.set_xlim(0.7, last_epoch + 0.3)
    for ax in (loss_ax, f1_ax):
        ax.grid(alpha=0.3)
    # One legend for both panels, below them, where it hides no curve.
    handles, labels = (loss_ax if loss_ax.lines else f1_ax).get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8, frameon=False)
    return fig


def plot_efficiency(Figure, groups, by_name, run_dirs, colors):
    """Test macro-F1 against the latency of one sentence, one marker per model, its area growing
    linearly with the parameters that training changed (from a small minimum, so LoRA stays visible)."""
    fig = Figure(figsize=(8, 5.2), layout="constrained")
    ax = fig.subplots()
    points = []
    for g in groups:
        rows = [by_name[n] for n in g["names"]]
        f1, f1_sd = mean_std([r.get("macro_f1") for r in rows])
        ms, _ = mean_std([r.get("latency_p50_ms") for r in rows])
        trainable, _ = mean_std([r.get("params_trainable") for r in rows])
        if not (math.isnan(f1) or math.isnan(ms)):
            points.append((g["label"], ms, f1, f1_sd if len(rows) > 1 else 0.0, trainable))
    largest = max((p[4] for p in points if not math.isnan(p[4])), default=1) or 1
    for label, ms, f1, sd, trainable in points:
        area = 20 + 900 * (0 if math.isnan(trainable) else trainable / largest)
        ax.scatter(ms, f1, s=area, color=colors[label], alpha=0.55, edgecolors="black", linewidths=0.6,
                   marker="s" if label.endswith(" int8") else "o", label=f"{label}: {fmt_count(trainable)} trained")
        if sd:
            ax.errorbar(ms, f1, yerr=sd, color=colors[label], capsize=3, linewidth=1)
        ax.annotate(label, (ms, f1), textcoords="offset points", xytext=(7, 5), fontsize=8)
    ax.set_xlabel("latency of one sentence, median (ms; tokenizing included)")
    ax.set_ylabel("macro-F1 on the test set")
    ax.set_title("Quality against speed; marker area: trainable parameters (squares: int8)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.2, y=0.15)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="outside right upper", frameon=False, markerscale=0.4)
    return fig


def plot_pr_curves(Figure, groups, by_name, run_dirs, colors, probs, labels):
    """Each run's precision-recall curve of class 1 on the test texts, a colour per model (a line
    style per seed), its average precision in the legend and its threshold's point marked."""
    fig = Figure(figsize=(7, 5.2), layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", ":", "-."]
    positive = by_name[groups[0]["names"][0]]["label_names"][1]
    for g in groups:
        for i, name in enumerate(g["names"]):
            row = by_name[name]
            precision, recall, _ = calibration.pr_curve(labels, np.asarray(probs[name])[:, 1])
            label = g["label"] + (f" seed {row['seed']}" if len(g["names"]) > 1 else "")
            ap = calibration.average_precision(labels, np.asarray(probs[name])[:, 1])
            ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", color=colors[g["label"]],
                    linestyle=styles[i % len(styles)], label=f"{label}: AP {ap:.3f}")
            if row.get("recall") is not None and row.get("precision") is not None:  # where the run decides
                ax.plot(row["recall"], row["precision"], "o", color=colors[g["label"]], markeredgecolor="black")
    ax.set_xlabel(f"recall of {positive}")
    ax.set_ylabel(f"precision of {positive}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Precision-recall on the test set ({positive}); dots: each run at its threshold", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left", frameon=False)
    return fig


def fmt_count(n):
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"
