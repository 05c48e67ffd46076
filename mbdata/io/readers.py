"""Readers: every supported corpus format into the canonical schema.

A reader turns one :class:`~mbdata.recipe.SourceSpec` into canonical rows. Two independent choices
describe a source: the *container* (``kind``: json, jsonl, parquet, csv, tsv, hf_disk, hub,
synthetic) and the *layout* of a row (``alpaca``: instruction/input/output; ``sharegpt``: ``conversations`` of
from/value turns; ``messages``: OpenAI-style role/content turns). Containers yield raw records; a layout
maps a record to canonical fields, with per-source column renames from ``fields:``.

Rows are named everywhere by ``source_row``, their 0-based index in the input as read (skipped rows
included; blank JSONL lines are not rows); JSONL errors also give the 1-based line. A required column
missing from the first rows is one schema error listing the columns found. Bad rows raise
:class:`~mbdata.core.errors.InputError` counting all of them and naming the first five; with
``skip_bad_rows`` they are dropped, counted under a reason such as ``bad_row:missing:output`` and
returned as :class:`BadRow` records. ``lenient`` reads (audit, dedup) keep empty texts as data.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import InputError
from ..core.limits import MAX_JSON_DEPTH, json_too_deep
from ..core.registry import Registry
from ..pipeline import StageStats
from ..recipe import LAYOUT_FIELDS, SourceSpec
from .inputfile import (
    FileState,
    bounded_lines,
    check_regular,
    check_size,
    check_unchanged,
    file_state,
    open_regular,
    read_capped,
)
from .schema import SCHEMA, from_rows, row_ids

# A raw record: (1-based position used in messages, 0-based source_row, mapping or error text).
RawRecord = tuple[int, int, Any]

CONTAINERS: Registry[Callable[..., Iterator[RawRecord]]] = Registry("source kind")
LAYOUTS: Registry[Callable[[dict, dict[str, str]], dict[str, Any]]] = Registry("layout")

_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "model", "bot", "chatgpt"}
_SYSTEM_ROLES = {"system"}


class RowProblem(Exception):
    """A record cannot be mapped; ``reason`` is the stats key, ``field`` the offending field."""

    def __init__(self, reason: str, field: str, detail: str):
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


# ---------------------------------------------------------------------------------------- layouts
def _text(record: dict, column: str, field: str, required: bool) -> str | None:
    if column not in record or record[column] is None:
        if required:
            raise RowProblem(f"missing:{field}", column, "missing")
        return None
    value = record[column]
    if not isinstance(value, str):
        raise RowProblem(
            f"not_string:{field}", column, f"expected a string, got {type(value).__name__}"
        )
    return value


@LAYOUTS.add("alpaca")
def alpaca_layout(record: dict, fields: dict[str, str]) -> dict[str, Any]:
    """``{"instruction", "input"?, "output", "system"?}`` with optional column renames."""
    col = {name: fields.get(name, name) for name in LAYOUT_FIELDS["alpaca"]}
    return {
        "instruction": _text(record, col["instruction"], "instruction", True),
        "input": _text(record, col["input"], "input", False) or "",
        "output": _text(record, col["output"], "output", True),
        "system": _text(record, col["system"], "system", False),
    }


def _turns(record: dict, column: str, role_key: str, text_key: str) -> dict[str, Any]:
    turns = record.get(column)
    if turns is None:
        raise RowProblem(f"missing:{column}", column, "missing")
    if not isinstance(turns, list):
        raise RowProblem(
            f"not_list:{column}", column, f"expected a list of turns, got {type(turns).__name__}"
        )
    system = prompt = answer = None
    extra_turns = 0
    for i, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get(role_key), str)
            or not isinstance(turn.get(text_key), str)
        ):
            raise RowProblem(
                f"bad_turn:{column}",
                f"{column}[{i}]",
                f"each turn needs string '{role_key}' and '{text_key}'",
            )
        role = turn[role_key].lower()
        if role in _SYSTEM_ROLES and prompt is None:
            system = turn[text_key]
        elif role in _USER_ROLES and prompt is None:
            prompt = turn[text_key]
        elif role in _ASSISTANT_ROLES and prompt is not None and answer is None:
            answer = turn[text_key]
        elif role not in _SYSTEM_ROLES | _USER_ROLES | _ASSISTANT_ROLES:
            raise RowProblem(
                f"bad_role:{column}",
                f"{column}[{i}].{role_key}",
                f"unknown role {turn[role_key]!r}",
            )
        else:
            extra_turns += 1
    if prompt is None:
        raise RowProblem(f"no_user_turn:{column}", column, "no user turn")
    if answer is None:
        raise RowProblem(f"no_assistant_turn:{column}", column, "no assistant turn after the user")
    return {
        "instruction": prompt,
        "input": "",
        "output": answer,
        "system": system,
        "_extra_turns": extra_turns,
    }


@LAYOUTS.add("sharegpt")
def sharegpt_layout(record: dict, fields: dict[str, str]) -> dict[str, Any]:
    """``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}``.

    The first user turn and the first assistant turn after it make the row; later turns are counted
    (``info.extra_turns_dropped``) because the canonical row is single-turn."""
    row = _turns(record, fields.get("conversations", "conversations"), "from", "value")
    if "system" in fields:
        row["system"] = _text(record, fields["system"], "system", False) or row["system"]
    return row


@LAYOUTS.add("messages")
def messages_layout(record: dict, fields: dict[str, str]) -> dict[str, Any]:
    """OpenAI-style ``{"messages": [{"role": ..., "content": ...}, ...]}`` (first exchange kept)."""
    return _turns(record, fields.get("messages", "messages"), "role", "content")


# ------------------------------------------------------------------------------------- containers
def _check_file(path: Path, whole: bool = False) -> None:
    """A regular file (``whole``: one a reader loads whole, so within the input size cap)."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if whole:
        check_size(path)
    else:
        check_regular(path)


# A JSON escape of a UTF-16 surrogate: json.loads joins a valid pair, a lone one stays in the str
# and cannot be encoded as UTF-8 later (the rare lines that match are checked value by value).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]")


def _not_unicode(record: Any) -> RowProblem | None:
    """The problem of a parsed record holding a lone surrogate (not valid Unicode), if any."""
    items = record.items() if isinstance(record, dict) else [("-", record)]
    for key, value in items:
        try:
            json.dumps([key, value], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            field = key if isinstance(key, str) and key.isprintable() else "-"
            return RowProblem(
                "invalid_unicode",
                field,
                "a lone surrogate escape such as \\ud800 (not valid Unicode text)",
            )
    return None


def _json_value_error(exc: ValueError) -> str:
    """A ValueError of json.loads that is not a syntax error: an integer past Python's
    4,300-digit conversion limit."""
    if "digits" in str(exc):
        return "an integer with more than 4,300 digits"
    return str(exc).splitlines()[0][:200]


def _refuse_json_array(path: Path, first_line: str) -> None:
    """A JSONL read whose first line opens a JSON array: the file is JSON, say so once."""
    try:
        parsed = json.loads(first_line)
    except json.JSONDecodeError:
        parsed = None
    except (RecursionError, ValueError):  # too deep, a huge integer: the row loop reports it
        return
    if parsed is None or (isinstance(parsed, list) and any(isinstance(x, dict) for x in parsed)):
        raise InputError(
            f"{path}: this is a JSON array, not JSON Lines (one object per line); "
            "read it as JSON: `kind: json` in a recipe, --kind json on the command "
            "line, or a .json extension"
        )


@CONTAINERS.add("jsonl")
def read_jsonl(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """One JSON object per line; blank lines are skipped; errors name the 1-based line."""
    row = 0
    with open_regular(path) as fh:
        for lineno, raw in enumerate(bounded_lines(fh, path), start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (
                    lineno,
                    row,
                    RowProblem(
                        "invalid_utf8", "-", f"not valid UTF-8 (byte {exc.start} of the line)"
                    ),
                )
                row += 1
                continue
            if row == 0 and text.lstrip().startswith("["):
                _refuse_json_array(path, text)
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield (
                    lineno,
                    row,
                    RowProblem(
                        "invalid_json", "-", f"invalid JSON: {exc.msg} (column {exc.colno})"
                    ),
                )
                row += 1
                continue
            except RecursionError:
                record = None
            except ValueError as exc:
                yield lineno, row, RowProblem("invalid_json", "-", _json_value_error(exc))
                row += 1
                continue
            # depth <= number of opening brackets: most lines need no walk of the parsed value
            if record is None or (
                raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH and json_too_deep(record)
            ):
                yield (
                    lineno,
                    row,
                    RowProblem(
                        "too_deep", "-", f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
                    ),
                )
                row += 1
                continue
            if not isinstance(record, dict):
                record = RowProblem(
                    "not_object", "-", f"expected a JSON object, got {type(record).__name__}"
                )
            elif _SURROGATE_ESCAPE.search(raw):  # (a regex search: cheaper than `in` here)
                record = _not_unicode(record) or record
            yield lineno, row, record
            row += 1


@CONTAINERS.add("json")
def read_json(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """A JSON array of objects (or an object holding one list, e.g. ``{"data": [...]}``)."""
    with open_regular(path) as fh:
        data = read_capped(fh, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from None
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            raise InputError(
                f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); this looks like JSON "
                "Lines: use kind: jsonl"
            ) from None
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise InputError(f"{path}: invalid JSON: {_json_value_error(exc)}") from None
    check_unicode = _SURROGATE_ESCAPE.search(data) is not None
    if isinstance(parsed, dict):
        lists = [v for v in parsed.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a JSON array of rows (or an object with one list)")
        parsed = lists[0]
    if not isinstance(parsed, list):
        raise InputError(f"{path}: expected a JSON array of rows, got {type(parsed).__name__}")
    for i, record in enumerate(parsed):
        if json_too_deep(record):
            record = RowProblem(
                "too_deep", "-", f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
            )
        elif not isinstance(record, dict):
            record = RowProblem(
                "not_object", "-", f"expected an object, got {type(record).__name__}"
            )
        elif check_unicode:
            record = _not_unicode(record) or record
        yield i + 1, i, record


def _arrow_records(table: pa.Table) -> Iterator[RawRecord]:
    for i, record in enumerate(table.to_pylist()):
        yield i + 1, i, record


@CONTAINERS.add("parquet")
def read_parquet(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    _check_file(path, whole=True)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}"
        ) from None
    yield from _arrow_records(table)


def _read_delimited(path: Path, delimiter: str, quoted: bool) -> pa.Table:
    """A delimited text file with a header row, every column as text (no type guessing). The
    bytes come through :func:`~mbdata.io.inputfile.open_regular` and the input size cap, so a FIFO
    or an oversized file is refused like any other input."""
    import io

    import pyarrow.csv as pcsv

    with open_regular(path) as fh:
        data = read_capped(fh, path)
    parse = pcsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoted else False,
        newlines_in_values=quoted,
    )
    try:
        with pcsv.open_csv(io.BytesIO(data), parse_options=parse) as reader:
            names = reader.schema.names
        return pcsv.read_csv(
            io.BytesIO(data),
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        # pyarrow quotes the offending line after "got N:"; never echo the file's content
        message = re.sub(r"(got \d+)\s*:.*$", r"\1", str(exc).splitlines()[0])[:200]
        what = "TSV" if delimiter == "\t" and not quoted else "CSV"
        raise InputError(
            f"{path}: not a readable {what} file: {message}{_delimiter_hint(data, delimiter)}"
        ) from None


def _delimiter_hint(data: bytes, delimiter: str) -> str:
    """When a parse fails and the header is split by tabs rather than ``delimiter``, say which
    option reads it (the usual cause of "Expected 1 columns, got 4")."""
    header = data.split(b"\n", 1)[0]
    if delimiter != "\t" and b"\t" in header and delimiter.encode() not in header:
        return (
            "; the header is tab-separated: read it as TSV (--kind tsv on the command line, "
            "`kind: tsv` in a recipe, or a .tsv extension)"
        )
    return ""


@CONTAINERS.add("csv")
def read_csv(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """CSV with a header row, RFC 4180 quoting; every column is read as text (no type guessing).
    ``delimiter`` (one character, default ``,``) reads semicolon- or tab-separated files whose
    fields are quoted."""
    _check_file(path, whole=True)
    yield from _arrow_records(_read_delimited(path, source.delimiter or ",", quoted=True))


@CONTAINERS.add("tsv")
def read_tsv(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """Tab-separated values with a header row (IANA text/tab-separated-values): fields end at a
    tab, rows at a newline, and quotes are text (SST-2, GLUE and most TSV exports write raw
    sentences with quotes in them). A TSV whose fields are quoted, CSV-style, is
    ``kind: csv`` with ``delimiter: "\\t"``."""
    _check_file(path, whole=True)
    yield from _arrow_records(_read_delimited(path, "\t", quoted=False))


def _dataset_split(obj: Any, path: str, split: str) -> Any:
    import datasets

    if isinstance(obj, (datasets.DatasetDict, dict)):
        if split not in obj:
            raise InputError(f"{path}: no split {split!r}; splits: {', '.join(obj)}")
        return obj[split]
    return obj


@CONTAINERS.add("hf_disk")
def read_hf_disk(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """A folder written by ``datasets.Dataset(Dict).save_to_disk`` (Arrow files, no pickle)."""
    import datasets

    if not path.is_dir():
        raise InputError(f"{path}: expected a folder written by save_to_disk")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: not a save_to_disk folder: {exc}") from None
    ds = _dataset_split(ds, str(path), source.split)
    yield from _arrow_records(ds.data.table)


@CONTAINERS.add("hub")
def read_hub(path: Path | str, source: SourceSpec) -> Iterator[RawRecord]:
    """A Hugging Face Hub dataset id through ``datasets.load_dataset`` (needs network or a cache)."""
    import datasets

    repo = source.path
    try:
        ds = datasets.load_dataset(
            repo, source.subset, split=source.split, revision=source.revision
        )
    except Exception as exc:  # noqa: BLE001 - any failure here is a user-facing "cannot load"
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(
            f"hub dataset {repo!r}: cannot load ({type(exc).__name__}: {reason}); "
            "if you are offline, download it elsewhere and use kind: hf_disk or a "
            "local file"
        ) from None
    yield from _arrow_records(ds.data.table)


@CONTAINERS.add("synthetic")
def read_synthetic(path: Path | None, source: SourceSpec, seed: int = 0) -> Iterator[RawRecord]:
    """The embedded, seeded corpus of verifiable tasks (see :mod:`mbdata.synthetic`)."""
    from ..synthetic import generate

    for i, record in enumerate(generate(source.count or 0, seed, source.tasks)):
        yield i + 1, i, record


# ------------------------------------------------------------------------------------------ driver
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
        if column in found:
            continue
        missing.append(f"{column!r}" + ("" if column == name else f" ({name})"))
        same = [c for c in found if isinstance(c, str) and c.lower() == column.lower()]
        mapping[name] = same[0] if same else None
    if not missing:
        return
    if source.kind == "csv" and any(isinstance(c, str) and "\t" in c for c in found):
        # one column named "instruction\tinput\toutput": a TSV read as CSV
        raise InputError(
            f"{_where(source, path)}: the header is one column holding tabs, so the file is "
            "tab-separated: read it as TSV (--kind tsv on the command line, `kind: tsv` in a "
            'recipe, or a .tsv extension; quoted fields: `kind: csv` with `delimiter: "\\t"`)'
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
            if optional and record.get(column) is None:
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


def layout_without_answer(record: dict, source: SourceSpec) -> dict[str, Any]:
    """A chat record whose first user turn has no answer (a prompts-only reference)."""
    key = "conversations" if source.layout == "sharegpt" else "messages"
    role_key, text_key = ("from", "value") if source.layout == "sharegpt" else ("role", "content")
    turns = list(record.get(source.fields.get(key, key)) or [])
    padded = {
        **record,
        source.fields.get(key, key): turns + [{role_key: "assistant", text_key: ""}],
    }
    return LAYOUTS.get(source.layout, "layout")(padded, source.fields)


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
    error. :func:`iter_rows_batches` is the streaming form (same rows, same errors)."""
    read = RowStream(iter(()), [], StageStats(name=f"read/{source.name}"), False)
    rows = list(
        _row_stream(
            source,
            path,
            read,
            seed=seed,
            skip_bad_rows=skip_bad_rows,
            lenient=lenient,
            prompts_only=prompts_only,
            field_option=field_option,
        )
    )
    return ReadResult(rows_table(rows, source.name), read.skipped, read.stats, read.state)


def read_source(
    source: SourceSpec, path: Path | None, *, seed: int = 0, skip_bad_rows: bool = False
) -> tuple[pa.Table, StageStats]:
    """:func:`read_rows` returning ``(table, stats)`` (the bad rows are counted in the stats)."""
    result = read_rows(source, path, seed=seed, skip_bad_rows=skip_bad_rows)
    return result.table, result.stats


_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}


# Kinds that are not read from a local file (the CLI's --kind offers the others, and "build").
_NOT_FILES = ("hub", "synthetic")


def file_kinds() -> Registry[str]:
    """The kinds a local path can be read as: the container registry's file kinds and ``build``,
    as a registry (built on each call, so a plugin container is included) whose names and "did
    you mean" are those of the CLI's ``--kind``."""
    kinds: Registry[str] = Registry("input kind")
    for name in [n for n in CONTAINERS.names() if n not in _NOT_FILES] + ["build"]:
        kinds.register(name, name)
    return kinds


def detect_kind(path: Path) -> str:
    """Guess the container from a path: extension, a build folder, or a save_to_disk folder."""
    if path.is_dir():
        if (path / "manifest.json").exists() and (path / "data").is_dir():
            return "build"
        return "hf_disk"
    kind = _EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: cannot tell the format from the extension; use one of "
            + ", ".join(sorted(_EXTENSIONS))
            + ", or pass the kind: --kind NAME on the command line, kind='NAME' in Python "
            + "(NAME one of "
            + ", ".join(n for n in CONTAINERS.names() if n not in _NOT_FILES)
            + ")"
        )
    return kind


def _open_input(
    path: Path,
    kind: str | None,
    layout: str,
    fields: dict[str, str] | None,
    split: str | None,
    field_option: str,
) -> tuple[Any, list[str]] | SourceSpec:
    """What :func:`read_input` and :func:`iter_input_batches` both start with: a verified build
    folder and the splits to read, or the :class:`SourceSpec` of a file (its fields checked)."""
    if not path.exists():
        raise InputError(f"{path}: not found")
    kind = kind or detect_kind(path)
    if kind == "build":
        from .buildio import verify_shards

        build = verify_shards(path)
        if split is not None and split not in build.splits:
            raise InputError(
                f"{path}: the build has no split {split!r}; splits: " + ", ".join(build.splits)
            )
        return build, [split] if split else list(build.splits)
    check_fields(layout, dict(fields or {}), field_option)
    return SourceSpec(
        name=path.stem or "input",
        kind=kind,
        path=str(path),
        layout=layout,
        fields=dict(fields or {}),
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
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
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
    ``skip_bad_rows``, ``lenient`` and ``prompts_only``; ``field_option`` is the option named in
    column-mapping hints (``--reference-field`` for a decontamination reference).
    """
    path = Path(path)
    source = _open_input(path, kind, layout, fields, split, field_option)
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
        field_option=field_option,
    )
    rows = result.table.column("source_row").to_numpy().astype(np.int64)
    return InputRead(result.table, result.skipped, rows, False, result.state)


def read_any(
    path: str | Path,
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
    skip_bad_rows: bool = False,
    split: str | None = None,
    lenient: bool = False,
    prompts_only: bool = False,
) -> pa.Table:
    """:func:`read_input`'s table."""
    return read_input(
        path,
        kind=kind,
        layout=layout,
        fields=fields,
        skip_bad_rows=skip_bad_rows,
        split=split,
        lenient=lenient,
        prompts_only=prompts_only,
    ).table


# -------------------------------------------------------------------------------------- streaming
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


def _build_batches(
    path: Path, splits: list[str], build, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    from .buildio import read_ipc

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
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
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
    source = _open_input(path, kind, layout, fields, split, field_option)
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
        field_option=field_option,
        batch_rows=batch_rows,
    )


def batch_row_numbers(stream: RowStream, batch: pa.RecordBatch, start: int) -> np.ndarray:
    """The numbers naming ``batch``'s rows in row-level outputs, as :func:`read_input`'s
    ``row_numbers``: ``source_row`` for a file, the position (``start`` = rows before this batch)
    for a build folder."""
    if stream.is_build:
        return np.arange(start, start + batch.num_rows, dtype=np.int64)
    return batch.column("source_row").to_numpy(zero_copy_only=False).astype(np.int64)
