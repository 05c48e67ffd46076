"""Any input path (a file of any kind, a ``save_to_disk`` folder, a build folder) read as canonical
rows: the kind guessed from the path unless given, whole (:func:`read_input`) or streamed
(:func:`iter_input_batches`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ...core.errors import InputError
from ...pipeline import StageStats
from ..inputfile import FileState
from ..schema import SCHEMA
from .options import ReadOptions, read_options
from .registry import CONTAINERS, EXTENSIONS, NOT_FILES
from .rows import BATCH_ROWS, BadRow, RowStream, check_fields, iter_rows_batches, read_rows
from .source import SourceSpec


def detect_kind(path: Path, kind_option: str = "--kind") -> str:
    """Guess the container from a path: extension, a build folder, or a save_to_disk folder.
    ``kind_option`` is the option named in the error (``--reference-kind`` for a reference)."""
    if path.is_dir():
        if (path / "manifest.json").exists() and (path / "data").is_dir():
            return "build"
        return "hf_disk"
    kind = EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: cannot tell the format from the extension; use one of "
            + ", ".join(sorted(EXTENSIONS))
            + f", or pass the kind: {kind_option} NAME on the command line, kind='NAME' in Python "
            + "(NAME one of "
            + ", ".join(n for n in CONTAINERS.names() if n not in NOT_FILES)
            + ")"
        )
    return kind


def _open_input(path: Path, options: ReadOptions) -> tuple[Any, list[str]] | SourceSpec:
    """What :func:`read_input` and :func:`iter_input_batches` both start with: a verified build
    folder and the splits to read, or the :class:`SourceSpec` of a file (its fields checked)."""
    if not path.exists():
        raise InputError(f"{path}: not found")
    kind = options.kind or detect_kind(path, options.option("kind"))
    options.check_delimiter(path, kind)
    split = options.split
    if kind == "build":
        from ..buildio import verify_shards

        build = verify_shards(path)
        if split is not None and split not in build.splits:
            raise InputError(
                f"{path}: the build has no split {split!r}; splits: " + ", ".join(build.splits)
            )
        return build, [split] if split else list(build.splits)
    fields = dict(options.fields)
    check_fields(options.layout, fields, options.field_option)
    return SourceSpec(
        name=path.stem or "input",
        kind=kind,
        path=str(path),
        layout=options.layout,
        fields=fields,
        delimiter=options.delimiter,
        split=split or "train",
    )


@dataclasses.dataclass
class InputRead:
    """What :func:`read_input` read: the table, the rows it skipped, and the number that names each
    table row in row-level outputs (``source_row`` for a file, the position for a build folder)."""

    table: pa.Table
    skipped: list[BadRow]
    row_numbers: np.ndarray
    is_build: bool
    state: FileState | None = None  # ReadResult.state


def read_input(
    path: str | Path,
    options: ReadOptions | None = None,
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
    delimiter: str | None = None,
    skip_bad_rows: bool = False,
    split: str | None = None,
    lenient: bool = False,
    prompts_only: bool = False,
    field_option: str = "--field",
) -> InputRead:
    """Read a file or folder into a canonical table, guessing the kind from the path.

    A build folder yields all its splits (or ``split``) with rows as stored, numbered by position;
    any other input yields rows with ``source`` = the file stem and ``source_row`` = the 0-based
    index of the row in the input as read (skipped rows included). See :func:`read_rows` for
    ``skip_bad_rows``, ``lenient`` and ``prompts_only``. How to read it is ``options`` (a
    :class:`ReadOptions`, as the CLI builds it) or, equivalently, the keywords ``kind``,
    ``layout``, ``fields``, ``delimiter``, ``split`` and ``field_option`` (the option named in
    column-mapping hints, ``--reference-field`` for a decontamination reference).
    """
    path = Path(path)
    options = read_options(
        options,
        kind=kind,
        layout=layout,
        fields=fields,
        delimiter=delimiter,
        split=split,
        field_option=field_option,
    )
    source = _open_input(path, options)
    if not isinstance(source, SourceSpec):
        build, splits = source
        table = pa.concat_tables([build.table(s) for s in splits])
        return InputRead(table, [], np.arange(table.num_rows, dtype=np.int64), True)
    result = read_rows(
        source,
        path,
        skip_bad_rows=skip_bad_rows,
        lenient=lenient,
        prompts_only=prompts_only,
        field_option=options.field_option,
    )
    rows = result.table.column("source_row").to_numpy().astype(np.int64)
    return InputRead(result.table, result.skipped, rows, False, result.state)


def read_any(
    path: str | Path,
    options: ReadOptions | None = None,
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
    delimiter: str | None = None,
    skip_bad_rows: bool = False,
    split: str | None = None,
    lenient: bool = False,
    prompts_only: bool = False,
) -> pa.Table:
    """:func:`read_input`'s table."""
    return read_input(
        path,
        options,
        kind=kind,
        layout=layout,
        fields=fields,
        delimiter=delimiter,
        skip_bad_rows=skip_bad_rows,
        split=split,
        lenient=lenient,
        prompts_only=prompts_only,
    ).table


def _build_batches(
    path: Path, splits: list[str], build, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    from ..buildio import read_ipc

    for split in splits:
        for shard in build.shard_paths(split):
            table = read_ipc(shard, path)
            try:
                table = table.cast(SCHEMA)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
                raise InputError(
                    f"{path}: split {split!r} does not have the canonical schema "
                    f"({str(exc).splitlines()[0][:200]}); the build is damaged"
                ) from None
            yield from table.combine_chunks().to_batches(max_chunksize=batch_rows)


def iter_input_batches(
    path: str | Path,
    options: ReadOptions | None = None,
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
    delimiter: str | None = None,
    skip_bad_rows: bool = False,
    split: str | None = None,
    lenient: bool = False,
    prompts_only: bool = False,
    field_option: str = "--field",
    batch_rows: int = BATCH_ROWS,
) -> RowStream:
    """:func:`read_input` (hence :func:`read_any`) as a stream of canonical-schema record batches.

    Same arguments, rows, order, ``source_row`` and errors as :func:`read_input`; see
    :func:`iter_rows_batches` for the batch contract. A build folder is verified (sizes and sha256
    of every shard) before the first batch and streamed shard by shard, all its splits (or
    ``split``) in manifest order; batches never span two shards. Rows of a build are named by their
    position in that order (``RowStream.is_build``), file rows by ``source_row``
    (:func:`batch_row_numbers`)."""
    path = Path(path)
    options = read_options(
        options,
        kind=kind,
        layout=layout,
        fields=fields,
        delimiter=delimiter,
        split=split,
        field_option=field_option,
    )
    source = _open_input(path, options)
    if not isinstance(source, SourceSpec):
        build, splits = source
        stream = RowStream(iter(()), [], StageStats(name=f"read/{path.name}"), True)
        stream.batches = _build_batches(path, splits, build, batch_rows)
        return stream
    return iter_rows_batches(
        source,
        path,
        skip_bad_rows=skip_bad_rows,
        lenient=lenient,
        prompts_only=prompts_only,
        field_option=options.field_option,
        batch_rows=batch_rows,
    )


def batch_row_numbers(stream: RowStream, batch: pa.RecordBatch, start: int) -> np.ndarray:
    """The numbers naming ``batch``'s rows in row-level outputs, as :func:`read_input`'s
    ``row_numbers``: ``source_row`` for a file, the position (``start`` = rows before this batch)
    for a build folder."""
    if stream.is_build:
        return np.arange(start, start + batch.num_rows, dtype=np.int64)
    return batch.column("source_row").to_numpy(zero_copy_only=False).astype(np.int64)
