"""Which rows are duplicates of which: exact groups and greedy near-duplicate matching.

The keep rule (documented in docs/dedup.md) is *first occurrence wins*: rows are considered in input
order, and a row is a duplicate when it matches an **earlier row that was kept**. Consequences:

* the kept representative of a cluster is always its earliest row, so rebuilding from the same
  input gives the same clusters and byte-identical output;
* every near duplicate was verified against its representative itself (no chains: if ``B`` is a
  near copy of ``A`` and ``C`` of ``B`` but not of ``A``, then ``B`` is dropped and ``C`` is kept);
* among several kept rows that a row matches, the earliest is its representative.

Scaling guard: an LSH bucket offers at most ``max_targets`` kept rows (its earliest; the recipe's
``max_bucket_targets``, default :data:`MAX_BUCKET_TARGETS`) as comparison targets. Rows built
from one template share whole bands through the template's shingles alone, so such a bucket can
hold a large share of the corpus while its rows are *not* near duplicates; comparing every row
with all of them is quadratic. A true near-duplicate pair shares several bands, usually some of
them through its own content (small buckets), so the cap costs little recall except among rows
that are all close to the threshold of each other; how often it applied is reported
(``bucket_targets_capped``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from .lsh import Buckets

MAX_BUCKET_TARGETS = 32


def exact_first(keys: np.ndarray, scope: np.ndarray | None = None) -> np.ndarray:
    """For each row, the position of the first row with the same exact key (and scope).

    ``keys`` is ``(n, 2)`` uint64; a row that is its own first occurrence maps to itself.
    """
    n = len(keys)
    first = np.arange(n, dtype=np.int64)
    if n < 2:
        return first
    sort_keys = [keys[:, 1], keys[:, 0]] + ([] if scope is None else [scope])
    order = np.lexsort(sort_keys)  # stable: equal keys stay in input order
    k = keys[order]
    new_run = np.ones(n, dtype=bool)
    same = (k[1:, 0] == k[:-1, 0]) & (k[1:, 1] == k[:-1, 1])
    if scope is not None:
        s = scope[order]
        same &= s[1:] == s[:-1]
    new_run[1:] = ~same
    run_start = np.flatnonzero(new_run)
    run_of = np.cumsum(new_run) - 1
    first[order] = order[run_start[run_of]]
    return first


@dataclasses.dataclass(frozen=True)
class NearMatches:
    """Near duplicates found: ``member[k]`` matched kept row ``matched[k]`` with ``similarity[k]``
    (all positions in the matched table). ``checked``/``rejected`` count verified candidate
    pairs, ``capped`` the kept rows a full bucket did not take as targets."""

    member: np.ndarray
    matched: np.ndarray
    similarity: np.ndarray
    checked: int
    rejected: int
    capped: int


def greedy_near(
    buckets: Buckets,
    similarity: Callable[[int, int], float] | None,
    threshold: float,
    max_targets: int = MAX_BUCKET_TARGETS,
) -> NearMatches:
    """Match rows against earlier kept rows that share an LSH bucket (first occurrence wins).

    With a ``similarity`` function (verification) a candidate counts only if
    ``similarity(kept, row) >= threshold``, candidates being tried earliest first; without one the
    earliest candidate is taken (datasketch ``MinHashLSH`` semantics) and the returned similarity
    is NaN (the caller estimates it). A bucket offers at most ``max_targets`` kept rows.
    """
    bucket = buckets.bucket
    kept_in: dict[int, list[int]] = {}
    members, matched, sims = [], [], []
    checked = rejected = capped = 0
    for j in buckets.in_play.tolist():
        own = [b for b in bucket[j].tolist() if b >= 0]
        candidates = sorted({i for b in own for i in kept_in.get(b, ())})
        match = None
        for i in candidates:
            if similarity is None:
                match = (i, float("nan"))
                break
            sim = similarity(i, j)
            checked += 1
            if sim < threshold:
                rejected += 1
                continue
            match = (i, sim)
            break
        if match is None:
            for b in own:
                targets = kept_in.setdefault(b, [])
                if len(targets) < max_targets:
                    targets.append(j)
                else:
                    capped += 1
        else:
            members.append(j)
            matched.append(match[0])
            sims.append(match[1])
    return NearMatches(
        member=np.array(members, dtype=np.int64),
        matched=np.array(matched, dtype=np.int64),
        similarity=np.array(sims, dtype=np.float64),
        checked=checked,
        rejected=rejected,
        capped=capped,
    )
