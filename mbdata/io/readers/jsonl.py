"""The ``jsonl`` container: one JSON object per line, streamed line by line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import InputError
from ...core.limits import MAX_JSON_DEPTH, json_too_deep
from ..inputfile import bounded_lines, open_regular
from .jsontext import SURROGATE_ESCAPE, json_value_error, not_unicode
from .records import RawRecord, RowProblem
from .registry import CONTAINERS

if TYPE_CHECKING:
    from .source import SourceSpec


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
                yield lineno, row, RowProblem("invalid_json", "-", json_value_error(exc))
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
            elif SURROGATE_ESCAPE.search(raw):  # (a regex search: cheaper than `in` here)
                record = not_unicode(record) or record
            yield lineno, row, record
            row += 1
