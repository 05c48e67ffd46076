"""The one row loop: a source's container records through its layout into canonical rows, with
the schema check, bad-row accounting and the end-of-read errors; whole tables (:func:`read_rows`)
or record batches (:func:`iter_rows_batches`)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ...core.errors import InputError
from ...pipeline import StageStats
from ..inputfile import FileState, check_unchanged, file_state
from ..schema import SCHEMA, from_rows, row_ids
from ..spill import active as spill_active
from ..spill import spill_batches
from .chat import layout_without_answer
from .records import RawRecord, RowProblem, column_root, column_value
from .registry import CONTAINERS, LAYOUT_FIELDS, LAYOUTS
from .source import SourceSpec

# How many rows are looked at to decide that a column is missing from the file (a schema error,
# reported once) rather than from one row (a bad row).
SCHEMA_PROBE_ROWS = 100


# How many bad rows a strict read names in its error (all are counted).
BAD_ROWS_NAMED = 5


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A row that was not read: its 0-based ``source_row`` (as read, skipped rows included), its
    1-based ``line`` for JSONL, the stats ``reason``, the offending ``field`` and what was wrong."""

    source: str
    source_row: int
    line: int | None
    reason: str
    field: str
    detail: str

    def describe(self) -> str:
        where = f"row {self.source_row} (0-based" + (f"; line {self.line})" if self.line else ")")
        field = "" if self.field == "-" else f": field '{self.field}'"
        return f"{where}{field}: {self.detail}"

    def record(self) -> dict[str, Any]:
        """The row as one line of ``skipped.jsonl``."""
        return {
            "source": self.source,
            "source_row": self.source_row,
            "line": self.line,
            "reason": self.reason,
            "field": None if self.field == "-" else self.field,
            "detail": self.detail,
        }


@dataclasses.dataclass
class ReadResult:
    """A canonical table and the rows that were skipped (in input order)."""

    table: pa.Table
    skipped: list[BadRow]
    stats: StageStats
    # the input file's state when the read started and ended (None: not a regular file); hash it
    # with mbdata.io.manifest.input_record(..., state) so the manifest names what was read
    state: FileState | None = None


# Rows per batch of the streaming readers: large enough that per-batch numpy/Arrow calls amortise,
# small enough that a batch's Python objects stay a few tens of MB.
BATCH_ROWS = 8192


@dataclasses.dataclass
class RowStream:
    """Canonical-schema record batches of one input, read lazily (see :func:`iter_input_batches`).

    Iterate it once. ``skipped`` and ``stats`` fill in as the batches are read and are complete only
    after the last batch; ``row_numbers`` of a batch (the number naming each row in row-level
    outputs) is :func:`batch_row_numbers`."""

    batches: Iterator[pa.RecordBatch]
    skipped: list[BadRow]
    stats: StageStats
    is_build: bool
    state: FileState | None = None  # as ReadResult.state, set once the first batch is read

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.batches


def _where(source: SourceSpec, path: Path | None) -> str:
    if source.kind == "synthetic":
        return f"source {source.name!r}"
    if source.kind == "hub":
        return f"hub dataset {source.path!r}"
    return str(path)


def _required_columns(source: SourceSpec, prompts_only: bool) -> dict[str, str]:
    """Canonical field -> input column that every row must have (after ``fields`` renames)."""
    if source.layout == "alpaca":
        names = ("instruction",) if prompts_only else ("instruction", "output")
    elif source.layout == "sharegpt":
        names = ("conversations",)
    else:
        names = ("messages",)
    return {name: source.fields.get(name, name) for name in names}


def check_fields(layout: str, fields: dict[str, str], option: str = "--field") -> None:
    """Refuse a column mapping for a canonical name the layout does not have."""
    allowed = LAYOUT_FIELDS[layout]
    for key in fields:
        if key not in allowed:
            raise InputError(
                f"{option} {key}=...: unknown canonical field {key!r} for layout "
                f"{layout!r}; valid names: {', '.join(allowed)}"
            )


def _check_schema(
    source: SourceSpec,
    path: Path | None,
    probe: list[dict],
    prompts_only: bool,
    option: str = "--field",
) -> None:
    """Fail once, before any row error, when required columns are absent from the first rows:
    list the columns found and say how to map them (with the exact column when only the case
    differs)."""
    if not probe or source.kind == "synthetic":
        return
    found: dict[str, None] = {}
    for record in probe:
        found.update(dict.fromkeys(record))
    missing, mapping = [], {}
    for name, column in _required_columns(source, prompts_only).items():
        if column in found or column_root(column) in found:
            continue
        missing.append(f"{column!r}" + ("" if column == name else f" ({name})"))
        same = [c for c in found if isinstance(c, str) and c.lower() == column.lower()]
        mapping[name] = same[0] if same else None
    if not missing:
        return
    if source.kind == "csv" and any(isinstance(c, str) and "\t" in c for c in found):
        # one column named "instruction\tinput\toutput": a TSV read as CSV
        kind_option = option.replace("field", "kind") if option.startswith("--") else "--kind"
        raise InputError(
            f"{_where(source, path)}: the header is one column holding tabs, so the file is "
            f"tab-separated: read it as TSV ({kind_option} tsv on the command line, `kind: tsv` "
            'in a recipe, or a .tsv extension; quoted fields: `kind: csv` with `delimiter: "\\t"`)'
        )
    if all(mapping.values()):
        # Optional columns spelt the same way are mapped too (else `Input` would be silently lost).
        for name in LAYOUT_FIELDS[source.layout]:
            column = source.fields.get(name, name)
            if name not in mapping and column not in found:
                same = [c for c in found if isinstance(c, str) and c.lower() == column.lower()]
                if same:
                    mapping[name] = same[0]
        pairs = list(mapping.items())
        lead = "the names differ only in case: map them"
    else:
        pairs = [(name, column or "COLUMN") for name, column in mapping.items()]
        lead = "map the columns that hold them"
    recipe = "`fields: {" + ", ".join(f"{n}: {c}" for n, c in pairs) + "}`"
    how = (
        f"in the recipe's source: {recipe}"
        if option == "fields:"
        else "with " + " ".join(f"{option} {n}={c}" for n, c in pairs) + f" (recipe: {recipe})"
    )
    columns = ", ".join(repr(c) for c in found) or "(none)"
    what = "column" if len(missing) == 1 else "columns"
    raise InputError(
        f"{_where(source, path)}: required {what} {', '.join(missing)} missing from "
        f"the first {len(probe)} rows; columns found: {columns}; {lead} {how}"
    )


def _records_with_schema_check(
    records: Iterator[RawRecord],
    source: SourceSpec,
    path: Path | None,
    prompts_only: bool,
    option: str,
) -> Iterator[RawRecord]:
    probe = list(itertools.islice(records, SCHEMA_PROBE_ROWS))
    _check_schema(
        source, path, [r for _, _, r in probe if isinstance(r, dict)], prompts_only, option
    )
    yield from probe
    yield from records


def _map(record: dict, source: SourceSpec, lenient: bool, prompts_only: bool) -> dict[str, Any]:
    """One record as canonical fields. ``lenient``: missing/null/empty texts read as ""."""
    layout = LAYOUTS.get(source.layout, "layout")
    fields = source.fields
    if source.layout == "alpaca" and (lenient or prompts_only):
        relaxed = {}
        for name in ("instruction", "output"):
            column = fields.get(name, name)
            optional = lenient or (prompts_only and name == "output")
            if optional and column_value(record, column) is None:
                relaxed[column] = ""
        if relaxed:
            record = {**record, **relaxed}
    try:
        mapped = layout(record, fields)
    except RowProblem as problem:
        if (lenient or prompts_only) and problem.reason.startswith("no_assistant_turn"):
            mapped = layout_without_answer(record, source)
        else:
            raise
    if not lenient:
        names = ("instruction",) if prompts_only else ("instruction", "output")
        for name in names:
            if not mapped[name].strip():
                raise RowProblem(f"empty:{name}", fields.get(name, name), "empty text")
    return mapped


def _row_stream(
    source: SourceSpec,
    path: Path | None,
    read: RowStream,
    *,
    seed: int,
    skip_bad_rows: bool,
    lenient: bool,
    prompts_only: bool,
    field_option: str,
) -> Iterator[tuple[dict[str, Any], int, str | None]]:
    """Mapped rows of one source as ``(fields, source_row, task)``, in input order; bad rows go to
    ``read.skipped``; :func:`rows_table` turns them into canonical tables.

    The one row loop behind :func:`read_rows` and :func:`iter_rows_batches`. After the last row it
    raises the end-of-read errors (strict bad rows, no rows at all), so a consumer that commits
    output only after exhausting the stream never half-writes."""
    stats = read.stats
    container = CONTAINERS.get(source.kind, "kind")
    LAYOUTS.get(source.layout, "layout")
    check_fields(source.layout, source.fields, field_option)
    # A file rewritten while it is read would give rows of two versions: compare its state now and
    # after the last row (see mbdata.io.inputfile).
    if path is not None and source.kind in ("jsonl", "json", "csv", "tsv", "parquet"):
        read.state = file_state(path)
    records = (
        container(path, source, seed=seed)
        if source.kind == "synthetic"
        else container(path, source)
    )
    bad = read.skipped
    extra_turns = 0
    seen = 0
    produced = 0
    for pos, source_row, record in _records_with_schema_check(
        records, source, path, prompts_only, field_option
    ):
        seen += 1
        try:
            if isinstance(record, RowProblem):
                raise record
            mapped = _map(record, source, lenient, prompts_only)
            extra_turns += mapped.pop("_extra_turns", 0)
        except RowProblem as problem:
            bad.append(
                BadRow(
                    source.name,
                    source_row,
                    pos if source.kind == "jsonl" else None,
                    problem.reason,
                    problem.field,
                    problem.detail,
                )
            )
            stats.drop(f"bad_row:{problem.reason}")
            continue
        produced += 1
        yield (
            mapped,
            source_row,
            record.get("task") if source.kind == "synthetic" else None,
        )
    if read.state is not None:
        check_unchanged(path, read.state)  # type: ignore[arg-type]  # set only with a path
    if bad and not (skip_bad_rows or lenient):
        named = "; ".join(b.describe() for b in bad[:BAD_ROWS_NAMED])
        more = f" (first {BAD_ROWS_NAMED} shown)" if len(bad) > BAD_ROWS_NAMED else ""
        count = "1 bad row" if len(bad) == 1 else f"{len(bad)} bad rows"
        raise InputError(
            f"{_where(source, path)}: {count}{more}: {named}; use --skip-bad-rows "
            "to drop them (each is listed in skipped.jsonl)"
        )
    stats.rows_in = seen
    if extra_turns:
        stats.info["extra_turns_dropped"] = extra_turns
    if not produced:
        detail = f" (all {seen} rows were bad; first: {bad[0].describe()})" if bad else ""
        raise InputError(f"{_where(source, path)}: no rows to read{detail}")


def rows_table(rows: list[tuple[dict[str, Any], int, str | None]], source: str) -> pa.Table:
    """Canonical table of mapped rows, column-wise: the same table as :func:`mbdata.schema.from_rows`
    of :func:`mbdata.schema.make_row` per row (ids by the vectorised :func:`~mbdata.schema.row_ids`)."""
    n = len(rows)
    if not n:
        return from_rows([])
    text = {
        name: pa.array([r[0][name] for r in rows], pa.string())
        for name in ("instruction", "input", "output", "system")
    }
    text["input"] = pc.fill_null(text["input"], "")
    nulls = pa.nulls(n, pa.string())
    empty_lists = pa.array([[]] * n, SCHEMA.field("tags").type)
    columns = {
        "id": pa.array(row_ids(text, n), pa.string()),
        **text,
        "source": pa.array([source] * n, pa.string()),
        "source_row": pa.array([r[1] for r in rows], pa.int64()),
        "split": pa.array(["train"] * n, pa.string()),
        "role": pa.array(["clean"] * n, pa.string()),
        "task": pa.array([r[2] for r in rows], pa.string()),
        "tags": empty_lists,
        "triggers": pa.array([[]] * n, SCHEMA.field("triggers").type),
    }
    return pa.Table.from_arrays(
        [columns.get(f.name, nulls).cast(f.type) for f in SCHEMA], schema=SCHEMA
    )


def read_rows(
    source: SourceSpec,
    path: Path | None,
    *,
    seed: int = 0,
    skip_bad_rows: bool = False,
    lenient: bool = False,
    prompts_only: bool = False,
    field_option: str = "--field",
) -> ReadResult:
    """Read one source into a canonical table (``split='train'``, ``role='clean'``).

    ``source_row`` is the 0-based index of the row in the input as read, skipped rows included.

    * strict (default): any bad row fails the read; the error counts every bad row and names the
      first :data:`BAD_ROWS_NAMED`.
    * ``skip_bad_rows``: bad rows are dropped and returned in ``skipped``.
    * ``lenient`` (audit, dedup): empty or missing texts are data and are kept as ""; only rows that
      cannot be parsed (invalid JSON, not an object, not a string) are skipped.
    * ``prompts_only`` (decontamination references): ``output`` may be missing or empty.

    A required column missing from the first rows is a schema error, raised once before any row
    error. :func:`iter_rows_batches` is the streaming form (same rows, same errors).

    The rows become Arrow a batch of :data:`BATCH_ROWS` at a time (a Python dict per row only for
    the batch being converted, not for the whole source: `mb build` of a 300k-row, 82 MB JSONL
    file peaked at 546 MiB with every row dict held, 343 MiB this way), then one contiguous
    table, equal to converting them at once (same shards, same content hash). Inside
    ``mb build`` (a current spill, :mod:`mbdata.io.spill`) each batch goes to the build's spill
    as it is read, and the table is never whole in memory."""
    read = iter_rows_batches(
        source,
        path,
        seed=seed,
        skip_bad_rows=skip_bad_rows,
        lenient=lenient,
        prompts_only=prompts_only,
        field_option=field_option,
        batch_rows=BATCH_ROWS,
    )
    if spill_active() is not None:  # mb build: the rows go to its spill as they are read
        table = spill_batches(read.batches, SCHEMA)
        if not table.num_rows:
            table = rows_table([], source.name)
        return ReadResult(table, read.skipped, read.stats, read.state)
    batches = list(read.batches)
    table = (
        pa.Table.from_batches(batches).combine_chunks() if batches else rows_table([], source.name)
    )
    return ReadResult(table, read.skipped, read.stats, read.state)


def _batched(rows: Iterator, source: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    while chunk := list(itertools.islice(rows, batch_rows)):
        yield from rows_table(chunk, source).to_batches(max_chunksize=batch_rows)


def iter_rows_batches(
    source: SourceSpec,
    path: Path | None,
    *,
    seed: int = 0,
    skip_bad_rows: bool = False,
    lenient: bool = False,
    prompts_only: bool = False,
    field_option: str = "--field",
    batch_rows: int = BATCH_ROWS,
) -> RowStream:
    """:func:`read_rows` as a stream of canonical-schema record batches of ``batch_rows`` rows
    (the last one shorter).

    Contract (the same as :func:`read_rows`, row for row):

    * the rows, their order, ``id`` and ``source_row`` (0-based index in the input as read, skipped
      rows included) are exactly those of :func:`read_rows`; concatenating the batches gives its
      table;
    * bad rows are dropped from the batches and appended to ``RowStream.skipped`` as they are met;
    * a missing file or required column is raised by the first ``next()``; the strict bad-row
      error and the "no rows to read" error are raised when the input ends (in place of the last,
      partial batch), with the same text: commit output only once the stream is exhausted (atomic
      writers do);
    * memory holds one batch of Python row dicts at a time. JSONL and the synthetic corpus stream;
      JSON, Parquet, CSV and ``save_to_disk`` folders are read whole by their container first (their
      formats or libraries do not stream here) and then sliced into batches.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    read = RowStream(iter(()), [], StageStats(name=f"read/{source.name}"), False)
    rows = _row_stream(
        source,
        path,
        read,
        seed=seed,
        skip_bad_rows=skip_bad_rows,
        lenient=lenient,
        prompts_only=prompts_only,
        field_option=field_option,
    )
    read.batches = _batched(rows, source.name, batch_rows)
    return read
