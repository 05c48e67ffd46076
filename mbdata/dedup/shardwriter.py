"""Writing one split's shards from a stream of batches, byte-identical to ``write_build``.

:func:`mbdata.io.shards.write_split_shards` needs the whole split as one table. When the split's row
count is known in advance (streaming dedup knows it from its keep-mask before it writes), the same
files can be written from batches as they come: shard ``i`` of ``n`` holds rows
``[i * shard_rows, (i + 1) * shard_rows)`` and is written as record batches of
``min(shard rows, 65,536)`` rows, exactly as :func:`mbdata.io.shards.write_ipc` does, so the shards,
their sha256 and the manifest's content hash are the same as the in-memory path's. Memory: the
rows of one record batch (at most 65,536) plus the incoming batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from ..io.schema import SCHEMA
from ..io.shards import SHARD_PATTERN, fresh, sha256_file

IPC_BATCH_ROWS = 65_536  # mbdata.io.shards.write_ipc's max_chunksize cap


class SplitShardWriter:
    """Shards of one split of ``total_rows`` rows, fed in order with :meth:`add`."""

    def __init__(self, root: Path, split: str, total_rows: int, shard_rows: int):
        if total_rows < 1:
            raise ValueError("an empty split is not written")
        self.root, self.split = Path(root), split
        self.total_rows, self.shard_rows = total_rows, shard_rows
        self.shards = max(1, math.ceil(total_rows / shard_rows))
        self.records: list[dict] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._index = -1
        self._left_in_shard = 0
        self._chunk = 0
        self._written = 0
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchFileWriter | None = None
        self._path: Path | None = None

    def add(self, table: pa.Table) -> None:
        """Append rows (canonical schema) to the split."""
        if table.num_rows == 0:
            return
        self._pending.append(table.cast(SCHEMA))
        self._pending_rows += table.num_rows
        if self._written + self._pending_rows > self.total_rows:
            raise ValueError(f"split {self.split!r}: more rows than announced")
        self._flush(final=False)

    def close(self) -> list[dict]:
        """Write what is left and return the manifest records of the shards."""
        self._flush(final=True)
        if self._written != self.total_rows or self._writer is not None:
            raise ValueError(
                f"split {self.split!r}: {self._written} rows written, {self.total_rows} announced"
            )
        return self.records

    def _open_shard(self) -> None:
        self._index += 1
        rows = min(self.shard_rows, self.total_rows - self._index * self.shard_rows)
        self._left_in_shard = rows
        self._chunk = max(1, min(rows, IPC_BATCH_ROWS))
        rel = SHARD_PATTERN.format(split=self.split, index=self._index, total=self.shards)
        self._rel, self._path, self._rows = rel, self.root / rel, rows
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._sink = pa.OSFile(str(self._path), "wb")
        self._writer = pa.ipc.new_file(self._sink, SCHEMA)

    def _close_shard(self) -> None:
        assert self._writer is not None and self._sink is not None and self._path is not None
        self._writer.close()
        self._sink.close()
        self._writer = self._sink = None
        self.records.append(
            {
                "path": self._rel,
                "rows": self._rows,
                "sha256": sha256_file(self._path),
                "bytes": self._path.stat().st_size,
            }
        )

    def _flush(self, final: bool) -> None:
        while self._pending_rows:
            if self._writer is None:
                self._open_shard()
            size = min(self._chunk, self._left_in_shard)
            if self._pending_rows < size and not final:
                return
            table = pa.concat_tables(self._pending).combine_chunks()
            size = min(size, table.num_rows)
            assert self._writer is not None  # opened above
            for batch in fresh(table.slice(0, size)).to_batches():  # as write_ipc: fresh buffers
                self._writer.write_batch(batch)
            rest = table.slice(size)
            self._pending = [rest] if rest.num_rows else []
            self._pending_rows = rest.num_rows
            self._written += size
            self._left_in_shard -= size
            if self._left_in_shard == 0:
                self._close_shard()
