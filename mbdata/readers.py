"""Readers: every supported corpus format into the canonical schema.

A reader turns one :class:`~mbdata.recipe.SourceSpec` into canonical rows. Two independent choices
describe a source: the *container* (``kind``: json, jsonl, parquet, csv, hf_disk, hub, synthetic) and
the *layout* of a row (``alpaca``: instruction/input/output; ``sharegpt``: ``conversations`` of
from/value turns; ``messages``: OpenAI-style role/content turns). Containers yield raw records; a layout
maps a record to canonical fields, with per-source column renames from ``fields:``.

Bad input raises :class:`~mbdata.errors.InputError` naming the file, the row (1-based line for JSONL,
1-based row otherwise) and the field. With ``skip_bad_rows`` the row is dropped instead and counted
under a reason such as ``bad_row:missing:output`` in the stage statistics.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa

from .errors import InputError
from .limits import MAX_JSON_DEPTH, json_too_deep
from .pipeline import StageStats
from .recipe import LAYOUT_FIELDS, SourceSpec
from .registry import Registry
from .schema import from_rows, make_row

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
        raise RowProblem(f"not_string:{field}", column,
                         f"expected a string, got {type(value).__name__}")
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
        raise RowProblem(f"not_list:{column}", column,
                         f"expected a list of turns, got {type(turns).__name__}")
    system = prompt = answer = None
    extra_turns = 0
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get(role_key), str) \
                or not isinstance(turn.get(text_key), str):
            raise RowProblem(f"bad_turn:{column}", f"{column}[{i}]",
                             f"each turn needs string '{role_key}' and '{text_key}'")
        role = turn[role_key].lower()
        if role in _SYSTEM_ROLES and prompt is None:
            system = turn[text_key]
        elif role in _USER_ROLES and prompt is None:
            prompt = turn[text_key]
        elif role in _ASSISTANT_ROLES and prompt is not None and answer is None:
            answer = turn[text_key]
        elif role not in _SYSTEM_ROLES | _USER_ROLES | _ASSISTANT_ROLES:
            raise RowProblem(f"bad_role:{column}", f"{column}[{i}].{role_key}",
                             f"unknown role {turn[role_key]!r}")
        else:
            extra_turns += 1
    if prompt is None:
        raise RowProblem(f"no_user_turn:{column}", column, "no user turn")
    if answer is None:
        raise RowProblem(f"no_assistant_turn:{column}", column, "no assistant turn after the user")
    return {"instruction": prompt, "input": "", "output": answer, "system": system,
            "_extra_turns": extra_turns}


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
def _check_file(path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if not path.exists():
        raise InputError(f"{path}: file not found")


@CONTAINERS.add("jsonl")
def read_jsonl(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """One JSON object per line; blank lines are skipped; errors name the 1-based line."""
    _check_file(path)
    row = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, row, RowProblem("invalid_utf8", "-",
                                              f"not valid UTF-8 (byte {exc.start} of the line)")
                row += 1
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield lineno, row, RowProblem("invalid_json", "-", f"invalid JSON: {exc.msg} "
                                              f"(column {exc.colno})")
                row += 1
                continue
            except RecursionError:
                record = None
            if record is None or json_too_deep(record):
                yield lineno, row, RowProblem("too_deep", "-", "JSON nested more than "
                                              f"{MAX_JSON_DEPTH} levels deep")
                row += 1
                continue
            if not isinstance(record, dict):
                record = RowProblem("not_object", "-", f"expected a JSON object, got "
                                    f"{type(record).__name__}")
            yield lineno, row, record
            row += 1


@CONTAINERS.add("json")
def read_json(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """A JSON array of objects (or an object holding one list, e.g. ``{"data": [...]}``)."""
    _check_file(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from None
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            raise InputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); this looks like JSON "
                             "Lines: use kind: jsonl") from None
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if isinstance(parsed, dict):
        lists = [v for v in parsed.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a JSON array of rows (or an object with one list)")
        parsed = lists[0]
    if not isinstance(parsed, list):
        raise InputError(f"{path}: expected a JSON array of rows, got {type(parsed).__name__}")
    for i, record in enumerate(parsed):
        if json_too_deep(record):
            record = RowProblem("too_deep", "-", f"JSON nested more than {MAX_JSON_DEPTH} levels "
                                "deep")
        elif not isinstance(record, dict):
            record = RowProblem("not_object", "-", f"expected an object, got {type(record).__name__}")
        yield i + 1, i, record


def _arrow_records(table: pa.Table) -> Iterator[RawRecord]:
    for i, record in enumerate(table.to_pylist()):
        yield i + 1, i, record


@CONTAINERS.add("parquet")
def read_parquet(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    _check_file(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}") from None
    yield from _arrow_records(table)


@CONTAINERS.add("csv")
def read_csv(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """CSV with a header row; every column is read as text (no type guessing)."""
    import pyarrow.csv as pcsv

    _check_file(path)
    try:
        with pcsv.open_csv(path) as reader:
            names = reader.schema.names
        table = pcsv.read_csv(
            path,
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        # pyarrow quotes the offending line after "got N:"; never echo the file's content
        message = re.sub(r"(got \d+)\s*:.*$", r"\1", str(exc).splitlines()[0])[:200]
        raise InputError(f"{path}: not a readable CSV file: {message}") from None
    yield from _arrow_records(table)


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
        ds = datasets.load_dataset(repo, source.subset, split=source.split,
                                   revision=source.revision)
    except Exception as exc:  # noqa: BLE001 - any failure here is a user-facing "cannot load"
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"hub dataset {repo!r}: cannot load ({type(exc).__name__}: {reason}); "
                         "if you are offline, download it elsewhere and use kind: hf_disk or a "
                         "local file") from None
    yield from _arrow_records(ds.data.table)


@CONTAINERS.add("synthetic")
def read_synthetic(path: Path | None, source: SourceSpec, seed: int = 0) -> Iterator[RawRecord]:
    """The embedded, seeded corpus of verifiable tasks (see :mod:`mbdata.synthetic`)."""
    from .synthetic import generate

    for i, record in enumerate(generate(source.count or 0, seed, source.tasks)):
        yield i + 1, i, record


# ------------------------------------------------------------------------------------------ driver
def _location(source: SourceSpec, path: Path | None, pos: int) -> str:
    if source.kind == "jsonl":
        return f"{path}:{pos}"
    if source.kind in ("synthetic",):
        return f"source {source.name!r}: row {pos}"
    if source.kind == "hub":
        return f"hub dataset {source.path!r}: row {pos}"
    return f"{path}: row {pos}"


def read_source(source: SourceSpec, path: Path | None, *, seed: int = 0,
                skip_bad_rows: bool = False) -> tuple[pa.Table, StageStats]:
    """Read one source into a canonical table (``split='train'``, ``role='clean'``)."""
    stats = StageStats(name=f"read/{source.name}")
    container = CONTAINERS.get(source.kind, "kind")
    layout = LAYOUTS.get(source.layout, "layout")
    records = (container(path, source, seed=seed) if source.kind == "synthetic"
               else container(path, source))
    rows = []
    extra_turns = 0
    seen = 0
    for pos, source_row, record in records:
        seen += 1
        try:
            if isinstance(record, RowProblem):
                raise record
            mapped = layout(record, source.fields)
            extra_turns += mapped.pop("_extra_turns", 0)
            for name in ("instruction", "output"):
                if not mapped[name].strip():
                    raise RowProblem(f"empty:{name}", source.fields.get(name, name), "empty text")
        except RowProblem as problem:
            if not skip_bad_rows:
                field = "" if problem.field == "-" else f": field '{problem.field}'"
                raise InputError(f"{_location(source, path, pos)}{field}: {problem.detail} "
                                 "(use --skip-bad-rows to drop such rows)") from None
            stats.drop(f"bad_row:{problem.reason}")
            continue
        rows.append(make_row(
            instruction=mapped["instruction"], input=mapped["input"], output=mapped["output"],
            system=mapped["system"], source=source.name, source_row=source_row,
            task=record.get("task") if source.kind == "synthetic" else None,
        ))
    stats.rows_in = seen
    if extra_turns:
        stats.info["extra_turns_dropped"] = extra_turns
    if not rows:
        where = source.path if source.kind != "synthetic" else f"source {source.name!r}"
        detail = " (every row was bad)" if seen else ""
        raise InputError(f"{where}: no rows to read{detail}")
    return from_rows(rows), stats


_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
               ".csv": "csv"}


def detect_kind(path: Path) -> str:
    """Guess the container from a path: extension, a build folder, or a save_to_disk folder."""
    if path.is_dir():
        if (path / "manifest.json").exists() and (path / "data").is_dir():
            return "build"
        return "hf_disk"
    kind = _EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: cannot tell the format from the extension; use one of "
                         + ", ".join(sorted(_EXTENSIONS)) + " or pass the kind explicitly")
    return kind


def read_any(path: str | Path, *, kind: str | None = None, layout: str = "alpaca",
             fields: dict[str, str] | None = None, skip_bad_rows: bool = False,
             split: str | None = None) -> pa.Table:
    """Read a file or folder into a canonical table, guessing the kind from the path.

    A build folder yields all its splits (or ``split``) with rows as stored; any other input yields
    rows with ``source`` = the file stem and ``source_row`` = 0-based position in the input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: not found")
    kind = kind or detect_kind(path)
    if kind == "build":
        from .buildio import verify_shards

        build = verify_shards(path)
        if split is not None and split not in build.splits:
            raise InputError(f"{path}: the build has no split {split!r}; splits: "
                             + ", ".join(build.splits))
        splits = [split] if split else build.splits
        return pa.concat_tables([build.table(s) for s in splits])
    source = SourceSpec(name=path.stem or "input", kind=kind, path=str(path), layout=layout,
                        fields=dict(fields or {}), split=split or "train")
    table, _ = read_source(source, path, skip_bad_rows=skip_bad_rows)
    return table
