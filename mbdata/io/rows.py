"""One split of a corpus, by position, taken one shard at a time (the build's streamed writing).

The build's stages hand the writer one corpus table in which every row names its ``split``. Cutting
that table into one filtered copy per split before writing held a second copy of the corpus; a
:class:`SplitRows` holds only the split's row positions and takes a shard's rows when the writer
asks for them (:meth:`SplitRows.slice`), so writing holds one shard at a time. The rows are taken
chunk by chunk (:func:`mbdata.io.spill.take_rows`: ``Table.take`` would concatenate every column
first), and a shard's bytes depend on its rows alone: :func:`mbdata.io.shards.write_ipc` writes
fresh buffers, whatever the layout of the table they came from.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .spill import take_table


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
        """Rows ``[offset, offset + length)`` of the split."""
        stop = self.num_rows if length is None else min(self.num_rows, offset + length)
        return take_table(self.corpus, self.positions[offset:stop])

    def table(self) -> pa.Table:
        """Every row of the split as one table, ``corpus.filter(split == name)`` (what a caller of
        ``build_in_memory`` gets: a copy of the split's rows)."""
        return self.slice()


def split_positions(corpus: pa.Table) -> dict[str, np.ndarray]:
    """Each split name of ``corpus`` (sorted) -> the positions of its rows, ascending (the rows
    ``corpus.filter(split == name)`` holds, without the copy: a mask of one byte per row)."""
    from ..pipeline import split_indices

    names = sorted(pc.unique(corpus.column("split")).to_pylist())
    return {name: split_indices(corpus, name) for name in names}


def split_rows(corpus: pa.Table) -> dict[str, SplitRows]:
    """Every split of ``corpus`` as a :class:`SplitRows`, in sorted name order."""
    return {name: SplitRows(corpus, pos) for name, pos in split_positions(corpus).items()}
