"""
The cluster bootstrap: intervals that hold both ways a score could have come out otherwise, other
test texts and another training seed, and families of intervals that hold together.

Test texts are not independent draws. hate_speech18's sentences come by author (about four each),
Davidson's tweets by near-duplicate (one retweet, many copies), the behaviour suite's cases by
template: texts of one cluster tend to be right or wrong together, and resampling them one by one
counts each as fresh evidence, so the intervals come out too narrow. Resampling whole clusters keeps
what their texts share. A model trained with several seeds is also one draw of its training: its
seeds are resampled too (a two-level bootstrap), so that an interval holds the seed-to-seed spread.

    cluster_ids(groups, n)                         a cluster per text; a text of no group is its own
    cluster_weights(clusters, resamples, rng)      (B, N): how often each text's cluster is drawn
    model_scores(labels, preds, C, weights, draws) a model's accuracy, macro-F1 (and recall): point and (B,) resamples
    simultaneous(diffs)                            max-t intervals and adjusted p-values of a family
    compare(labels, preds, pairs, C, clusters)     every pair of models, one family (the report's table)
    score_intervals(labels, preds, C, clusters)    one run's scores with their intervals (the model card)
    pass_rates(results, label)                     behaviour pass rates, by template, with intervals

Read top to bottom:
  1. clusters and resamples: clusters drawn with replacement, then each model's seeds;
  2. a model's scores under every resample (mean over the drawn seeds);
  3. intervals: one alone (percentile), a family of differences (max-t, simultaneous);
  4. models compared: every pair, one family;
  5. the behaviour suite: pass rates of functionalities, templates as clusters.

This module imports metrics.py (weighted_scores) and numpy, nothing else.
"""

import math

import numpy as np

import metrics

LEVEL = 0.95

# -----------------------------------------------------------------------------
# 1. Clusters and resamples


def cluster_ids(groups, n=None):
    """(N,) integer cluster of each text, in order of first appearance: texts of one group share one;
    a text whose group is None, or every text when groups is None (n texts), is a cluster of its own."""
    if groups is None:
        return np.arange(n)
    seen = {}
    return np.asarray([seen.setdefault(("text", i) if g is None else ("group", g), len(seen)) for i, g in enumerate(groups)])


def row_counts(draws, n):
    """(B, n) counts of each of n values in each row of draws (B, k): one bincount for all rows."""
    b = len(draws)
    flat = (draws + np.arange(b)[:, None] * n).ravel()  # value v of row r lands in cell r * n + v
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def cluster_weights(clusters, resamples=1000, rng=0, strata=None):
    """
    (B, N) weights: resample b draws as many clusters as there are, with replacement, and a text weighs
    as often as its cluster was drawn. strata (one per text, constant within a cluster): clusters are
    drawn within each stratum, as many as it has (the behaviour suite: templates within the
    functionality that wrote them). Each text its own cluster: the plain bootstrap of texts.
    """
    rng = np.random.default_rng(rng)
    ids, index = np.unique(np.asarray(clusters), return_inverse=True)  # text i is in cluster index[i]
    stratum = np.zeros(len(ids), dtype=np.int64)
    if strata is not None:
        _, of_text = np.unique(np.asarray(strata), return_inverse=True)
        stratum[index] = of_text
    counts = np.zeros((resamples, len(ids)))
    for s in np.unique(stratum):
        members = np.flatnonzero(stratum == s)
        counts[:, members] = row_counts(rng.integers(0, len(members), size=(resamples, len(members))), len(members))
    return counts[:, index]


def draw_seeds(n_seeds, resamples, rng):
    """(B, k) the seeds (0..k-1) of a model of k seeds drawn, k with replacement, in each resample."""
    return np.random.default_rng(rng).integers(0, n_seeds, size=(resamples, n_seeds))


# -----------------------------------------------------------------------------
# 2. A model's scores under every resample


def per_resample(per_seed, draws):
    """(B,) the mean over each resample's drawn seeds of per_seed (k, B) scores; draws None: every seed once."""
    if draws is None:
        return per_seed.mean(0)
    return per_seed[draws, np.arange(per_seed.shape[1])[:, None]].mean(1)  # per_seed[draws[b, j], b]


def model_scores(labels, preds, num_classes, weights, draws=None):
    """
    {"accuracy" / "macro_f1" (/ "recall", two classes): (point, (B,) resamples)} of a model. preds: its decisions, one array per
    seed; point: the mean over its seeds on the test texts as they are; resample b: the mean over the
    seeds draws[b] of the scores under weights[b].
    """
    weights = np.vstack([np.ones((1, weights.shape[1])), weights])  # row 0: the test texts as they are
    per_seed = [metrics.weighted_scores(weights, labels, p, num_classes) for p in preds]
    out = {}
    for key in per_seed[0]:
        scores = np.asarray([s[key] for s in per_seed])  # (k, 1 + B)
        out[key] = (float(scores[:, 0].mean()), per_resample(scores[:, 1:], draws))
    return out


# -----------------------------------------------------------------------------
# 3. Intervals: one alone, and a family


def percentile(point, boot, level=LEVEL):
    """{"value", "low", "high"}: the central `level` share of the resamples (NaN ones left out)."""
    low, high = np.nanpercentile(boot, [50 * (1 - level), 50 * (1 + level)])
    return {"value": float(point), "low": float(low), "high": float(high)}


def simultaneous(diffs, level=LEVEL):
    """
    Max-t intervals for a family of m differences, each (point d_j, (B,) resamples d*_j) on the same
    resamples, that all hold together with probability `level`:

        se_j = sd of d*_j,   T_b = max_j |d*_bj - d_j| / se_j,   q = the ceil(level B)-th smallest T_b,
        interval_j = d_j -+ q se_j,   adjusted p_j = (1 + #{b : T_b >= |d_j| / se_j}) / (B + 1).

    The widest deviation of the family is what q bounds, so any one interval excludes 0 by chance
    with probability at most 1 - level over the whole family (the max-t method of Westfall & Young).
    A difference that never varies (se 0) has the interval [d, d]. Returns [{"diff", "low", "high",
    "se", "p"}], in the order given.
    """
    if not diffs:
        return []
    points = np.asarray([d for d, _ in diffs], dtype=np.float64)
    boots = np.asarray([b for _, b in diffs], dtype=np.float64)  # (m, B)
    se = boots.std(axis=1)
    varies = se > 0
    t = np.zeros_like(boots)
    t[varies] = np.abs(boots[varies] - points[varies, None]) / se[varies, None]
    top = t.max(axis=0)  # (B,) the widest deviation of the family in each resample
    q = float(np.sort(top)[math.ceil(level * len(top)) - 1])
    observed = np.where(varies, np.abs(points) / np.where(varies, se, 1), np.where(points == 0, 0, np.inf))
    return [{"diff": float(d), "low": float(d - q * s), "high": float(d + q * s), "se": float(s),
             "p": float((1 + (top >= o).sum()) / (len(top) + 1))} for d, s, o in zip(points, se, observed, strict=True)]


# -----------------------------------------------------------------------------
# 4. Models compared: every pair, one family


def compare(labels, preds, pairs, num_classes, clusters=None, *, resamples=1000, seed=0, keys=("macro_f1", "accuracy"),
            resample_seeds=True):
    """
    Paired differences A - B for every pair of models and every score in keys, as one family of
    simultaneous intervals (len(pairs) * len(keys) of them). preds: {model: [decisions per seed]};
    clusters: per test text (cluster_ids), None: each text its own. Every model is scored on the same
    cluster resamples (the pairing); each model's seeds are drawn once per resample, and the same
    draws serve every pair it is in. resample_seeds=False: the mean of the seeds, training held fixed.
    Returns [{key: {"diff", "low", "high", "se", "p"}}], one per pair.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    weights = cluster_weights(cluster_ids(None, len(labels)) if clusters is None else clusters, resamples, rng)
    scores = {m: model_scores(labels, p, num_classes, weights, draw_seeds(len(p), resamples, rng) if resample_seeds else None)
              for m, p in preds.items()}
    diffs = [(scores[a][k][0] - scores[b][k][0], scores[a][k][1] - scores[b][k][1]) for a, b in pairs for k in keys]
    family = simultaneous(diffs)
    return [dict(zip(keys, family[i * len(keys):(i + 1) * len(keys)], strict=True)) for i in range(len(pairs))]


def score_intervals(labels, preds, num_classes, clusters=None, resamples=1000, seed=0):
    """{"accuracy" / "macro_f1": [low, high]}: the 95% percentile intervals of one run's scores, its test
    texts resampled by cluster (the model card's; one seed, so the training is held fixed)."""
    labels = np.asarray(labels)
    weights = cluster_weights(cluster_ids(None, len(labels)) if clusters is None else clusters, resamples, seed)
    scores = model_scores(labels, [np.asarray(preds)], num_classes, weights)
    return {k: [percentile(*scores[k])["low"], percentile(*scores[k])["high"]] for k in ("accuracy", "macro_f1")}


def describe(n_texts, n_clusters, words, resamples, seeds=False, family=None, seed=None):
    """
    What a table's intervals are, for its caption: "95% cluster bootstrap over 312 authors (1,044 test
    texts) and over seeds, 1,000 resamples (seed 0); simultaneous intervals (max-t) over the 6 differences
    of this table". words: what the clusters are (splits.cluster_words), None: each text is its own.
    """
    over = f"over {n_clusters:,} {words} ({n_texts:,} test texts)" if words else \
        f"over the {n_texts:,} test texts, each its own cluster (the data names no groups)"
    text = f"{LEVEL:.0%} cluster bootstrap {over}" + (", and over seeds" if seeds else "") + f", {resamples:,} resamples"
    text += f" (seed {seed})" if seed is not None else ""
    if family is not None:
        text += f"; simultaneous intervals (max-t) over the {family} differences of this table"
    return text


# -----------------------------------------------------------------------------
# 5. The behaviour suite: templates as clusters


def pass_rate_scores(results, label, templates, weights, draws=None):
    """
    {functionality: (point, (B,) resamples)} and "mean" (over the functionalities) of the pass rates on
    `label` of a model whose seeds' run_suite results are `results`. A functionality's rate under the
    template weights w: sum_t w_t passed_t / sum_t w_t n_t over the templates its cases came from.
    """
    names = [f for f, row in results[0]["functionalities"].items() if label in row["labels"]]
    column = {t: j for j, t in enumerate(templates)}
    full = np.vstack([np.ones((1, len(templates))), weights])  # row 0: the suite as it is
    rates = np.empty((len(results), len(names), len(full)))  # (seeds, functionalities, 1 + B)
    for s, result in enumerate(results):
        for i, f in enumerate(names):
            passed, n = np.zeros(len(templates)), np.zeros(len(templates))
            for t, (p, k) in result["functionalities"][f]["labels"][label]["by_template"].items():
                passed[column[t]], n[column[t]] = p, k
            with np.errstate(invalid="ignore", divide="ignore"):  # a resample that drew none of its templates
                rates[s, i] = (full @ passed) / (full @ n)
    out = {f: (float(rates[:, i, 0].mean()), per_resample(rates[:, i, 1:], draws)) for i, f in enumerate(names)}
    with np.errstate(invalid="ignore"):
        means = np.nanmean(rates, axis=1)  # (seeds, 1 + B)
    out["mean"] = (float(means[:, 0].mean()), per_resample(means[:, 1:], draws))
    return out


def suite_templates(results, label):
    """(templates, strata) of the cases that test `label`: every template id once, and the functionality
    that wrote it (the id is "<functionality>#<index>"), within which templates are drawn."""
    templates = sorted({t for r in results for row in r["functionalities"].values()
                        for t in row["labels"].get(label, {}).get("by_template", {})})
    return templates, [t.rsplit("#", 1)[0] for t in templates]


def pass_rates(results, label, resamples=1000, seed=0):
    """{functionality: {"value", "low", "high"}} and "mean": pass rates on `label` of a model of one
    run_suite result per seed, with 95% intervals of the cluster bootstrap over templates (drawn within
    the functionality that wrote them) and, for several results, over seeds."""
    templates, strata = suite_templates(results, label)
    rng = np.random.default_rng(seed)
    weights = cluster_weights(np.arange(len(templates)), resamples, rng, strata)
    scores = pass_rate_scores(results, label, templates, weights, draw_seeds(len(results), resamples, rng))
    return {f: percentile(point, boot) for f, (point, boot) in scores.items()}
