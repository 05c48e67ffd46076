"""Output clusters: rows whose answers are identical or near-identical.

A fixed backdoor target (a refusal, a label, a canned sentence) makes many rows with unrelated
prompts share one answer; a clean corpus rarely repeats an answer except for short labels. Outputs
are compared in a normal form (lower case, punctuation and underscores dropped, whitespace
collapsed), so ``"Negative."`` and ``"negative"`` are one cluster; with ``near_duplicates``
clusters whose texts are near-identical (MinHash over words) are merged too.

Cluster ids are dense and deterministic: 0 is the largest cluster, ties broken by first row.

A cluster can only be a backdoor target if it is *repeated* (two rows or more) and its prompts are
not near copies of one another (``cohesion``, the mean estimated Jaccard similarity of the words of
neighbouring prompts in the cluster, below :data:`COHESIVE`): the same answer to the same question
asked twice is no evidence of anything.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from .neardup import near_duplicate_labels

COHESIVE = 0.5


def normalize_outputs(outputs: pl.Series) -> pl.Series:
    """The normal form outputs are clustered in: lower-case words separated by single spaces."""
    return (
        outputs.fill_null("").str.to_lowercase().str.replace_all(r"[\W_]+", " ").str.strip_chars()
    )


@dataclasses.dataclass(frozen=True)
class OutputClusters:
    label: np.ndarray  # int64 per row: its cluster id
    size: np.ndarray  # int64 per cluster: rows in it
    first_row: np.ndarray  # int64 per cluster: its first row (the example shown in reports)
    cohesion: np.ndarray | None = None  # per cluster: residual prompt similarity (see .distinct)
    prompt_similarity: np.ndarray | None = None  # per cluster: the same on all prompt words

    @property
    def row_size(self) -> np.ndarray:
        """Size of each row's cluster."""
        return self.size[self.label]

    @property
    def eligible(self) -> np.ndarray:
        """Per cluster: can it be a backdoor target (repeated, prompts not near copies)?"""
        ok = self.size >= 2
        if self.cohesion is not None:
            ok &= self.cohesion < COHESIVE
        return ok

    @property
    def row_eligible(self) -> np.ndarray:
        return self.eligible[self.label]


def _dense(keys: np.ndarray) -> OutputClusters:
    """Renumber arbitrary per-row keys into size-ordered cluster ids."""
    frame = pl.DataFrame({"key": keys, "row": np.arange(len(keys), dtype=np.int64)})
    groups = (
        frame.group_by("key")
        .agg(size=pl.len(), first_row=pl.col("row").min())
        .sort(["size", "first_row"], descending=[True, False])
        .with_row_index("cluster")
    )
    joined = frame.join(groups.select("key", "cluster"), on="key", how="left").sort("row")
    return OutputClusters(
        label=joined["cluster"].to_numpy().astype(np.int64),
        size=groups["size"].to_numpy().astype(np.int64),
        first_row=groups["first_row"].to_numpy().astype(np.int64),
    )


def regroup(label: np.ndarray) -> OutputClusters:
    """Clusters of a subset of rows, from their labels in a larger clustering (renumbered)."""
    return _dense(np.asarray(label, dtype=np.int64))


def cluster_outputs(
    normalized: pl.Series, *, near_duplicates: bool = True, threshold: float = 0.8
) -> OutputClusters:
    """Cluster every row's output, given in normal form (:func:`normalize_outputs`)."""
    exact = _dense(normalized.hash(seed=11).to_numpy())
    if not near_duplicates or len(exact.size) < 2:
        return exact
    representatives = normalized.gather(exact.first_row)
    merged = near_duplicate_labels(representatives, threshold)
    if np.array_equal(merged, np.arange(len(merged))):
        return exact
    return _dense(merged[exact.label])
