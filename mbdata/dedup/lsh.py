"""Locality-sensitive hashing over signature matrices: band parameters, band keys and buckets.

Two rows become *candidates* when all ``rows`` signature values of at least one of ``bands`` bands
agree; for Jaccard similarity ``s`` that happens with probability ``1 - (1 - s^rows)^bands``.
:func:`optimal_params` picks ``(bands, rows)`` the way datasketch's ``MinHashLSH(threshold,
num_perm)`` does (minimising the equally weighted integrals of false-positive probability below the
threshold and false-negative probability above it), so an index built by datasketch from our
signatures behaves the same.

Instead of a dictionary per band, each band's values are folded into one 64-bit key per row
(vectorised over all rows) and rows are grouped by sorting the keys. A key collision between
different bands would need two 64-bit mixes to agree (probability ~2^-64 per pair) and is removed by
verification when that is on.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_MASK64 = (1 << 64) - 1


def collision_probability(similarity: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """Probability that two rows of Jaccard ``similarity`` share at least one band."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


@functools.lru_cache(maxsize=64)
def optimal_params(
    threshold: float,
    num_perm: int,
    false_positive_weight: float = 0.5,
    false_negative_weight: float = 0.5,
) -> tuple[int, int]:
    """``(bands, rows)`` minimising ``fp_weight * FP + fn_weight * FN`` (datasketch's rule).

    The integrands are polynomials of degree ``bands * rows <= num_perm``, so Gauss-Legendre
    quadrature with ``num_perm // 2 + 1`` nodes integrates them exactly (no scipy needed). The
    search visits ``(bands, rows)`` in datasketch's order and keeps the first minimum.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    nodes, weights = np.polynomial.legendre.leggauss(max(8, num_perm // 2 + 1))

    def integral(lo: float, hi: float, values_of) -> np.ndarray:
        x = (hi - lo) / 2.0 * nodes + (hi + lo) / 2.0
        return (hi - lo) / 2.0 * (values_of(x) @ weights)

    best, best_error = (0, 0), float("inf")
    for bands in range(1, num_perm + 1):
        rows = np.arange(1, num_perm // bands + 1, dtype=np.float64)[:, None]
        fp = integral(0.0, threshold, lambda s, r=rows, b=bands: 1.0 - (1.0 - s**r) ** b)
        fn = integral(threshold, 1.0, lambda s, r=rows, b=bands: (1.0 - s**r) ** b)
        errors = fp * false_positive_weight + fn * false_negative_weight
        i = int(np.argmin(errors))
        if errors[i] < best_error:
            best, best_error = (bands, i + 1), float(errors[i])
    return best


def _mix(values: np.ndarray) -> np.ndarray:
    values ^= values >> _S33
    values *= _M1
    values ^= values >> _S33
    values *= _M2
    values ^= values >> _S33
    return values


def band_keys(
    signatures: np.ndarray, bands: int, rows: int, salt: np.ndarray | None = None
) -> np.ndarray:
    """One 64-bit key per (row, band): ``(n, bands)`` uint64.

    ``salt`` (one uint64 per row, optional) is mixed into every key, so rows with different salts
    never share a bucket (dedup uses it to keep splits apart).
    """
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows = {bands * rows} exceeds the signature length {num_perm}")
    keys = np.empty((n, bands), dtype=np.uint64)
    for band in range(bands):
        key = np.full(n, ((band + 1) * int(_GOLDEN)) & _MASK64, dtype=np.uint64)
        if salt is not None:
            key ^= salt
            key = _mix(key)
        for col in range(band * rows, (band + 1) * rows):
            key ^= signatures[:, col].astype(np.uint64)
            key *= _GOLDEN
            key = _mix(key)
        keys[:, band] = key
    return keys


@dataclasses.dataclass(frozen=True)
class Buckets:
    """Rows grouped by band key. ``bucket[i, band]`` is a bucket number shared by every row with the
    same key in that band, or -1 when row ``i`` is alone in its bucket (no candidates there)."""

    bucket: np.ndarray

    @property
    def in_play(self) -> np.ndarray:
        """Row positions with at least one candidate, ascending."""
        return np.flatnonzero((self.bucket >= 0).any(axis=1))


def group_buckets(keys: np.ndarray) -> Buckets:
    """Group equal keys of each band (column of ``keys``) into numbered buckets."""
    n, bands = keys.shape
    bucket = np.full((n, bands), -1, dtype=np.int64)
    next_id = 0
    for band in range(bands):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        if n == 0:
            continue
        new_run = np.empty(n, dtype=bool)
        new_run[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_run[1:])
        run_id = np.cumsum(new_run) - 1
        run_size = np.bincount(run_id)
        shared = run_size[run_id] > 1
        ids = run_id + next_id
        bucket[order[shared], band] = ids[shared]
        next_id += len(run_size)
    return Buckets(bucket)
