"""One streaming pass over a table that reduces each row to what dedup compares.

A :class:`TableSketch` holds, per row: the 128-bit exact key, the shingle count, the LSH band keys
and, when candidates are verified, the shingle hash values (for exact Jaccard). Everything is
numpy; the table is walked in slices of ``slice_rows`` rows so the Python objects of one slice
(strings, shingle lists) are all that exist at a time; each slice is one item of the
:class:`SketchStep`, which every executor (:mod:`mbdata.executors`) runs unchanged. Memory per
row: 16 B key + 8 B per band (+ 8 B count), plus ~4 B per shingle when verifying; a signature
is kept only on request (:func:`estimate_pairs` asks for the few rows it needs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .config import DedupConfig
from .lsh import band_keys, optimal_params
from .minhash import Ragged, hash_sets, signature_dtype, signatures_from_hashes
from .normalize import normalize_rows
from .shingle import shingler

if TYPE_CHECKING:
    from ..executors import Executor

SLICE_ROWS = 8192


@dataclasses.dataclass(frozen=True)
class NearParams:
    """Resolved near-dedup parameters (``ngram``, ``bands``/``rows`` filled in)."""

    shingle: str
    ngram: int
    num_perm: int
    seed: int
    hash: str
    scheme: str
    threshold: float
    bands: int
    rows: int
    verify: bool
    fn_weight: float | None  # the weight bands/rows were derived with; None: given

    @classmethod
    def from_config(
        cls, config: DedupConfig, n_rows: int, threshold: float | None = None
    ) -> NearParams:
        """Parameters for a corpus of ``n_rows`` rows (``verify: null`` depends on its size);
        ``threshold`` overrides the config's (decontamination has its own)."""
        verify = config.resolved_verify(n_rows)
        threshold = config.threshold if threshold is None else threshold
        if config.bands is None:
            fn_weight = config.resolved_fn_weight(verify)
            bands, rows = optimal_params(threshold, config.num_perm, 1.0 - fn_weight, fn_weight)
        else:
            assert config.rows is not None  # DedupConfig.validate: bands and rows come together
            bands, rows, fn_weight = config.bands, config.rows, None
        return cls(
            shingle=config.shingle,
            ngram=config.resolved_ngram,
            num_perm=config.num_perm,
            seed=config.hash_seed,
            hash=config.hash,
            scheme=config.scheme,
            threshold=threshold,
            bands=bands,
            rows=rows,
            verify=verify,
            fn_weight=fn_weight,
        )

    def info(self) -> dict:
        """The resolved settings, for the manifest (derived values included)."""
        return {
            "shingle": self.shingle,
            "ngram": self.ngram,
            "num_perm": self.num_perm,
            "hash": self.hash,
            "scheme": self.scheme,
            "hash_seed": self.seed,
            "threshold": self.threshold,
            "bands": self.bands,
            "rows": self.rows,
            "bands_derived": self.fn_weight is not None,
            "false_negative_weight": self.fn_weight,
            "verify": self.verify,
        }


def sorted_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted arrays of distinct shingle hashes (0 if either is
    empty)."""
    if a.size == 0 or b.size == 0:
        return 0.0
    at = np.searchsorted(a, b)
    at[at == a.size] = 0
    inter = int(np.count_nonzero(a[at] == b))
    return inter / (a.size + b.size - inter)


class ShingleStore:
    """Shingle hash values of a table's rows, kept per slice (no global concatenation).

    Values are stored as hashed (unsorted, repeats possible); a row's set is made unique only when
    it is verified, which is rare compared to storing.
    """

    def __init__(self, slice_rows: int):
        self.slice_rows = slice_rows
        self.parts: list[Ragged] = []
        self._unique: dict[int, np.ndarray] = {}

    def append(self, part: Ragged) -> None:
        self.parts.append(part)

    def row(self, i: int) -> np.ndarray:
        return self.parts[i // self.slice_rows].row(i % self.slice_rows)

    def unique_row(self, i: int) -> np.ndarray:
        """Row ``i``'s hash values, sorted and unique (cached: kept rows are compared often)."""
        values = self._unique.get(i)
        if values is None:
            values = self._unique[i] = np.unique(self.row(i))
        return values

    def jaccard(self, i: int, other: ShingleStore, j: int) -> float:
        """Exact Jaccard similarity of row ``i`` here (the comparison target: cached) and row ``j``
        of ``other`` (not cached)."""
        return sorted_jaccard(self.unique_row(i), np.unique(other.row(j)))


@dataclasses.dataclass
class TableSketch:
    keys: np.ndarray  # (n, 2) uint64 exact keys
    shingle_counts: np.ndarray  # (n,) int64 (repeats counted); 0: no near dedup
    band_keys: np.ndarray | None  # (n, bands) uint64
    signatures: np.ndarray | None  # (n, num_perm), when kept
    shingles: ShingleStore | None  # when kept

    def jaccard(self, i: int, other: TableSketch, j: int) -> float:
        """Exact Jaccard of row ``i`` here (a comparison target) and row ``j`` of ``other``
        (shingles must be kept)."""
        if self.shingles is None or other.shingles is None:
            raise ValueError("exact Jaccard needs shingles: sketch with keep_shingles=True")
        return self.shingles.jaccard(i, other.shingles, j)


def estimate_pairs(
    table: pa.Table,
    rows: np.ndarray,
    other: pa.Table,
    other_rows: np.ndarray,
    group: str,
    params: NearParams,
) -> np.ndarray:
    """MinHash-estimated similarity of each pair ``(table[rows[k]], other[other_rows[k]])``.

    Used without verification: only the rows of reported pairs are sketched again (a few), so the
    main pass never has to keep every row's signature.
    """
    if len(rows) == 0:
        return np.zeros(0, dtype=np.float64)

    def signatures(t: pa.Table, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unique = np.unique(positions)
        sub = t.take(pa.array(unique, type=pa.int64()))
        sig = sketch_table(sub, group, params, keep_signatures=True).signatures
        assert sig is not None  # keep_signatures=True
        return sig, np.searchsorted(unique, positions)

    sig_a, at_a = signatures(table, rows)
    sig_b, at_b = signatures(other, other_rows)
    return np.count_nonzero(sig_a[at_a] == sig_b[at_b], axis=1) / params.num_perm


@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while a slice is shingled.

    Shingling allocates millions of short-lived lists and bytes; each allocation burst triggers
    collections that rescan every live container and cost ~30% of the hot path. Nothing created
    here forms reference cycles (reference counting frees it all), so pausing is safe; the
    collector's previous state is restored afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclasses.dataclass
class BatchSketch:
    """What :class:`SketchStep` makes of one batch: exact keys, shingle counts, one band-key
    matrix per parameter set, and the shingle hashes / signatures when asked for."""

    keys: np.ndarray  # (n, 2) uint64
    counts: np.ndarray  # (n,) int64
    band_keys: list[np.ndarray]  # one (n, bands) uint64 per parameter set
    hashed: Ragged | None
    signatures: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class SketchStep:
    """The per-batch step of dedup and decontamination (a pure function of its batch, so any
    executor runs it): normalise the ``group`` fields, shingle, hash, MinHash, and cut one set of
    LSH band keys per entry of ``params`` (they differ only in bands/rows/verification, so the
    shingles and signatures are made once). The item is ``(table, salt)``; ``salt`` (uint64 per
    row, or None) separates scopes that never share a bucket. ``params=()``: exact keys only."""

    group: str
    params: tuple[NearParams, ...] = ()
    keep_shingles: bool = False
    keep_signatures: bool = False

    def __call__(self, item: tuple[pa.Table, np.ndarray | None]) -> BatchSketch:
        table, salt = item
        rows = normalize_rows(table, self.group)
        n = table.num_rows
        if not self.params:
            return BatchSketch(rows.keys, np.zeros(n, dtype=np.int64), [], None, None)
        first = self.params[0]
        make_shingles = shingler(first.shingle)
        with gc_paused():
            shingles = [make_shingles(text, first.ngram) for text in rows.texts]
            hashed = hash_sets(shingles, first.hash, first.scheme)
            del shingles
        sig = signatures_from_hashes(hashed, first.num_perm, first.seed, first.scheme)
        bands = [band_keys(sig, p.bands, p.rows, salt) for p in self.params]
        return BatchSketch(
            keys=rows.keys,
            counts=hashed.sizes().astype(np.int64),
            band_keys=bands,
            hashed=hashed if self.keep_shingles else None,
            signatures=sig if self.keep_signatures else None,
        )


def sketch_items(table: pa.Table, salt: np.ndarray | None, slice_rows: int = SLICE_ROWS):
    """``(slice, salt slice)`` items of ``table`` for :class:`SketchStep`, only the fields a row
    key reads (what travels to a worker)."""
    from .normalize import ID_FIELDS

    columns = table.select([f for f in ID_FIELDS])
    for start in range(0, table.num_rows, slice_rows):
        part = columns.slice(start, slice_rows)
        yield part, None if salt is None else salt[start : start + part.num_rows]


def sketch_table(
    table: pa.Table,
    group: str,
    params: NearParams | None,
    *,
    keep_shingles: bool = False,
    keep_signatures: bool = False,
    salt: np.ndarray | None = None,
    slice_rows: int = SLICE_ROWS,
    executor: Executor | None = None,
) -> TableSketch:
    """Sketch every row of ``table`` for field group ``group``; ``params=None``: exact keys only.

    ``salt`` (uint64 per row) separates rows into scopes that never share an LSH bucket. The
    slices are sketched by :class:`SketchStep` on ``executor`` (default: the command's)."""
    from ..executors import current_executor

    n = table.num_rows
    keys = np.empty((n, 2), dtype=np.uint64)
    counts = np.zeros(n, dtype=np.int64)
    near = params is not None
    bkeys = np.empty((n, params.bands), dtype=np.uint64) if params is not None else None
    sigs: np.ndarray | None = (
        np.empty((n, params.num_perm), dtype=signature_dtype(params.scheme))
        if params is not None and keep_signatures
        else None
    )
    store = ShingleStore(slice_rows) if near and keep_shingles else None
    step = SketchStep(
        group,
        () if params is None else (params,),
        keep_shingles=store is not None,
        keep_signatures=sigs is not None,
    )
    start = 0
    executor = executor or current_executor()
    for part in executor.map(step, sketch_items(table, salt, slice_rows)):
        stop = start + len(part.keys)
        keys[start:stop] = part.keys
        if bkeys is not None:
            counts[start:stop] = part.counts
            bkeys[start:stop] = part.band_keys[0]
        if sigs is not None:
            sigs[start:stop] = part.signatures
        if store is not None:
            assert part.hashed is not None  # asked for
            store.append(part.hashed)
        start = stop
    return TableSketch(
        keys=keys, shingle_counts=counts, band_keys=bkeys, signatures=sigs, shingles=store
    )
