"""The build's corpus out of memory: every column an Arrow IPC file in a staging folder, mapped
back read-only, so a build's peak memory does not grow with the corpus (issue 28).

Why a file per column, mapped: the stages rebuild the corpus one column at a time
(:func:`mbdata.pipeline.filter_rows`, :func:`~mbdata.pipeline.replace_rows`); with a column per
file, a rebuilt column is written piece by piece (:data:`PIECE_ROWS` rows) to a new file and
mapped back, so no stage holds a whole column in memory. The old file is unlinked as soon as it
is mapped: its pages go back to the system once no array refers to them.

Why :func:`release`: a mapped page a pass has read stays in this process's resident set (it is
counted in its RSS) until the kernel needs the memory. The per-batch passes, the piecewise
rebuilds and the writer call :func:`release` after each piece, which drops the pages of every
live mapping from this process (``madvise(MADV_DONTNEED)``: they stay in the page cache, and a
later read maps them again without touching the disk). The corpus then costs the page cache,
which the system reclaims under pressure, not the build's own memory.

:func:`spilling` makes a folder the current spill (a context variable), which
:func:`mbdata.pipeline.run_stage`, the rebuilds and the writer read through :func:`active`; with
no spill (``build_in_memory`` from Python, the default) every table stays in memory as before.
"""

from __future__ import annotations

import contextlib
import contextvars
import mmap
import os
import shutil
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

#: Rows per piece (chunk) of a spilled column, the unit every rebuild writes and :func:`release`
#: follows: a piece of one column is a few MB to tens of MB. Not smaller: every chunk of a mapped
#: column costs resident pages whenever a table over it is validated (the kernel maps the 64 KiB
#: around the first and last offsets each check reads), so the number of chunks must stay low.
PIECE_ROWS = 262_144

_ACTIVE: contextvars.ContextVar[Spill | None] = contextvars.ContextVar("mb_spill", default=None)


class Spill:
    """A staging folder of spilled columns and the live mappings of their files."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._maps: list[tuple[weakref.ref[mmap.mmap], int, int]] = []  # (map, address, size)
        self._files = 0

    def writer(self, field: pa.Field) -> ColumnWriter:
        """A new spilled column of ``field``, written piece by piece."""
        self._files += 1
        return ColumnWriter(self, self.folder / f"{self._files:06d}.arrow", field)

    def column(self, field: pa.Field, column: pa.ChunkedArray) -> pa.ChunkedArray:
        """``column`` with every chunk not yet in a live mapping spilled (written in pieces of
        at most :data:`PIECE_ROWS` rows to one new file), the mapped chunks kept as they are (rows
        appended to a spilled column cost a file of the new rows, not a copy of the column)."""
        spans = self._spans()
        chunks = column.chunks
        fresh = [i for i, chunk in enumerate(chunks) if not _inside(chunk, spans)]
        if not fresh:
            return column
        writer = self.writer(field)
        for i in fresh:
            writer.write(chunks[i])  # cut into batches of PIECE_ROWS rows by the writer
        written = iter(_pieces(writer.finish(), [len(chunks[i]) for i in fresh]))
        spilled = set(fresh)
        out: list[pa.Array] = []
        for i, chunk in enumerate(chunks):
            out.extend(next(written).chunks if i in spilled else [chunk])
        return pa.chunked_array(out, type=column.type)

    def table(self, table: pa.Table) -> pa.Table:
        """``table`` with every column not yet spilled spilled, the spilled ones kept (a column
        is released, once spilled, as soon as nothing refers to it)."""
        schema = table.schema
        columns = list(table.columns)
        del table
        out = []
        for i in range(len(columns)):
            column, columns[i] = columns[i], None
            out.append(self.column(schema.field(i), column))
            del column
            self.release()
        table = pa.Table.from_arrays(out, schema=schema)
        self.release()
        return table

    def _spans(self) -> list[tuple[int, int]]:
        """(address, size) of every live mapping."""
        return [(address, size) for ref, address, size in self._maps if ref() is not None]

    def map_file(self, path: Path, field: pa.Field) -> pa.ChunkedArray:
        """The column written to ``path``, its batches read in place from a read-only mapping;
        the file is unlinked at once (the mapping keeps its pages until it is dropped)."""
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        try:
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        # Windows keeps a mapped file open: there the folder goes at the end.
        with contextlib.suppress(OSError):
            os.unlink(path)
        buffer = pa.py_buffer(mapped)
        self._maps = [m for m in self._maps if m[0]() is not None]
        self._maps.append((weakref.ref(mapped), buffer.address, buffer.size))
        reader = pa.ipc.open_file(pa.BufferReader(buffer))
        chunks = [reader.get_batch(i).column(0) for i in range(reader.num_record_batches)]
        # Reading each batch's metadata maps the pages around it (fault-around): drop them.
        _drop_pages(mapped)
        return pa.chunked_array(chunks, type=field.type)

    def release(self, array: pa.Array | None = None) -> None:
        """Drop every live mapping's pages from this process's resident set (see the module), or
        only those of the mappings ``array``'s buffers lie in."""
        starts = None
        if array is not None:
            starts = [b.address for b in array.buffers() if b is not None and b.size]
        for ref, address, size in self._maps:
            mapped = ref()
            if mapped is None:
                continue
            if starts is None or any(address <= a < address + size for a in starts):
                _drop_pages(mapped)


def _drop_pages(mapped: mmap.mmap) -> None:
    """``madvise(MADV_DONTNEED)`` on the whole mapping, where the platform has it (not Windows:
    there the pages stay until the system needs them)."""
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if advice is not None and hasattr(mapped, "madvise"):
        mapped.madvise(advice)


def _inside(chunk: pa.Array, spans: list[tuple[int, int]]) -> bool:
    """Whether every buffer of ``chunk`` lies in one of the mappings ``spans``."""
    for buf in chunk.buffers():
        if buf is None or buf.size == 0:
            continue
        if not any(a <= buf.address and buf.address + buf.size <= a + s for a, s in spans):
            return False
    return True


def _pieces(column: pa.ChunkedArray, lengths: list[int]) -> list[pa.ChunkedArray]:
    """``column`` cut into consecutive parts of ``lengths`` rows, each part's chunks as written."""
    out, start = [], 0
    for n in lengths:
        out.append(column.slice(start, n))
        start += n
    return out


class ColumnWriter:
    """One spilled column being written: :meth:`write` pieces, then :meth:`finish` maps it."""

    def __init__(self, spill: Spill, path: Path, field: pa.Field):
        self.spill = spill
        self.path = path
        self.field = field
        self.schema = pa.schema([field])
        # A new file, never through a link (the folder is this build's own, mode 0700).
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self._sink = pa.PythonFile(os.fdopen(os.open(path, flags, 0o600), "wb"), mode="w")
        self._writer = pa.ipc.new_file(self._sink, self.schema)
        self._held: list[pa.Array] = []
        self._held_rows = 0

    def write(self, piece: pa.Array | pa.ChunkedArray) -> None:
        """Append rows; they are written in batches of :data:`PIECE_ROWS` rows (smaller pieces
        are held until a batch is full), so the column has few chunks however it was written."""
        chunks = piece.chunks if isinstance(piece, pa.ChunkedArray) else [piece]
        for chunk in chunks:
            while len(chunk):
                room = PIECE_ROWS - self._held_rows
                self._held.append(chunk.slice(0, room))
                self._held_rows += min(room, len(chunk))
                chunk = chunk.slice(room)
                if self._held_rows == PIECE_ROWS:
                    self._flush()

    def _flush(self) -> None:
        if self._held_rows:
            batch = pa.concat_arrays(self._held) if len(self._held) > 1 else self._held[0]
            self._writer.write_batch(pa.record_batch([batch], schema=self.schema))
        self._held, self._held_rows = [], 0

    def finish(self) -> pa.ChunkedArray:
        self._flush()
        self._writer.close()
        self._sink.close()
        return self.spill.map_file(self.path, self.field)


def spill_batches(parts: Iterable[pa.Table | pa.RecordBatch], schema: pa.Schema) -> pa.Table:
    """``parts`` (tables or record batches of ``schema``, e.g. a reader's or an executor's output)
    written column by column to the current spill as they come, then mapped back: the table is
    never whole in memory. Needs a current spill (:func:`active`)."""
    spill = _ACTIVE.get()
    if spill is None:
        raise RuntimeError("spill_batches: no spill is active")
    writers = [spill.writer(field) for field in schema]
    for part in parts:
        part = part.cast(schema)
        for writer, column in zip(writers, part.columns):
            writer.write(column)
    table = pa.Table.from_arrays([w.finish() for w in writers], schema=schema)
    spill.release()  # the pages validating the table touched (see PIECE_ROWS)
    return table


def active() -> Spill | None:
    """The current build's spill, or None (tables stay in memory)."""
    return _ACTIVE.get()


def release() -> None:
    """:meth:`Spill.release` of the current spill (nothing without one)."""
    spill = _ACTIVE.get()
    if spill is not None:
        spill.release()


@contextlib.contextmanager
def spilling(folder: Path | None) -> Iterator[Spill | None]:
    """Make ``folder`` (created here, mode 0700; it must not exist) the current spill for the
    block, and remove it afterwards. ``None``: no spill. A build killed before the end leaves the
    folder behind (its files are unlinked once mapped, so at most one column being written): the
    output's next command removes it (:func:`mbdata.core.atomic.recover`, as other leftovers)."""
    if folder is None:
        yield None
        return
    made = [p for p in folder.parents if not p.exists()]  # the output's folders, made early
    folder.parent.mkdir(parents=True, exist_ok=True)  # as the output's commit would
    folder.mkdir(mode=0o700)
    spill = Spill(folder)
    token = _ACTIVE.set(spill)
    try:
        yield spill
    finally:
        _ACTIVE.reset(token)
        shutil.rmtree(folder, ignore_errors=True)
        for parent in made:  # deepest first; a build that failed leaves no empty folders
            with contextlib.suppress(OSError):
                parent.rmdir()


def take_rows(column: pa.ChunkedArray, positions: np.ndarray) -> pa.ChunkedArray:
    """The rows of ``column`` at ``positions`` (in that order), each chunk giving the rows inside
    it (``ChunkedArray.take`` concatenates every chunk first: a copy of the whole column)."""
    positions = np.asarray(positions, dtype=np.int64)
    if len(positions) > 1 and not bool(np.all(positions[1:] >= positions[:-1])):
        order = np.argsort(positions, kind="stable")
        taken = take_rows(column, positions[order])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order), dtype=np.int64)
        return taken.take(pa.array(inverse))
    bounds = np.cumsum([0] + [len(chunk) for chunk in column.chunks], dtype=np.int64)
    cuts = np.searchsorted(positions, bounds)
    spill = _ACTIVE.get()
    parts = []
    for i in range(column.num_chunks):
        if cuts[i + 1] > cuts[i]:
            chunk = column.chunk(i)
            parts.append(chunk.take(pa.array(positions[cuts[i] : cuts[i + 1]] - bounds[i])))
            if spill is not None:  # rows spread over the corpus touch every page of it
                spill.release(chunk)
    return pa.chunked_array(parts, type=column.type)


def take_table(table: pa.Table, positions: np.ndarray | list[int]) -> pa.Table:
    """:func:`take_rows` of every column of ``table`` (``Table.take`` without the copy of every
    column it concatenates first)."""
    positions = np.asarray(positions, dtype=np.int64)
    columns = [take_rows(column, positions) for column in table.columns]
    return pa.Table.from_arrays(columns, schema=table.schema)
