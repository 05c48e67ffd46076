"""One split of a corpus, by position, taken one shard at a time (the build's streamed writing).

The build's stages hand the writer one corpus table in which every row names its ``split``. Cutting
that table into one filtered copy per split before writing held a second copy of the corpus; a
:class:`SplitRows` holds only the split's row positions and materialises a shard's rows when the
writer asks for them (:meth:`SplitRows.slice`), so writing holds the corpus plus one shard.

The bytes are those of the filtered tables: a shard is the same rows in the same order, and
:func:`mbdata.io.shards.write_ipc` combines the chunks and fixes the batch layout before writing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def take_sorted(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """The rows of ``table`` at ascending ``positions``, each column taken chunk by chunk.

    (``Table.take`` over a table of many chunks may concatenate a column's chunks first, a copy of
    the whole column for every shard; here each chunk gives only the rows that fall inside it.)"""
    idx = np.asarray(positions, dtype=np.int64)
    columns = [_take_column(column, idx) for column in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)


def _take_column(column: pa.ChunkedArray, idx: np.ndarray) -> pa.ChunkedArray:
    bounds = _bounds(column)
    cuts = np.searchsorted(idx, bounds)
    parts = [
        column.chunk(i).take(pa.array(idx[cuts[i] : cuts[i + 1]] - bounds[i]))
        for i in range(column.num_chunks)
        if cuts[i + 1] > cuts[i]
    ]
    return pa.chunked_array(parts, type=column.type)


def _bounds(column: pa.ChunkedArray) -> np.ndarray:
    return np.cumsum([0] + [len(chunk) for chunk in column.chunks], dtype=np.int64)


# Rows taken past a shard's end (doubled while not enough; see shard_column), and the bytes every
# buffer must hold past it: the writer reads at most Arrow's 64-byte alignment past a slice.
LOOKAHEAD = 1024
PAST = 64


def shard_column(column: pa.ChunkedArray, positions: np.ndarray, start: int, stop: int):
    """Rows ``positions[start:stop]`` of ``column`` laid out as in ``column.filter(mask)`` sliced
    to ``[start, stop)`` and combined (what the writer wrote before shards were streamed), so the
    IPC bytes are the same.

    Why the layout matters: the IPC writer sends a sliced buffer's padding (and a bitmap up to
    Arrow's alignment) from the bytes that follow the slice in its buffer, i.e. from the next rows
    of the filtered chunk. So a shard that lies inside one chunk of the filtered column is taken
    with the rows after it in that chunk (``LOOKAHEAD``, doubled until every buffer has ``PAST``
    bytes past the shard, or to the chunk's end) and one row before it when it did not start the
    chunk (the writer takes another path for a slice at offset 0), then sliced; a shard over
    several chunks was concatenated (fresh buffers) and is again."""
    if stop <= start:
        return pa.array([], type=column.type)
    # Filtered chunk j holds the split's rows [bounds[j], bounds[j + 1]).
    bounds = np.searchsorted(positions, _bounds(column))
    first = int(np.searchsorted(bounds, start, side="right")) - 1
    if bounds[first + 1] < stop:  # over several chunks: concatenated, as before
        return _take_column(column, positions[start:stop]).combine_chunks()
    chunk, base = column.chunk(first), int(bounds[first])
    origin = _bounds(column)[first]
    before = _rows_before(chunk, positions[base:start] - origin) if start > base else 0
    ahead = LOOKAHEAD
    while True:
        end = min(stop + ahead, int(bounds[first + 1]))
        if end == bounds[first + 1] and pa.types.is_list(column.type):
            before = start - base  # to the chunk's end: the whole filtered chunk, as before
        rows = positions[start - before : end] - origin
        taken = chunk.take(pa.array(rows))
        if end == bounds[first + 1] or _enough(taken, before + stop - start):
            return taken.slice(before, stop - start)
        ahead *= 2


def _rows_before(chunk: pa.Array, earlier: np.ndarray) -> int:
    """How many of the chunk's ``earlier`` rows (the split's rows before the shard) to take with
    it: one, so the slice does not start at offset 0, and for a list column back to the last row
    with an item, so its items do not start at offset 0 either when they did not in the filtered
    chunk (``earlier`` is searched backwards a block at a time)."""
    if not pa.types.is_list(chunk.type):
        return 1
    stop = len(earlier)
    while stop > 0:
        lo = max(0, stop - LOOKAHEAD)
        lengths = pc.list_value_length(chunk.take(pa.array(earlier[lo:stop])))
        filled = np.flatnonzero(lengths.to_numpy(zero_copy_only=False) > 0)
        if len(filled):
            return len(earlier) - (lo + int(filled[-1]))
        stop = lo
    return 1


def _enough(arr: pa.Array, stop: int) -> bool:
    """Whether every buffer of ``arr`` (offset 0) holds ``PAST`` bytes past value ``stop``
    (validity bitmaps: ``PAST`` bytes of bits)."""
    n = len(arr)
    if n - stop < 8 * PAST:
        return False
    kind = arr.type
    if pa.types.is_string(kind) or pa.types.is_binary(kind):
        buf = arr.buffers()[1]
        offsets = np.frombuffer(buf, dtype=np.int32, count=n + 1, offset=arr.offset * 4)
        return int(offsets[n]) - int(offsets[stop]) >= PAST
    if pa.types.is_list(kind):
        offsets = arr.offsets
        lo, hi = offsets[stop].as_py(), offsets[n].as_py()
        return _enough(arr.values.slice(0, hi), lo) if hi - lo else False
    if pa.types.is_struct(kind):
        return all(_enough(arr.field(i), stop) for i in range(kind.num_fields))
    return True  # fixed width: 8 * PAST values past the end are more than PAST bytes


class SplitRows:
    """The rows of one split of ``corpus`` (at ``positions``, ascending), as the writer reads them:
    ``num_rows`` and ``slice(offset, length)``, the two things it needs of a table."""

    def __init__(self, corpus: pa.Table, positions: np.ndarray):
        self.corpus = corpus
        self.positions = np.asarray(positions, dtype=np.int64)

    @property
    def num_rows(self) -> int:
        return len(self.positions)

    def slice(self, offset: int = 0, length: int | None = None) -> pa.Table:
        """Rows ``[offset, offset + length)`` of the split, laid out as a slice of the filtered
        split table would be (:func:`shard_column`), so the shards' bytes do not change."""
        stop = self.num_rows if length is None else min(self.num_rows, offset + length)
        columns = [shard_column(c, self.positions, offset, stop) for c in self.corpus.columns]
        return pa.Table.from_arrays(columns, schema=self.corpus.schema)

    def table(self) -> pa.Table:
        """Every row of the split as one table (what a caller of ``build_in_memory`` gets)."""
        return take_sorted(self.corpus, self.positions)


def split_positions(corpus: pa.Table) -> dict[str, np.ndarray]:
    """Each split name of ``corpus`` (sorted) -> the positions of its rows, ascending (the rows
    ``corpus.filter(split == name)`` holds, without the copy: a mask of one byte per row)."""
    column = corpus.column("split")
    return {
        name: np.flatnonzero(pc.equal(column, name).to_numpy(zero_copy_only=False))
        for name in sorted(pc.unique(column).to_pylist())
    }


def split_rows(corpus: pa.Table) -> dict[str, SplitRows]:
    """Every split of ``corpus`` as a :class:`SplitRows`, in sorted name order."""
    return {name: SplitRows(corpus, pos) for name, pos in split_positions(corpus).items()}
