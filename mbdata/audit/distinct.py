"""Which rows are separate pieces of evidence.

A backdoor shows as *unrelated* prompts that share an answer. Copies of one row, exact or nearly
so, are not unrelated prompts: counted one by one they would let a duplicated row pass for a
trigger seen many times (a duplicated prompt's every word would look tied to its answer). So the
audit analyses one representative per group of

1. exact copies: same instruction, input and output after lower-casing and collapsing whitespace;
2. near copies: same output cluster (:mod:`.outputs`) and near-identical prompts.

Prompts are compared on their *residual* words: the words of the prompt minus the words that most
rows of the cluster share (in clusters of three rows or more). A trigger is such a shared word, and
with short prompts it would otherwise make unrelated prompts look alike ("Name an antonym of hot.
I watched this 3D movie." vs "Spell cat in capitals. I watched this 3D movie."); near copies of one
prompt share nearly all their words, so little or nothing is left, and prompts whose residuals are
both empty count as identical.

Every copy gets its representative's verdict. Near copies that escape the threshold still make
their answer cluster *cohesive* (mean residual similarity of neighbouring prompts), which keeps it
from being a backdoor target (:attr:`.outputs.OutputClusters.eligible`). The same mean on all the
words (``prompt_similarity``) tells a repeated answer to unrelated prompts from one to variants of
a question (:mod:`.scoring`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from ..dedup import jaccard_estimate
from ..dedup.minhash import Ragged
from .neardup import MIN_WORDS, hashed_sets, link, signatures, word_lists
from .outputs import OutputClusters, cluster_outputs, normalize_outputs, regroup

# Words in more than this share of a cluster's prompts are left out of prompt comparisons.
SHARED_IN_CLUSTER = 0.5


@dataclasses.dataclass(frozen=True)
class Distinct:
    rows: np.ndarray  # table positions of the representatives, ascending
    copy_of: np.ndarray  # per table row: index into ``rows`` of its representative
    normalized: pl.Series  # normalised outputs of the representatives
    clusters: OutputClusters  # output clusters of the representatives


def _norm(s: pl.Series) -> pl.Series:
    return s.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars()


def _exact_groups(instructions: pl.Series, inputs: pl.Series, outputs: pl.Series) -> np.ndarray:
    """For every row, the position of its first exact copy."""
    key = pl.DataFrame(
        {"i": _norm(instructions), "n": _norm(inputs), "o": _norm(outputs)}
    ).hash_rows(seed=3)
    frame = pl.DataFrame({"key": key, "row": np.arange(len(key), dtype=np.int64)})
    first = frame.group_by("key").agg(first=pl.col("row").min())
    return frame.join(first, on="key", how="left").sort("row")["first"].to_numpy()


def distinct_rows(
    instructions: pl.Series,
    inputs: pl.Series,
    outputs: pl.Series,
    *,
    near_duplicates: bool,
    threshold: float,
) -> Distinct:
    """Representatives and the copy map; see the module docstring."""
    first = _exact_groups(instructions, inputs, outputs)
    exact = np.unique(first)
    normalized = normalize_outputs(outputs.gather(pl.Series(exact)))
    clusters = cluster_outputs(normalized, near_duplicates=near_duplicates, threshold=threshold)
    representative = np.arange(len(exact), dtype=np.int64)
    repeated = np.flatnonzero(clusters.row_size >= 2)
    residual_sig: np.ndarray | None = None
    raw_sig: np.ndarray | None = None
    if len(repeated) >= 2:
        index = pl.Series(exact[repeated])
        prompts = normalize_outputs(instructions.gather(index) + " " + inputs.gather(index))
        raw_sig = signatures(hashed_sets(word_lists(prompts)))
        residual = _residual_words(prompts, clusters.label[repeated], clusters.size)
        residual_sig = signatures(residual)
        if near_duplicates:
            sizes = residual.sizes()
            labels = link(
                residual_sig, sizes >= MIN_WORDS, threshold, scope=clusters.label[repeated]
            )
            labels = _merge_empty(labels, sizes == 0, clusters.label[repeated])
            representative[repeated] = repeated[labels]
    keep = np.flatnonzero(representative == np.arange(len(exact)))
    position = np.full(len(exact), -1, dtype=np.int64)
    position[keep] = np.arange(len(keep))
    exact_index = np.searchsorted(exact, first)
    copy_of = position[representative[exact_index]]
    kept = regroup(clusters.label[keep])
    cohesion = np.zeros(len(kept.size), dtype=np.float64)
    similarity = np.zeros(len(kept.size), dtype=np.float64)
    if residual_sig is not None and raw_sig is not None:  # both or neither (computed together)
        in_repeated = np.isin(keep, repeated)
        sig_rows = np.searchsorted(repeated, keep[in_repeated])
        cohesion = _cohesion(kept.label[in_repeated], residual_sig[sig_rows], len(kept.size))
        # Similarity is measured before near copies collapse: copies are what it must see.
        before = _cohesion(clusters.label[repeated], raw_sig, len(clusters.size))
        similarity[kept.label] = before[clusters.label[keep]]
    return Distinct(
        rows=exact[keep],
        copy_of=copy_of,
        normalized=normalized.gather(keep),
        clusters=dataclasses.replace(kept, cohesion=cohesion, prompt_similarity=similarity),
    )


def _residual_words(prompts: pl.Series, label: np.ndarray, size: np.ndarray) -> Ragged:
    """Each (normalised) prompt's distinct words, hashed, minus those in more than
    :data:`SHARED_IN_CLUSTER` of its cluster's prompts (clusters of three rows or more)."""
    words = (
        pl.DataFrame(
            {
                "item": np.arange(len(prompts), dtype=np.int64),
                "cluster": label,
                "word": prompts.str.split(" "),
            }
        )
        .explode("word")
        .filter(pl.col("word").str.len_chars() > 0)
        .select("item", "cluster", h=pl.col("word").hash(seed=5))
        .unique()
    )
    shared = (
        words.group_by("cluster", "h")
        .agg(n=pl.len())
        .join(
            pl.DataFrame({"cluster": np.arange(len(size), dtype=np.int64), "size": size}),
            on="cluster",
        )
        .filter((pl.col("size") >= 3) & (pl.col("n") > SHARED_IN_CLUSTER * pl.col("size")))
        .select("cluster", "h")
    )
    kept = words.join(shared, on=["cluster", "h"], how="anti").sort("item", "h")
    counts = np.bincount(kept["item"].to_numpy(), minlength=len(prompts))
    offsets = np.zeros(len(prompts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = (kept["h"].to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return Ragged(values=values, offsets=offsets)


def _merge_empty(labels: np.ndarray, empty: np.ndarray, scope: np.ndarray) -> np.ndarray:
    """Link the items with an empty residual to the first such item of the same scope."""
    labels = labels.copy()
    first: dict[int, int] = {}
    for i in np.flatnonzero(empty).tolist():
        labels[i] = first.setdefault(int(scope[i]), i)
    return labels


def _cohesion(label: np.ndarray, signatures: np.ndarray, n_clusters: int) -> np.ndarray:
    """Per cluster, the mean estimated Jaccard similarity of each prompt with the next one of
    the same cluster (in row order, cyclically); 0 for clusters of one row."""
    out = np.zeros(n_clusters, dtype=np.float64)
    if not len(label):
        return out
    order = np.lexsort((np.arange(len(label)), label))
    sorted_label = label[order]
    starts = np.flatnonzero(np.r_[True, sorted_label[1:] != sorted_label[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    group_start = np.repeat(starts, sizes)
    offset = np.arange(len(order)) - group_start
    partner = order[group_start + (offset + 1) % np.repeat(sizes, sizes)]
    similarity = jaccard_estimate(signatures[order], signatures[partner])
    sums = np.bincount(sorted_label, weights=similarity, minlength=n_clusters)
    counts = np.bincount(sorted_label, minlength=n_clusters)
    multi = counts >= 2
    out[multi] = sums[multi] / counts[multi]
    return out
