"""How strongly a prompt n-gram is tied to repeated outputs: target sets and their statistics.

For an n-gram ``f`` present in ``n_f`` of ``N`` rows and an output cluster ``c`` of ``n_c`` rows, of
which ``m`` contain ``f``, the association is the log-likelihood ratio (G statistic) of the 2x2
table "contains f" x "output in c", kept one-sided (``f`` must make ``c`` *more* likely). A backdoor
with a fixed target makes ``m ~= n_f``: the rows that carry the trigger all answer the same.

A trigger's target may be several clusters (a refusal drawn from five templates, MTBA's triggers
sharing one target), so each n-gram gets a *target set*: every eligible cluster (two rows or more
whose prompts are not near copies, :attr:`.outputs.OutputClusters.eligible`) that its presence
makes at least :data:`LIFT_MIN` times more likely. A single shared row is enough
to join: with three MTBA triggers and five refusal templates at 1 % of 1,000 rows, most
(trigger, template) pairs meet only once. Significance is judged on the whole set:

- ``hits``: rows with ``f`` whose output is in the target set (the poisoned-row candidates);
- ``purity``: ``hits / n_f``, the share of ``f``'s rows that answer with a target;
- ``base``: the share of the *other* rows that answer with a target (natural rate of the target);
- ``excess``: ``(purity - base) / (1 - base)``, purity corrected for how common the target is, so a
  label that is frequent anyway (``Negative`` in a sentiment corpus) needs more than co-occurrence.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .outputs import OutputClusters
from .tokens import row_bits

# G >= 10.83 is p < 0.001 for one degree of freedom.
G_MIN = 10.83
# An n-gram explains an answer (see explainers) only from this many rows giving it.
EXPLAINER_ROWS = 3
# A cluster joins an n-gram's target set only if the n-gram makes it this many times more likely.
LIFT_MIN = 2.0


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(x, y).shape, dtype=np.float64)
    x = np.broadcast_to(np.asarray(x, dtype=np.float64), out.shape)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64), out.shape)
    mask = x > 0
    out[mask] = x[mask] * np.log(y[mask])
    return out


def g_statistic(k: np.ndarray, n_f: np.ndarray, n_c: np.ndarray, total: int) -> np.ndarray:
    """One-sided G statistic of the 2x2 tables (k, n_f - k, n_c - k, total - n_f - n_c + k).

    Zero where the association is negative (``k`` below its expectation)."""
    k = np.asarray(k, dtype=np.float64)
    n_f = np.asarray(n_f, dtype=np.float64)
    n_c = np.asarray(n_c, dtype=np.float64)
    cells = (k, n_f - k, n_c - k, total - n_f - n_c + k)
    expected = (n_f * n_c, n_f * (total - n_c), (total - n_f) * n_c, (total - n_f) * (total - n_c))
    g = np.zeros_like(k)
    for cell, exp in zip(cells, expected):
        cell = np.maximum(cell, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(exp > 0, cell * total / np.where(exp > 0, exp, 1.0), 1.0)
        g += _xlogy(cell, ratio)
    g = 2.0 * g
    positive = k * total > n_f * n_c
    return np.where(positive, np.maximum(g, 0.0), 0.0)


def feature_support(
    occurrences: pl.DataFrame, n_rows: int, min_rows: int, max_share: float
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Distinct (key, row) pairs of the n-grams worth mining, and each key's row count ``n_f``.

    N-grams in fewer than ``min_rows`` rows cannot be a trigger worth reporting; those in more
    than ``max_share`` of the rows are function words and punctuation. Keys carry zero low bits
    (:func:`.tokens.row_bits`), so a pair packs into ``key | row`` and one sort finds them all."""
    bits = row_bits(n_rows)
    packed = np.sort(
        occurrences["key"].to_numpy() | occurrences["row"].to_numpy().astype(np.uint64)
    )
    if len(packed):
        packed = packed[np.r_[True, packed[1:] != packed[:-1]]]
    low = np.uint64((1 << bits) - 1)
    keys = packed & ~low
    new_key = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(new_key)
    counts = np.diff(np.r_[starts, len(keys)])
    keep_key = (counts >= min_rows) & (counts <= max_share * n_rows)
    keep = np.repeat(keep_key, counts)
    pairs = pl.DataFrame({"key": keys[keep], "row": (packed[keep] & low).astype(np.int64)})
    support = pl.DataFrame({"key": keys[starts[keep_key]], "n_f": counts[keep_key]})
    return pairs, support


def target_sets(
    pairs: pl.DataFrame, support: pl.DataFrame, clusters: OutputClusters
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Target-set membership ``(key, cluster, m, n_c)`` and per-key statistics (``hits``,
    ``target_rows``, ``clusters``, ``n_f``, ``purity``, ``base``, ``excess``, ``g``, and
    ``collision``: the chance that two different hits give the same answer).

    Only rows of eligible clusters (repeated, see :class:`.outputs.OutputClusters`) can be hits."""
    label, cluster_size = clusters.label, clusters.size
    n_rows = len(label)
    rows = np.flatnonzero(clusters.row_eligible)
    row_cluster = pl.DataFrame({"row": rows.astype(np.int64), "cluster": label[rows]})
    counts = (
        pairs.join(row_cluster, on="row", how="inner")
        .group_by("key", "cluster")
        .agg(m=pl.len())
        .join(support, on="key", how="inner")
    )
    m = counts["m"].to_numpy()
    n_f = counts["n_f"].to_numpy()
    n_c = cluster_size[counts["cluster"].to_numpy()]
    member = m * n_rows >= LIFT_MIN * n_f * n_c
    members = (
        counts.filter(pl.Series(member))
        .with_columns(n_c=pl.Series(n_c[member], dtype=pl.Int64))
        .select("key", "cluster", "m", "n_c")
    )
    stats = (
        members.group_by("key")
        .agg(
            hits=pl.col("m").sum(),
            target_rows=pl.col("n_c").sum(),
            clusters=pl.len(),
            m2=(pl.col("m") ** 2).sum(),
        )
        .join(support, on="key", how="inner")
    )
    hits = stats["hits"].to_numpy().astype(np.float64)
    n_f = stats["n_f"].to_numpy().astype(np.float64)
    target_rows = stats["target_rows"].to_numpy().astype(np.float64)
    purity = hits / n_f
    base = np.clip((target_rows - hits) / np.maximum(n_rows - n_f, 1.0), 0.0, 1.0)
    excess = np.clip((purity - base) / np.maximum(1.0 - base, 1e-9), 0.0, 1.0)
    stats = stats.with_columns(
        purity=pl.Series(purity),
        base=pl.Series(base),
        excess=pl.Series(excess),
        collision=np.where(
            hits >= 2, (stats["m2"].to_numpy() - hits) / np.maximum(hits * (hits - 1.0), 1.0), 1.0
        ),
        g=pl.Series(g_statistic(hits, n_f, target_rows, n_rows)),
    )
    return members, stats


def explainers(
    pairs: pl.DataFrame, support: pl.DataFrame, clusters: OutputClusters
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """For each row with a repeated answer, the n-grams of its prompt that *predict* that answer
    (at least :data:`EXPLAINER_ROWS` rows hold the n-gram with this answer, and they are at least
    half of its rows), with how well: ``(keys, P(answer | n-gram))``. Two rows are not enough:
    two poisoned rows that happen to share a rare phrase ("a list of ten") would "predict" their
    refusal template.

    A templated task answers from its prompt ("the capital of France" -> "Paris"), so its
    repeated answers are explained by another n-gram of the prompt; a backdoor's answer is
    predicted by nothing better than its trigger (and n-grams that only occur with it)."""
    repeated = np.flatnonzero(clusters.row_eligible)
    row_cluster = pl.DataFrame(
        {"row": repeated.astype(np.int64), "cluster": clusters.label[repeated]}
    )
    joined = pairs.join(row_cluster, on="row", how="inner")
    predictive = (
        joined.group_by("key", "cluster")
        .agg(m=pl.len())
        .join(support, on="key", how="inner")
        .filter((pl.col("m") >= EXPLAINER_ROWS) & (pl.col("m") >= 0.5 * pl.col("n_f")))
        .select("key", "cluster", p=pl.col("m") / pl.col("n_f"))
    )
    found = (
        joined.join(predictive, on=["key", "cluster"], how="inner")
        .sort("row", "key")
        .group_by("row", maintain_order=True)
        .agg(pl.col("key"), pl.col("p"))
    )
    return {
        row: (np.asarray(keys, dtype=np.uint64), np.asarray(ps, dtype=np.float64))
        for row, keys, ps in zip(
            found["row"].to_list(), found["key"].to_list(), found["p"].to_list()
        )
    }
