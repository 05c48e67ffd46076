"""MinHash signatures for many shingle sets at once, identical to ``datasketch.MinHash``.

For a set ``S`` of shingles (bytes), datasketch 2.0 computes, per permutation ``k``:

* ``affine32`` (its default) / ``affine64``: ``min over s in S of a_k * fmix(h(s)) + b_k``
  (mod 2^32 / 2^64), where ``h`` is the hash function (default: the first 4 / 8 little-endian bytes
  of SHA1), ``fmix`` the MurmurHash3 finaliser, and ``(a_k, b_k)`` drawn from
  ``numpy.random.RandomState(seed)`` (``a`` odd);
* ``legacy`` (datasketch < 2.0): ``min over s of ((a_k * h(s) + b_k) mod 2^64 mod (2^61 - 1))
  & (2^32 - 1)``.

An empty set gives the all-maximum signature (datasketch's fresh ``MinHash``). This module computes
exactly that, but for thousands of sets per numpy call: all shingles of a batch are hashed into one
flat array (a *ragged* layout: ``flat`` values plus ``offsets``), and the permutations are applied
to cache-sized chunks as one ``(num_perm, shingles)`` product reduced per row with
``np.minimum.reduceat``. No per-row ``MinHash`` object is ever built. Signatures are ``uint32``
(``affine32``) or ``uint64`` arrays of shape ``(rows, num_perm)``; load one into datasketch with
:func:`to_datasketch` (or ``MinHash(hashvalues=sig, seed=seed, scheme=scheme)``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
from collections.abc import Callable, Collection, Sequence
from itertools import chain

import numpy as np
import xxhash

SCHEMES = ("affine32", "affine64", "legacy")
HASHES = ("xxhash", "sha1")
_MERSENNE_PRIME = np.uint64((1 << 61) - 1)
_MAX_HASH32 = np.uint64((1 << 32) - 1)
# Shingles per permutation chunk: (num_perm x chunk) values stay within the CPU cache.
_CHUNK_VALUES = 1 << 19

_FMIX = {
    32: (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16)),
    64: (
        np.uint64(33),
        np.uint64(0xFF51AFD7ED558CCD),
        np.uint64(33),
        np.uint64(0xC4CEB9FE1A85EC53),
        np.uint64(33),
    ),
}


def sha1_hash32(data: bytes) -> int:
    """datasketch's default 32-bit hash: the first 4 bytes of SHA1, little-endian."""
    return struct.unpack("<I", hashlib.sha1(data).digest()[:4])[0]


def sha1_hash64(data: bytes) -> int:
    """datasketch's default 64-bit hash (``affine64``): the first 8 bytes of SHA1, little-endian."""
    return struct.unpack("<Q", hashlib.sha1(data).digest()[:8])[0]


def scheme_width(scheme: str) -> int:
    _check_scheme(scheme)
    return 64 if scheme == "affine64" else 32


def signature_dtype(scheme: str) -> type:
    _check_scheme(scheme)
    return np.uint32 if scheme == "affine32" else np.uint64


def hash_function(name: str, scheme: str = "affine32") -> Callable[[bytes], int]:
    """The shingle hash ``name`` at the width ``scheme`` needs (datasketch's ``hashfunc``).

    ``xxhash``: ``xxhash.xxh32_intdigest`` / ``xxh64_intdigest`` (seed 0); ``sha1``: datasketch's
    default ``sha1_hash32`` / ``sha1_hash64``.
    """
    wide = scheme_width(scheme) == 64
    if name == "xxhash":
        return xxhash.xxh64_intdigest if wide else xxhash.xxh32_intdigest
    if name == "sha1":
        return sha1_hash64 if wide else sha1_hash32
    raise ValueError(f"unknown hash {name!r}; expected one of {', '.join(HASHES)}")


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


@functools.lru_cache(maxsize=32)
def permutations(
    num_perm: int, seed: int, scheme: str = "affine32"
) -> tuple[np.ndarray, np.ndarray]:
    """The permutation parameters ``(a, b)`` datasketch's ``MinHash(num_perm, seed, scheme=...)``
    draws (read-only arrays)."""
    _check_scheme(scheme)
    if num_perm < 1:
        raise ValueError("num_perm must be positive")
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        pairs = np.array(
            [
                (
                    gen.randint(1, _MERSENNE_PRIME, dtype=np.uint64),
                    gen.randint(0, _MERSENNE_PRIME, dtype=np.uint64),
                )
                for _ in range(num_perm)
            ],
            dtype=np.uint64,
        ).T
        a, b = pairs[0].copy(), pairs[1].copy()
    else:
        width = scheme_width(scheme)
        dtype = signature_dtype(scheme)
        a = gen.randint(0, 1 << (width - 1), num_perm, dtype=dtype) * dtype(2) + dtype(1)
        b = gen.randint(0, 1 << width, num_perm, dtype=dtype)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def _fmix(values: np.ndarray, width: int) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX[width]
    values = values ^ (values >> s1)
    values *= m1
    values ^= values >> s2
    values *= m2
    values ^= values >> s3
    return values


@dataclasses.dataclass(frozen=True)
class Ragged:
    """Hash values of many sets in one array: set ``i`` is ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def hash_sets(
    sets: Sequence[Collection[bytes]],
    hash: str | Callable[[bytes], int] = "xxhash",
    scheme: str = "affine32",
) -> Ragged:
    """Hash every shingle of every set in one pass (raw hash values, before permutation).

    ``sets`` must be sized collections (sets or lists); duplicates inside one set do not change its
    signature.
    """
    hashfunc = hash_function(hash, scheme) if isinstance(hash, str) else hash
    dtype = np.uint64 if scheme_width(scheme) == 64 else np.uint32
    counts = np.fromiter(map(len, sets), dtype=np.int64, count=len(sets))
    offsets = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    try:
        values = np.fromiter(map(hashfunc, chain.from_iterable(sets)), dtype=dtype, count=total)
    except OverflowError as exc:
        raise ValueError(
            f"hash function returned a value wider than {dtype.__name__} for scheme "
            f"{scheme!r}: {exc}"
        ) from None
    return Ragged(values, offsets)


def signatures_from_hashes(
    hashed: Ragged, num_perm: int = 128, seed: int = 1, scheme: str = "affine32"
) -> np.ndarray:
    """MinHash signatures ``(len(hashed), num_perm)`` of hashed sets (see :func:`hash_sets`)."""
    a, b = permutations(num_perm, seed, scheme)
    dtype = signature_dtype(scheme)
    n = len(hashed)
    empty = np.iinfo(dtype).max if scheme != "legacy" else _MAX_HASH32
    out: np.ndarray = np.full((n, num_perm), empty, dtype=dtype)
    sizes = hashed.sizes()
    rows = np.flatnonzero(sizes > 0)
    if rows.size == 0:
        return out
    if scheme == "legacy":
        values = hashed.values.astype(np.uint64)
    else:
        values = _fmix(hashed.values.astype(dtype, copy=True), scheme_width(scheme))
    starts = hashed.offsets[:-1][rows]
    ends = hashed.offsets[1:][rows]
    a_col, b_col = a[:, None], b[:, None]
    chunk = max(1, _CHUNK_VALUES // num_perm)
    buffer: np.ndarray = np.empty((num_perm, chunk), dtype=dtype)
    r0 = 0
    while r0 < rows.size:
        # Whole rows whose shingles fit in the chunk (a larger row gets a chunk of its own).
        r1 = max(int(np.searchsorted(ends, starts[r0] + chunk, side="right")), r0 + 1)
        s, e = int(starts[r0]), int(ends[r1 - 1])
        width = e - s
        buf = buffer[:, :width] if width <= chunk else np.empty((num_perm, width), dtype=dtype)
        np.multiply(a_col, values[None, s:e], out=buf)
        np.add(buf, b_col, out=buf)
        if scheme == "legacy":
            np.remainder(buf, _MERSENNE_PRIME, out=buf)
            np.bitwise_and(buf, _MAX_HASH32, out=buf)
        out[rows[r0:r1]] = np.minimum.reduceat(buf, starts[r0:r1] - s, axis=1).T
        r0 = r1
    return out


def signatures_from_shingles(
    sets: Sequence[Collection[bytes]],
    num_perm: int = 128,
    seed: int = 1,
    hash: str | Callable[[bytes], int] = "xxhash",
    scheme: str = "affine32",
) -> np.ndarray:
    """MinHash signatures of shingle sets: row ``i`` equals
    ``datasketch.MinHash(num_perm, seed, hashfunc=hash_function(hash, scheme), scheme=scheme)``
    updated with ``sets[i]``."""
    return signatures_from_hashes(hash_sets(sets, hash, scheme), num_perm, seed, scheme)


def minhash_signatures(
    texts: Sequence[str | None],
    num_perm: int = 128,
    seed: int = 1,
    *,
    shingle: str = "word",
    ngram: int = 2,
    hash: str = "xxhash",
    scheme: str = "affine32",
    normalize: bool = True,
) -> np.ndarray:
    """MinHash signatures ``(len(texts), num_perm)`` of texts, shingled as dedup does.

    This is the array-level entry point for other modules (e.g. the audit clustering near-identical
    outputs): no tables, no config objects. ``texts`` may contain ``None``/empty strings (empty
    shingle set, all-maximum signature).
    """
    from .shingle import shingle_sets

    return signatures_from_shingles(
        shingle_sets(texts, shingle, ngram, normalize=normalize), num_perm, seed, hash, scheme
    )


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray | float:
    """Estimated Jaccard similarity: the share of equal signature values (row-wise for 2-D)."""
    equal = np.asarray(sig_a) == np.asarray(sig_b)
    if equal.ndim == 1:
        return float(np.count_nonzero(equal)) / equal.size
    return np.count_nonzero(equal, axis=-1) / equal.shape[-1]


def to_datasketch(
    signature: np.ndarray, seed: int = 1, scheme: str = "affine32", hash: str = "xxhash"
):
    """A ``datasketch.MinHash`` holding ``signature`` (to query or fill a ``MinHashLSH``)."""
    from datasketch import MinHash

    return MinHash(
        seed=seed,
        hashvalues=np.asarray(signature),
        scheme=scheme,
        hashfunc=hash_function(hash, scheme),
    )
