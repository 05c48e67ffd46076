"""One split of a corpus, by position, taken one shard at a time (the build's streamed writing).

The build's stages hand the writer one corpus table in which every row names its ``split``. Cutting
that table into one filtered copy per split before writing held a second copy of the corpus; a
:class:`SplitRows` holds only the split's row positions and materialises a shard's rows when the
writer asks for them (:meth:`SplitRows.slice`), so writing holds the corpus plus one shard.

The bytes are those of the filtered tables: a shard is the same rows in the same order, laid out
as the filtered table's slice was (see :class:`SplitRows` for why the layout matters), and
:func:`mbdata.io.shards.write_ipc` combines the chunks and fixes the batch layout before writing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _take_column(column: pa.ChunkedArray, idx: np.ndarray) -> pa.ChunkedArray:
    """Rows at ascending ``idx``, each chunk giving the rows inside it (``take`` over a column of
    many chunks may concatenate them first: a copy of the whole column)."""
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


# Rows taken past a shard's end, and the bytes every buffer must then hold past it: the writer
# reads at most Arrow's 64-byte alignment past a slice.
LOOKAHEAD = 1024
PAST = 64


def table_bounds(table: pa.Table) -> np.ndarray:
    """The row boundaries ``Table.filter`` cuts a table at: every column's chunk boundaries
    (its output chunk ``j`` holds the kept rows of ``[bounds[j], bounds[j + 1])``)."""
    edges = [_bounds(column) for column in table.columns]
    return np.unique(np.concatenate(edges)) if edges else np.zeros(1, dtype=np.int64)


class SplitRows:
    """The rows of one split of ``corpus`` (at ``positions``, ascending), as the writer reads them:
    ``num_rows`` and ``slice(offset, length)``, the two things it needs of a table.

    A shard's bytes are those of the same rows sliced from ``corpus.filter(split == name)`` (the
    writer before shards were streamed), whose layout they depend on: the IPC writer sends a
    sliced buffer's padding (and a bitmap up to Arrow's alignment) from the bytes that follow the
    slice in its buffer, i.e. from the next rows of the same chunk of the filtered table, and it
    takes other paths for a slice at offset 0 than elsewhere. So (:meth:`_column`):

    * a shard over several chunks of the filtered table was concatenated (fresh buffers), and is;
    * inside one chunk, a column whose buffers have ``PAST`` bytes within ``LOOKAHEAD`` rows after
      the shard (the text columns) is taken with those rows and one row before it, then sliced;
    * any other column (lists, and columns null or empty after the shard: ``system``,
      ``triggered_*``) is that chunk of the filtered column itself, taken once and kept while the
      shards inside it are written (a few bytes a row: offsets and validity).
    """

    def __init__(self, corpus: pa.Table, positions: np.ndarray):
        self.corpus = corpus
        self.positions = np.asarray(positions, dtype=np.int64)
        bounds = table_bounds(corpus)
        self._rows = bounds  # corpus rows where a chunk of the filtered table starts
        self._split = np.searchsorted(self.positions, bounds)  # the same in split rows
        self._kept: dict[int, tuple[int, pa.Array]] = {}  # column -> (chunk, filtered chunk)

    @property
    def num_rows(self) -> int:
        return len(self.positions)

    def slice(self, offset: int = 0, length: int | None = None) -> pa.Table:
        """Rows ``[offset, offset + length)`` of the split, laid out as a slice of the filtered
        split table would be, so the shards' bytes do not change."""
        stop = self.num_rows if length is None else min(self.num_rows, offset + length)
        columns = [self._column(i, offset, stop) for i in range(self.corpus.num_columns)]
        if stop == self.num_rows:
            self._kept.clear()  # the split's last shard: nothing more is sliced from them
        return pa.Table.from_arrays(columns, schema=self.corpus.schema)

    def table(self) -> pa.Table:
        """Every row of the split as one table, ``corpus.filter(split == name)`` (what a caller of
        ``build_in_memory`` gets: a copy of the split's rows)."""
        mask = np.zeros(self.corpus.num_rows, dtype=bool)
        mask[self.positions] = True
        return self.corpus.filter(pa.array(mask))

    def _column(self, i: int, start: int, stop: int) -> pa.Array:
        column = self.corpus.column(i)
        if stop <= start:
            return pa.array([], type=column.type)
        chunk = int(np.searchsorted(self._split, start, side="right")) - 1
        first, last = int(self._split[chunk]), int(self._split[chunk + 1])
        if last < stop:  # over several chunks: concatenated, as before
            return _take_column(column, self.positions[start:stop]).combine_chunks()
        if not pa.types.is_list(column.type):
            before = 1 if start > first else 0
            end = min(stop + LOOKAHEAD, last)
            taken = self._take(column, self.positions[start - before : end])
            if end == last or _enough(taken, before + stop - start):
                return taken.slice(before, stop - start)
        kept = self._kept.get(i)
        if kept is None or kept[0] != chunk:
            self._kept[i] = kept = (chunk, self._take(column, self.positions[first:last]))
        return kept[1].slice(start - first, stop - start)

    @staticmethod
    def _take(column: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
        """Rows at ascending ``rows`` (corpus positions, inside one chunk of ``column``)."""
        bounds = _bounds(column)
        k = int(np.searchsorted(bounds, rows[0], side="right")) - 1
        return column.chunk(k).take(pa.array(rows - bounds[k]))


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
    if pa.types.is_struct(kind):
        return all(_enough(arr.field(i), stop) for i in range(kind.num_fields))
    return not pa.types.is_nested(kind)  # fixed width: 8 * PAST values are PAST bytes or more


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
