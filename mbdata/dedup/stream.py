"""Streaming dedup: bounded memory, the same output as :class:`~.stage.DedupStage` byte for byte.

Two passes over the input, never the whole corpus in memory:

1. **sketch** (one record batch at a time, :func:`mbdata.io.readers.iter_input_batches`; the
   per-batch :class:`~.sketch.SketchStep` runs on any executor of :mod:`mbdata.executors`): each
   row is reduced to its per-row index (16-byte exact key, split code, shingle count, one 64-bit LSH key
   per band) and the batch is appended, as Arrow, to a spill file in the output's temporary folder.
   When candidates are verified, the rows' shingle hashes go to a second spill file (read back
   with ``pread`` only for the candidate pairs).
2. **decide** on the per-row index alone: exact groups (sort of the keys), LSH buckets (sort of the
   band keys) and the first-occurrence-wins near matching of :mod:`.cluster`, on the driver.
3. **write** (second streaming pass over the spill file): kept rows go to each split's shards as
   they come (:class:`.shardwriter.SplitShardWriter`, byte-identical to ``write_build``), keep-all
   tags are added to cluster rows, and the few rows the ``dedup/clusters`` table names are looked
   up.

Memory: the batch (``batch_rows`` rows of Python objects) plus ~40 bytes + 8 bytes per band per row
(16 bands by default: ~170 bytes per row; the bucket grouping adds 8 bytes per band per row while
it runs). ``verify: null`` resolves from the number of rows, which is known only at the end: until
:data:`~.config.VERIFY_AUTO_MAX_ROWS` rows have been read, band keys are kept for both outcomes
(the verified and the unverified band parameters), then the verified track is dropped.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..io.schema import SCHEMA
from ..io.shards import ordered_splits
from ..pipeline import StageStats
from .config import VERIFY_AUTO_MAX_ROWS, DedupConfig
from .minhash import Ragged
from .shardwriter import SplitShardWriter
from .sketch import NearParams, ShingleStore, SketchStep, TableSketch, estimate_pairs
from .stage import (
    append_tags,
    cluster_layout,
    clusters_table,
    find_duplicates,
    scope_salt,
    set_tags,
)

if TYPE_CHECKING:
    from ..executors import Executor

SPILL_ROWS = "rows.arrow"
SPILL_SHINGLES = "shingles.bin"


class SpillShingles(ShingleStore):
    """Shingle hash values of every row in a file (row ``i`` = ``values[offsets[i]:offsets[i+1]]``),
    read back row by row (``pread``) for the candidate pairs: only the offsets (8 bytes per row)
    and the cached comparison targets stay in memory."""

    def __init__(self, path: Path):
        super().__init__(slice_rows=1)
        self.path = path
        self._fh = path.open("wb")
        self._offsets = [np.zeros(1, dtype=np.int64)]
        self._total = 0
        self._dtype = np.dtype(np.uint32)
        self._fd: int | None = None

    def append(self, part: Ragged) -> None:
        self._dtype = part.values.dtype
        self._fh.write(np.ascontiguousarray(part.values).tobytes())
        self._offsets.append(part.offsets[1:] + self._total)
        self._total += int(part.offsets[-1])

    def finish(self) -> None:
        self._fh.close()
        self.offsets = np.concatenate(self._offsets)
        self._offsets = []
        self._fd = os.open(self.path, os.O_RDONLY)

    def row(self, i: int) -> np.ndarray:
        # pread, not a memory map: the pages read stay out of the process's resident set
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        size = self._dtype.itemsize
        assert self._fd is not None, "finish() opens the spill for reading"
        data = os.pread(self._fd, (stop - start) * size, start * size)
        return np.frombuffer(data, dtype=self._dtype)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


class RowSpill:
    """Pass 1's bookkeeping on the driver: every batch is appended to
    ``spill_dir/rows.arrow`` (read back by pass 2) and its rows' splits numbered in order of first
    appearance (``split_names``)."""

    def __init__(self, spill_dir: Path):
        self.path = spill_dir / SPILL_ROWS
        self.split_codes: dict[str, int] = {}
        self._writer: pa.ipc.RecordBatchFileWriter | None = None

    def add(self, batch: pa.RecordBatch) -> tuple[pa.Table, np.ndarray]:
        """The batch as a canonical table, spilled, and its rows' split codes."""
        table = pa.Table.from_batches([batch], schema=SCHEMA)
        if self._writer is None:
            self._writer = pa.ipc.new_file(str(self.path), SCHEMA)
        self._writer.write_table(table)
        codes = self.split_codes
        code = np.fromiter(
            (codes.setdefault(s, len(codes)) for s in table.column("split").to_pylist()),
            dtype=np.int64,
            count=table.num_rows,
        )
        return table, code

    @property
    def split_names(self) -> list[str]:
        return list(self.split_codes)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclasses.dataclass
class _Track:
    """Band keys (and shingles) for one candidate resolution of the near-dedup parameters."""

    params: NearParams
    band_keys: list[np.ndarray]
    shingles: SpillShingles | None


def _tracks(config: DedupConfig, spill_dir: Path) -> list[_Track]:
    if not config.near:
        return []
    candidates = [NearParams.from_config(config, 0)]
    if config.verify is None:
        candidates.append(NearParams.from_config(config, VERIFY_AUTO_MAX_ROWS + 1))
    return [
        _Track(p, [], SpillShingles(spill_dir / f"{k}-{SPILL_SHINGLES}") if p.verify else None)
        for k, p in enumerate(candidates)
    ]


@dataclasses.dataclass
class StreamIndex:
    """The per-row index of pass 1 (every array has one entry per row read)."""

    rows: int
    keys: np.ndarray
    codes: np.ndarray
    counts: np.ndarray
    split_names: list[str]
    params: NearParams | None
    band_keys: np.ndarray | None
    shingles: SpillShingles | None

    def sketch(self) -> TableSketch:
        return TableSketch(
            keys=self.keys,
            shingle_counts=self.counts,
            band_keys=self.band_keys,
            signatures=None,
            shingles=self.shingles,
        )


class Progress:
    """Rows done per step on stderr (only when stderr is a terminal, or when forced)."""

    def __init__(self, enabled: bool | None = None, every: float = 1.0):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.every, self._last, self._start = every, 0.0, time.perf_counter()
        self.step = ""

    def begin(self, step: str) -> None:
        self.step, self._start, self._last = step, time.perf_counter(), 0.0

    def update(self, rows: int, final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not final and now - self._last < self.every:
            return
        self._last = now
        rate = rows / max(now - self._start, 1e-9)
        end = "\n" if final else ""
        print(f"\r{self.step}: {rows:,} rows ({rate:,.0f} rows/s)", end=end, file=sys.stderr)


def sketch_stream(
    batches: Iterable[pa.RecordBatch],
    config: DedupConfig,
    spill_dir: Path,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> StreamIndex:
    """Pass 1: the per-row index of every batch (:class:`~.sketch.SketchStep` on ``executor``,
    default the command's), and the batches spilled to ``spill_dir`` on the driver."""
    from ..executors import current_executor

    progress = progress or Progress(False)
    executor = executor or current_executor()
    tracks = _tracks(config, spill_dir)
    step = SketchStep(
        config.fields,
        tuple(t.params for t in tracks),
        keep_shingles=any(t.shingles is not None for t in tracks),
    )
    spill = RowSpill(spill_dir)
    keys, codes = [], []
    counts: list[np.ndarray] = []

    def items():
        for batch in batches:
            table, code = spill.add(batch)
            codes.append(code)
            yield table, scope_salt(code) if tracks else None

    rows = 0
    try:
        for part in executor.map(step, _select_id_fields(items())):
            keys.append(part.keys)
            counts.append(part.counts)
            # tracks dropped below are a suffix-free subset of the step's parameter sets
            for track, bkeys in zip(tracks, _kept(step.params, tracks, part.band_keys)):
                track.band_keys.append(bkeys)
                if track.shingles is not None:
                    assert part.hashed is not None  # keep_shingles when any track verifies
                    track.shingles.append(part.hashed)
            rows += len(part.keys)
            if config.verify is None and rows > VERIFY_AUTO_MAX_ROWS and len(tracks) > 1:
                for track in tracks:
                    if track.params.verify and track.shingles is not None:
                        track.shingles.close()
                tracks = [t for t in tracks if not t.params.verify]
            progress.update(rows)
        progress.update(rows, final=True)
    except BaseException:
        for track in tracks:
            if track.shingles is not None:
                track.shingles.close()
        raise
    finally:
        spill.close()
    params = NearParams.from_config(config, rows) if config.near else None
    chosen = None
    for track in tracks:
        if track.params == params:
            chosen = track
        elif track.shingles is not None:
            track.shingles.close()
    if chosen is not None and chosen.shingles is not None:
        chosen.shingles.finish()

    def cat(parts, dtype, shape=(0,)):
        return np.concatenate(parts) if parts else np.zeros(shape, dtype=dtype)

    return StreamIndex(
        rows=rows,
        keys=cat(keys, np.uint64, (0, 2)),
        codes=cat(codes, np.int64),
        counts=cat(counts, np.int64),
        split_names=spill.split_names,
        params=params,
        band_keys=None
        if chosen is None or params is None
        else cat(chosen.band_keys, np.uint64, (0, params.bands)),
        shingles=None if chosen is None else chosen.shingles,
    )


def _select_id_fields(items):
    """Only the fields a row key reads travel to the step (see :func:`.sketch.sketch_items`)."""
    from .normalize import ID_FIELDS

    for table, salt in items:
        yield table.select(list(ID_FIELDS)), salt


def _kept(params: tuple[NearParams, ...], tracks: list[_Track], bkeys: list[np.ndarray]):
    """The band keys of the tracks still kept, in track order."""
    by_params = dict(zip(params, bkeys))
    return [by_params[t.params] for t in tracks]


def spilled_batches(spill_dir: Path) -> Iterable[pa.RecordBatch]:
    """The rows of pass 1 again, batch by batch (read, not memory-mapped: the pages of a map
    would count in the resident set up to the corpus size)."""
    path = spill_dir / SPILL_ROWS
    if not path.exists():
        return
    with pa.OSFile(str(path), "rb") as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)


@dataclasses.dataclass
class StreamResult:
    """What the write pass produced: shard records per split, the side table and the stats."""

    splits: dict[str, dict]
    clusters: pa.Table
    stats: StageStats
    timings: dict[str, float]


def dedup_stream(
    batches: Iterable[pa.RecordBatch],
    config: DedupConfig,
    out_root: Path,
    *,
    shard_rows: int = 100_000,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> StreamResult:
    """Dedup a stream of canonical batches and write the kept rows' shards under ``out_root``
    (a temporary folder the caller renames into place). The sketch runs on ``executor``
    (default: the command's, :mod:`mbdata.executors`); the decisions are made on the driver from
    the per-row index; the write pass streams the spill."""
    progress = progress or Progress(False)
    spill_dir = out_root / ".dedup-spill"
    spill_dir.mkdir(parents=True, exist_ok=True)
    stats = StageStats(name="dedup")
    start = time.perf_counter()
    index = None
    try:
        progress.begin("dedup: read + sketch")
        index = sketch_stream(batches, config, spill_dir, progress, executor)
        t_sketch = time.perf_counter()
        found = find_duplicates(index.sketch(), index.codes, config, index.params, None)
        n = index.rows
        stats.rows_in = n
        layout = cluster_layout(n, found.first, found.exact_members, found.near)
        t_decide = time.perf_counter()
        keep = found.keep(n) if not config.keep_all else np.ones(n, dtype=bool)
        if index.shingles is not None:
            index.shingles.close()
        # free the index before the write pass: only the keep-mask and the layout are needed now
        split_names, codes = index.split_names, index.codes
        index = None
        progress.begin("dedup: write")
        splits, lookup = _write_pass(
            spill_dir,
            out_root,
            keep,
            codes,
            split_names,
            layout,
            config.keep_all,
            shard_rows,
            progress,
        )
    finally:
        if index is not None and index.shingles is not None:
            index.shingles.close()
        for path in spill_dir.glob("*"):
            path.unlink()
        spill_dir.rmdir()
    params = NearParams.from_config(config, n) if config.near else None
    layout = _estimated(layout, lookup, config, params)
    clusters = clusters_table(layout, _lookup_take(lookup, layout.rows()), not config.keep_all)
    found.record(stats, config, params, layout)
    stats.rows_out = int(np.count_nonzero(keep))
    stats.seconds = time.perf_counter() - start
    timings = {
        "dedup/sketch": round(t_sketch - start, 4),
        "dedup/decide": round(t_decide - t_sketch, 4),
        "dedup/write": round(time.perf_counter() - t_decide, 4),
    }
    return StreamResult(splits=splits, clusters=clusters, stats=stats, timings=timings)


def _estimated(layout, lookup: pa.Table, config: DedupConfig, params: NearParams | None):
    """Without verification the reported similarity is the MinHash estimate of each pair,
    recomputed from the few rows the side table names (as the in-memory path does)."""
    if params is None or params.verify or not layout.near.any():
        return layout
    needed = layout.rows()
    near = layout.near
    sims = layout.similarity.copy()
    sims[near] = estimate_pairs(
        lookup,
        np.searchsorted(needed, layout.member[near]),
        lookup,
        np.searchsorted(needed, layout.matched[near]),
        config.fields,
        params,
    )
    return dataclasses.replace(layout, similarity=sims)


def _lookup_take(lookup: pa.Table, needed: np.ndarray):
    def take(column: str, rows: np.ndarray) -> pa.Array:
        at = np.searchsorted(needed, rows)
        return lookup.column(column).take(pa.array(at, type=pa.int64())).combine_chunks()

    return take


def _write_pass(
    spill_dir: Path,
    out_root: Path,
    keep: np.ndarray,
    codes: np.ndarray,
    split_names: list[str],
    layout,
    keep_all: bool,
    shard_rows: int,
    progress: Progress,
) -> tuple[dict[str, dict], pa.Table]:
    kept_per_code = np.bincount(codes[keep], minlength=len(split_names))
    writers = {
        name: SplitShardWriter(out_root, name, int(kept_per_code[code]), shard_rows)
        for code, name in enumerate(split_names)
        if kept_per_code[code] > 0
    }
    needed = layout.rows()
    extra = layout.tags() if keep_all else {}
    tag_rows = np.array(sorted(extra), dtype=np.int64)
    lookups = []
    start = 0
    for batch in spilled_batches(spill_dir):
        stop = start + batch.num_rows
        table = pa.Table.from_batches([batch], schema=SCHEMA)
        lo, hi = np.searchsorted(needed, [start, stop])
        if hi > lo:
            lookups.append(table.take(pa.array(needed[lo:hi] - start, type=pa.int64())))
        lo, hi = np.searchsorted(tag_rows, [start, stop])
        if hi > lo:
            tags = append_tags(table.column("tags").to_pylist(), extra, offset=start)
            table = set_tags(table, tags)
        part_keep = keep[start:stop]
        if not part_keep.all():
            table = table.filter(pa.array(part_keep))
        part_codes = codes[start:stop][part_keep]
        if len(writers) == 1:
            next(iter(writers.values())).add(table)
        else:
            for code in np.unique(part_codes).tolist():
                writers[split_names[code]].add(table.filter(pa.array(part_codes == code)))
        start = stop
        progress.update(start)
    progress.update(start, final=True)
    splits = {
        name: {"rows": writers[name].total_rows, "shards": writers[name].close()}
        for name in ordered_splits(list(writers))
    }
    lookup = pa.concat_tables(lookups).combine_chunks() if lookups else SCHEMA.empty_table()
    return splits, lookup


def env_batch_rows(default: int) -> int:
    """``MB_DEDUP_BATCH_ROWS`` (tests and benches), else ``default``."""
    value = os.environ.get("MB_DEDUP_BATCH_ROWS")
    return int(value) if value else default
