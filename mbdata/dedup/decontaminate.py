"""One-sided dedup: remove rows whose prompt matches a reference set, never touching the reference.

The reference is what must not leak into training: held-out eval prompts, a benchmark, a blocklist.
The reference may be prompts only (benchmarks usually ship no answers): only prompts are compared.
A row of the corpus is removed when its prompt (``system`` + ``instruction`` + ``input``)

* exactly equals a reference prompt after normalisation (``contaminated_exact``; the key is
  :func:`mbdata.io.schema.prompt_key`), or
* has shingle Jaccard similarity >= ``decontaminate_threshold`` with a reference prompt
  (``contaminated_near``; MinHash LSH candidates, verified like dedup's near matches).

Rows are never compared with each other and the reference is only read. Removal happens even with
``keep_all`` (a build must not train on its eval prompts); every removal is listed in the
``dedup/decontamination`` side table with the reference row it matched (the earliest one). As in
dedup, an LSH bucket offers at most ``max_bucket_targets`` reference rows (its earliest).

One implementation for a table (the build's hold-out) and a stream (``mb dedup --reference``):
:class:`Decontaminator`. The reference (small by nature) is read whole and indexed once
(:class:`ReferenceIndex`); each batch's prompts are sketched by the per-batch step
(:class:`~.sketch.SketchStep`, on any executor) and matched against the index on the driver (a
row's outcome never depends on other corpus rows); matched rows are listed in the side table.

**Streaming and ``verify: null``.** ``verify: null`` resolves from the number of rows plus the
reference rows. For a stream the count is known only at the end: until that sum passes
:data:`~.config.VERIFY_AUTO_MAX_ROWS`, both outcomes are matched (their sketches share the shingles
and signatures; only the band keys differ) and the caller is fed the verified outcome's remaining
rows; once the limit is passed, the verified outcome is dropped. If the two outcomes removed
different rows up to then, :class:`RestartUnverified` is raised and the caller starts again with
verification off (at most the limit's worth of rows is read twice).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..io.schema import ID_FIELDS
from ..pipeline import BuildContext, StageStats
from . import config as dedup_config
from .config import DedupConfig
from .sketch import (
    BatchSketch,
    NearParams,
    ShingleStore,
    SketchStep,
    TableSketch,
    estimate_pairs,
    sketch_table,
)

if TYPE_CHECKING:
    from ..executors import Executor

EXACT = "contaminated_exact"
NEAR = "contaminated_near"
DECONTAMINATION_TABLE = "dedup/decontamination"

DECONTAMINATION_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("reference_id", pa.string(), nullable=False),
        pa.field("reference_row", pa.int64(), nullable=False),
        pa.field("similarity", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


class ReferenceIndex:
    """A reference set sketched once for prompt matching (exact keys, LSH band lookups, shingle
    hashes when verifying), probed by any number of corpus tables or batches: the reference is
    small (benchmarks, eval sets), the corpus may be streamed."""

    def __init__(self, reference: pa.Table, params: NearParams):
        self.reference, self.params = reference, params
        self.sketch = sketch_table(reference, "prompt", params, keep_shingles=params.verify)
        self._first: dict[tuple[int, int], int] | None = None
        self._lookups: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.rows = np.flatnonzero(self.sketch.shingle_counts > 0)

    def exact(self, keys: np.ndarray) -> np.ndarray:
        """For each corpus key, the first reference row with the same key, or -1."""
        if self._first is None:
            self._first = {}
            for pos, key in enumerate(map(tuple, self.sketch.keys.tolist())):
                self._first.setdefault(key, pos)
        first = self._first
        return np.fromiter(
            (first.get(key, -1) for key in map(tuple, keys.tolist())),
            dtype=np.int64,
            count=len(keys),
        )

    def lookups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per band: reference keys sorted, with the reference row of each sorted position."""
        if self._lookups is None:
            assert self.sketch.band_keys is not None  # sketched with near params
            self._lookups = _band_lookup(self.sketch.band_keys[self.rows], self.rows)
        return self._lookups


def _band_lookup(ref_band_keys: np.ndarray, ref_rows: np.ndarray):
    """Per band: reference keys sorted, with the reference row of each sorted position."""
    lookups = []
    for band in range(ref_band_keys.shape[1]):
        column = ref_band_keys[:, band]
        order = np.argsort(column, kind="stable")
        lookups.append((column[order], ref_rows[order]))
    return lookups


@dataclasses.dataclass(frozen=True)
class _NearMatches:
    rows: np.ndarray  # corpus positions that nearly match a reference prompt
    matched: np.ndarray  # the earliest matching reference row of each
    similarity: np.ndarray  # exact Jaccard (NaN without verification)
    checked: int
    rejected: int
    capped: int


def _near_matches(
    sketch: TableSketch,
    index: ReferenceIndex,
    open_rows: np.ndarray,
    max_targets: int,
) -> _NearMatches:
    """For each corpus row in ``open_rows``, the earliest reference row it nearly matches."""
    rows, matched, sims = [], [], []
    checked = rejected = capped = 0
    params, ref = index.params, index.sketch
    assert sketch.band_keys is not None  # sketched with near params
    if index.rows.size and open_rows.size:
        lookups = index.lookups()
        hits = np.zeros(open_rows.size, dtype=bool)
        for band, (keys, _) in enumerate(lookups):
            probe = sketch.band_keys[open_rows, band]
            at = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
            hits |= keys[at] == probe
        for j in open_rows[hits].tolist():
            candidates: set[int] = set()
            for band, (keys, band_rows) in enumerate(lookups):
                key = sketch.band_keys[j, band]
                lo = int(np.searchsorted(keys, key, side="left"))
                hi = int(np.searchsorted(keys, key, side="right"))
                capped += max(0, hi - lo - max_targets)
                candidates.update(band_rows[lo : min(hi, lo + max_targets)].tolist())
            for i in sorted(candidates):
                sim = float("nan")
                if params.verify:
                    sim = ref.jaccard(i, sketch, j)
                    checked += 1
                    if sim < params.threshold:
                        rejected += 1
                        continue
                rows.append(j)
                matched.append(i)
                sims.append(sim)
                break
    return _NearMatches(
        np.array(rows, dtype=np.int64),
        np.array(matched, dtype=np.int64),
        np.array(sims, dtype=np.float64),
        checked,
        rejected,
        capped,
    )


@dataclasses.dataclass(frozen=True)
class Contamination:
    """What one table (or one batch of a stream) matched in the reference: ``rows`` (positions in
    that table, ascending), the reference row each matched, the similarity, the reason (1 exact,
    2 near), and the near search's counters."""

    rows: np.ndarray
    matched: np.ndarray
    similarity: np.ndarray
    reason: np.ndarray
    checked: int
    rejected: int
    capped: int


def match_reference(
    table: pa.Table, sketch: TableSketch, index: ReferenceIndex, max_targets: int
) -> Contamination:
    """The rows of ``table`` (sketched as ``sketch`` with ``index.params``, field group
    ``prompt``) whose prompt exactly or nearly matches a reference prompt: exact matches first,
    near matching on the rest (rows with shingles)."""
    params = index.params
    matched = index.exact(sketch.keys)
    similarity = np.where(matched >= 0, 1.0, np.nan)
    reason = np.where(matched >= 0, 1, 0)  # 1 exact, 2 near

    open_rows = np.flatnonzero((matched < 0) & (sketch.shingle_counts > 0))
    near = _near_matches(sketch, index, open_rows, max_targets)
    matched[near.rows], reason[near.rows] = near.matched, 2
    similarity[near.rows] = (
        near.similarity
        if params.verify
        else estimate_pairs(table, near.rows, index.reference, near.matched, "prompt", params)
    )
    removed = np.flatnonzero(matched >= 0)
    return Contamination(
        removed,
        matched[removed],
        similarity[removed],
        reason[removed],
        near.checked,
        near.rejected,
        near.capped,
    )


def decontamination_stats(
    n: int,
    reference_rows: int,
    params: NearParams,
    reason: np.ndarray,
    checked: int,
    rejected: int,
    capped: int,
) -> StageStats:
    """The ``decontaminate`` stage's manifest figures (the same for a table and a stream)."""
    stats = StageStats(name="decontaminate", rows_in=n)
    n_exact = int(np.count_nonzero(reason == 1))
    n_near = int(np.count_nonzero(reason == 2))
    stats.drop(EXACT, n_exact)
    stats.drop(NEAR, n_near)
    stats.info.update(params.info())
    stats.info.update(
        {
            "fields": "prompt",
            "reference_rows": reference_rows,
            "candidates_checked": checked,
            "candidates_rejected": rejected,
            "bucket_targets_capped": capped,
            EXACT: n_exact,
            NEAR: n_near,
        }
    )
    return stats


def decontaminate(
    table: pa.Table,
    reference: pa.Table,
    config: DedupConfig | None,
    ctx: BuildContext,
    *,
    reference_rows: np.ndarray | None = None,
) -> tuple[pa.Table, StageStats]:
    """Remove rows of ``table`` whose prompt exactly or nearly matches a ``reference`` prompt.

    ``reference_rows`` numbers the reference rows in the side table's ``reference_row`` (``mb
    dedup --reference FILE``: the 0-based index in the file as read); default: positions."""
    keep, stats = contamination_mask(table, reference, config, ctx, reference_rows=reference_rows)
    return table.filter(pa.array(keep)), stats


def contamination_mask(
    table: pa.Table,
    reference: pa.Table,
    config: DedupConfig | None,
    ctx: BuildContext,
    *,
    reference_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, StageStats]:
    """The keep-mask of :func:`decontaminate` (False: the row's prompt matches a reference prompt),
    for callers that must decide before they filter (the hold-out draws its recovery and pretrain
    rows only from rows that survive). The table is matched slice by slice by the one
    :class:`Decontaminator` (its row count is known, so ``verify: null`` resolves at once)."""
    from ..executors import executor_for
    from .sketch import SLICE_ROWS

    config = config or DedupConfig()
    decon = Decontaminator(
        reference, config, reference_rows=reference_rows, known_rows=table.num_rows
    )
    slices = (table.slice(a, SLICE_ROWS) for a in range(0, table.num_rows, SLICE_ROWS))
    with executor_for(ctx.engine) as executor:
        masks = [keep for _, keep in decon.masks(slices, executor)]
    side, stats = decon.finish()
    ctx.add_side_table(DECONTAMINATION_TABLE, side)
    keep = np.concatenate(masks) if masks else np.ones(0, dtype=bool)
    return keep, stats


def _side_table(
    table: pa.Table,
    reference: pa.Table,
    rows: np.ndarray,
    ref_rows: np.ndarray,
    similarity: np.ndarray,
    reason: np.ndarray,
    reference_rows: np.ndarray | None = None,
    offset: int = 0,
) -> pa.Table:
    """The ``dedup/decontamination`` rows of ``rows`` (positions in ``table``; ``offset`` is added
    to the ``row`` column when ``table`` is one batch of a stream)."""

    def take(t: pa.Table, column: str, idx: np.ndarray) -> pa.Array:
        return t.column(column).take(pa.array(idx, type=pa.int64())).combine_chunks()

    columns = {
        "row_id": take(table, "id", rows),
        "row": pa.array(rows + offset, pa.int64()),
        "split": take(table, "split", rows),
        "source": take(table, "source", rows),
        "source_row": take(table, "source_row", rows),
        "reference_id": take(reference, "id", ref_rows),
        "reference_row": pa.array(
            ref_rows
            if reference_rows is None
            else np.asarray(reference_rows, dtype=np.int64)[ref_rows],
            pa.int64(),
        ),
        "similarity": pa.array(similarity, pa.float64()),
        "reason": pa.array([EXACT if r == 1 else NEAR for r in reason.tolist()], pa.string()),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in DECONTAMINATION_SCHEMA],
        schema=DECONTAMINATION_SCHEMA,
    )


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


def prompt_step(params: list[NearParams]) -> SketchStep:
    """The :class:`~.sketch.SketchStep` of a batch's prompts under each of ``params`` (which
    differ only in band parameters and verification: shingled once)."""
    return SketchStep("prompt", tuple(params), keep_shingles=any(p.verify for p in params))


def prompt_sketches(part: BatchSketch, params: list[NearParams], rows: int) -> list[TableSketch]:
    """One :class:`~.sketch.TableSketch` per entry of ``params`` from a batch's step output."""
    sketches = []
    for p, bkeys in zip(params, part.band_keys):
        store = None
        if p.verify:
            assert part.hashed is not None  # the step keeps shingles when any params verify
            store = ShingleStore(max(rows, 1))
            store.append(part.hashed)
        sketches.append(
            TableSketch(
                keys=part.keys,
                shingle_counts=part.counts,
                band_keys=bkeys,
                signatures=None,
                shingles=store,
            )
        )
    return sketches


class Decontaminator:
    """Matches a stream of canonical batches (or the slices of one table) against a reference.

    ``known_rows`` (a table: the count is known) resolves ``verify: null`` at once; a stream
    (None) tracks both outcomes until the count passes the limit (see "Streaming" above)."""

    def __init__(
        self,
        reference: pa.Table,
        config: DedupConfig,
        *,
        reference_rows: np.ndarray | None = None,
        force_unverified: bool = False,
        known_rows: int | None = None,
    ):
        self.reference, self.config, self.reference_rows = reference, config, reference_rows
        limit = dedup_config.VERIFY_AUTO_MAX_ROWS
        threshold = config.decontaminate_threshold
        if config.verify is None and reference.num_rows > limit:
            force_unverified = True  # the reference alone passes the limit: known now
        sizes = [limit + 1] if force_unverified else [0]
        if known_rows is not None:
            sizes = [known_rows + reference.num_rows]
        elif config.verify is None and not force_unverified:
            sizes.append(limit + 1)  # the unverified outcome, kept until the count is known
        self._tracks = [
            _Track(ReferenceIndex(reference, NearParams.from_config(config, n, threshold)))
            for n in dict.fromkeys(sizes)
        ]
        self.rows = 0
        self.seconds = 0.0

    def filter(
        self, batches: Iterable[pa.RecordBatch], executor: Executor | None = None
    ) -> Iterator[pa.RecordBatch]:
        """The rows of ``batches`` that match no reference prompt, in order (empty batches are
        left out)."""
        for batch, keep in self.masks(batches, executor):
            if keep.all():
                yield batch
            elif keep.any():
                yield batch.filter(pa.array(keep))

    def masks(
        self, batches: Iterable[pa.RecordBatch | pa.Table], executor: Executor | None = None
    ) -> Iterator[tuple[pa.RecordBatch | pa.Table, np.ndarray]]:
        """Each batch with its keep-mask (False: matched). The prompts are sketched by
        :func:`prompt_step` on ``executor`` (default: the command's); the matching against the
        reference index runs here, batch by batch, in order."""
        from ..executors import current_executor

        limit = dedup_config.VERIFY_AUTO_MAX_ROWS
        params = [t.params for t in self._tracks]
        step = prompt_step(params)
        pending: collections.deque = collections.deque()

        def items():
            for batch in batches:
                table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
                pending.append((batch, table))
                yield table.select(list(ID_FIELDS)), None

        for part in (executor or current_executor()).map(step, items()):
            start = time.perf_counter()
            batch, table = pending.popleft()
            sketches = dict(zip(params, prompt_sketches(part, params, table.num_rows)))
            keeps = [self._match(t, table, sketches[t.params]) for t in self._tracks]
            self.rows += table.num_rows
            if len(self._tracks) > 1 and self.rows + self.reference.num_rows > limit:
                verified, unverified = self._tracks
                if not np.array_equal(_cat(verified.removed), _cat(unverified.removed)):
                    raise RestartUnverified
                self._tracks, keeps = [unverified], [keeps[1]]
            self.seconds += time.perf_counter() - start
            yield batch, keeps[0]

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
