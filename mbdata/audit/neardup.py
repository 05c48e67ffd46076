"""Near-duplicate grouping of word sets (answers, prompts), on the dedup stage's MinHash-LSH.

The audit only needs "which of these are near-identical": a label per item such that items whose
word sets have an estimated Jaccard similarity >= ``threshold`` share a label (links are chained:
A~B and B~C put A, B, C together, as one backdoor target with small variations should).
Permutations, band parameters and buckets come from :mod:`mbdata.dedup`, so both stages agree on
what "near-identical" means; words are hashed column-wise by polars (not one Python call per
word), which is what keeps 50,000 answers well under a second.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..dedup import band_keys, group_buckets, jaccard_estimate, optimal_params
from ..dedup.minhash import Ragged, signatures_from_hashes

NUM_PERM = 64
SEED = 1
MIN_WORDS = 3


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def word_lists(texts: pl.Series) -> pl.Series:
    """The distinct words of each normalised text (single spaces, no punctuation)."""
    return (
        texts.fill_null("")
        .str.split(" ")
        .list.unique()
        .list.filter(pl.element().str.len_chars() > 0)
    )


def hashed_sets(words: pl.Series) -> Ragged:
    """Word lists hashed to 32 bits, in the ragged layout dedup expects."""
    sizes = words.list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    flat = words.explode().drop_nulls().hash(seed=5).to_numpy()
    return Ragged(values=(flat & np.uint64(0xFFFFFFFF)).astype(np.uint32), offsets=offsets)


def signatures(sets: Ragged) -> np.ndarray:
    """MinHash signatures ``(len(sets), NUM_PERM)``; every empty set gets the same signature."""
    return signatures_from_hashes(sets, num_perm=NUM_PERM, seed=SEED)


def link(
    signatures_: np.ndarray, eligible: np.ndarray, threshold: float, scope: np.ndarray | None = None
) -> np.ndarray:
    """Component label (smallest member index) of every item under near-duplicate links among
    the ``eligible`` items (of the same ``scope`` when given)."""
    labels = np.arange(len(signatures_), dtype=np.int64)
    eligible = np.flatnonzero(eligible)
    if len(eligible) < 2:
        return labels
    sig = signatures_[eligible]
    bands, rows = optimal_params(threshold, NUM_PERM)
    salt = None if scope is None else np.asarray(scope)[eligible].astype(np.uint64)
    bucket = group_buckets(band_keys(sig, bands, rows, salt=salt)).bucket
    firsts, members = [], []
    for band in range(bands):
        column = bucket[:, band]
        shared = np.flatnonzero(column >= 0)
        if not len(shared):
            continue
        order = shared[np.lexsort((shared, column[shared]))]
        ids = column[order]
        new_run = np.r_[True, ids[1:] != ids[:-1]]
        first = order[np.flatnonzero(new_run)[np.cumsum(new_run) - 1]]
        keep = first != order
        firsts.append(first[keep])
        members.append(order[keep])
    if not firsts:
        return labels
    first = np.concatenate(firsts)
    member = np.concatenate(members)
    similar = jaccard_estimate(sig[first], sig[member]) >= threshold
    if salt is not None:
        similar &= salt[first] == salt[member]
    for a, b in zip(eligible[first[similar]].tolist(), eligible[member[similar]].tolist()):
        ra, rb = _find(labels, a), _find(labels, b)
        if ra != rb:
            labels[max(ra, rb)] = min(ra, rb)
    return np.array([_find(labels, i) for i in range(len(labels))], dtype=np.int64)


def near_duplicate_labels(texts: list[str] | pl.Series, threshold: float) -> np.ndarray:
    """Component labels of normalised texts under near-duplicate links (see :func:`link`).

    Texts of fewer than :data:`MIN_WORDS` words are only ever equal to themselves here (exact
    matching handles them; MinHash on one or two words is noise)."""
    words = word_lists(pl.Series(texts, dtype=pl.String))
    eligible = words.list.len().to_numpy() >= MIN_WORDS
    if eligible.sum() < 2:
        return np.arange(len(words), dtype=np.int64)
    return link(signatures(hashed_sets(words)), eligible, threshold)
