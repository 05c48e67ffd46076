"""Decontamination of a streamed corpus (``mb dedup --reference``): batch by batch, before dedup.

The reference set (benchmarks, eval prompts) is small by nature: it is read whole and indexed once
(:class:`.decontaminate.ReferenceIndex`: exact prompt keys, LSH band lookups, shingle hashes when
verifying). Every input batch is sketched on its prompts and matched against that index with the
very function of the in-memory path (:func:`.decontaminate.match_reference`; a row's outcome never
depends on other corpus rows), its matched rows are listed in the ``dedup/decontamination`` side
table, and only the remaining rows go on to dedup, renumbered exactly as the in-memory path's
``table.filter`` renumbers them. Memory: the reference index, the batch, and the side table rows.

``verify: null`` resolves from the number of rows read plus the reference rows, known only at the
end. Until that sum passes :data:`~.config.VERIFY_AUTO_MAX_ROWS`, both outcomes are matched (their
sketches share the shingles and signatures; only the band keys differ) and dedup is fed the
verified outcome's remaining rows; once the limit is passed, the verified outcome is dropped. If
the two outcomes removed different rows up to then, dedup was fed the wrong rows:
:class:`RestartUnverified` is raised and the caller starts again with verification off (the
stream is read again; at most the limit's worth of rows was read twice).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from ..io.schema import SCHEMA
from ..pipeline import StageStats
from . import config as dedup_config
from .config import DedupConfig
from .decontaminate import (
    DECONTAMINATION_SCHEMA,
    ReferenceIndex,
    _side_table,
    decontamination_stats,
    match_reference,
)
from .lsh import band_keys
from .minhash import hash_sets, signatures_from_hashes
from .normalize import normalize_rows
from .shingle import shingler
from .sketch import NearParams, ShingleStore, TableSketch, gc_paused


class RestartUnverified(Exception):
    """``verify: null`` resolved to False after the verified outcome had already fed dedup rows
    that the unverified one removes (or keeps): start again with ``force_unverified=True``."""


@dataclasses.dataclass
class _Track:
    """One resolution of the decontamination parameters, and what it matched so far."""

    index: ReferenceIndex
    parts: list[pa.Table] = dataclasses.field(default_factory=list)
    removed: list[np.ndarray] = dataclasses.field(default_factory=list)
    reasons: list[np.ndarray] = dataclasses.field(default_factory=list)
    checked: int = 0
    rejected: int = 0
    capped: int = 0

    @property
    def params(self) -> NearParams:
        return self.index.params


def prompt_sketches(table: pa.Table, params: list[NearParams]) -> list[TableSketch]:
    """:func:`.sketch.sketch_table` of ``table`` for the ``prompt`` group under each of
    ``params`` (which differ only in band parameters and verification), shingling once."""
    rows = normalize_rows(table, "prompt")
    first = params[0]
    make = shingler(first.shingle)
    with gc_paused():
        shingles = [make(text, first.ngram) for text in rows.texts]
        hashed = hash_sets(shingles, first.hash, first.scheme)
        del shingles
    counts = hashed.sizes().astype(np.int64)
    sig = signatures_from_hashes(hashed, first.num_perm, first.seed, first.scheme)
    sketches = []
    for p in params:
        store = None
        if p.verify:
            store = ShingleStore(max(table.num_rows, 1))
            store.append(hashed)
        sketches.append(
            TableSketch(
                keys=rows.keys,
                shingle_counts=counts,
                band_keys=band_keys(sig, p.bands, p.rows),
                signatures=None,
                shingles=store,
            )
        )
    return sketches


class StreamDecontaminator:
    """Filters a stream of canonical batches against a reference (see the module doc)."""

    def __init__(
        self,
        reference: pa.Table,
        config: DedupConfig,
        *,
        reference_rows: np.ndarray | None = None,
        force_unverified: bool = False,
    ):
        self.reference, self.config, self.reference_rows = reference, config, reference_rows
        limit = dedup_config.VERIFY_AUTO_MAX_ROWS
        threshold = config.decontaminate_threshold
        if config.verify is None and reference.num_rows > limit:
            force_unverified = True  # the reference alone passes the limit: known now
        sizes = [limit + 1] if force_unverified else [0]
        if config.verify is None and not force_unverified:
            sizes.append(limit + 1)  # the unverified outcome, kept until the count is known
        self._tracks = [
            _Track(ReferenceIndex(reference, NearParams.from_config(config, n, threshold)))
            for n in dict.fromkeys(sizes)
        ]
        self.rows = 0
        self.seconds = 0.0

    def filter(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The rows of ``batches`` that match no reference prompt, in order (empty batches are
        left out)."""
        limit = dedup_config.VERIFY_AUTO_MAX_ROWS
        for batch in batches:
            start = time.perf_counter()
            table = pa.Table.from_batches([batch], schema=SCHEMA)
            params = [t.params for t in self._tracks]
            keeps = []
            for track, sketch in zip(self._tracks, prompt_sketches(table, params)):
                keeps.append(self._match(track, table, sketch))
            self.rows += table.num_rows
            if len(self._tracks) > 1 and self.rows + self.reference.num_rows > limit:
                verified, unverified = self._tracks
                if not np.array_equal(_cat(verified.removed), _cat(unverified.removed)):
                    raise RestartUnverified
                self._tracks, keeps = [unverified], [keeps[1]]
            keep = keeps[0]
            self.seconds += time.perf_counter() - start
            if keep.all():
                yield batch
            elif keep.any():
                yield batch.filter(pa.array(keep))

    def _match(self, track: _Track, table: pa.Table, sketch: TableSketch) -> np.ndarray:
        found = match_reference(table, sketch, track.index, self.config.max_bucket_targets)
        track.checked += found.checked
        track.rejected += found.rejected
        track.capped += found.capped
        if found.rows.size:
            track.removed.append(found.rows + self.rows)
            track.reasons.append(found.reason)
            track.parts.append(
                _side_table(
                    table,
                    self.reference,
                    found.rows,
                    found.matched,
                    found.similarity,
                    found.reason,
                    self.reference_rows,
                    offset=self.rows,
                )
            )
        keep = np.ones(table.num_rows, dtype=bool)
        keep[found.rows] = False
        return keep

    def finish(self) -> tuple[pa.Table, StageStats]:
        """The side table and the stage statistics, once the stream is exhausted."""
        n = self.rows
        params = NearParams.from_config(
            self.config, n + self.reference.num_rows, threshold=self.config.decontaminate_threshold
        )
        chosen = [t for t in self._tracks if t.params == params]
        assert chosen, "the resolved decontamination parameters were tracked"
        track = chosen[0]
        side = (
            pa.concat_tables(track.parts).combine_chunks()
            if track.parts
            else _side_table(
                self.reference.slice(0, 0),
                self.reference,
                np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=np.int64),
                np.zeros(0, dtype=np.float64),
                np.zeros(0, dtype=np.int64),
                self.reference_rows,
            )
        )
        assert side.schema == DECONTAMINATION_SCHEMA
        reason = _cat(track.reasons)
        stats = decontamination_stats(
            n,
            self.reference.num_rows,
            params,
            reason,
            track.checked,
            track.rejected,
            track.capped,
        )
        stats.rows_out = n - int(reason.size)
        stats.seconds = self.seconds
        return side, stats


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
