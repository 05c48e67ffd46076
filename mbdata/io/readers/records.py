"""What every container yields and every layout reads: a raw record, the problem of a record that
cannot be mapped, a mapped column's value (``turns[0]``: an element of a list column), and the
small helpers containers share (a file check, Arrow rows as records)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from ...core.errors import InputError
from ..inputfile import check_regular, check_size

# A raw record: (1-based position used in messages, 0-based source_row, mapping or error text).
RawRecord = tuple[int, int, Any]


class RowProblem(Exception):
    """A record cannot be mapped; ``reason`` is the stats key, ``field`` the offending field."""

    def __init__(self, reason: str, field: str, detail: str):
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


# A mapped column naming one element of a list column: ``turns[0]``, ``turns[-1]``.
_ELEMENT = re.compile(r"^(?P<column>.+)\[(?P<index>-?\d+)\]$")


def column_root(column: str) -> str:
    """The column a mapping reads from: ``turns`` for ``turns[0]``, else ``column`` itself."""
    match = _ELEMENT.match(column)
    return match["column"] if match else column


def column_value(record: dict, column: str) -> Any:
    """``record[column]`` (None when absent). A column such as ``turns[0]`` that the record does
    not have by that name is element 0 of its list column ``turns`` (None past the end), so a
    reference whose prompts are lists (MT-bench's ``turns``) maps ``instruction=turns[0]``."""
    if column in record:
        return record[column]
    match = _ELEMENT.match(column)
    if match is None:
        return None
    values = record.get(match["column"])
    if values is None:
        return None
    if not isinstance(values, list):
        raise RowProblem(
            f"not_list:{match['column']}",
            column,
            f"{match['column']!r} is a {type(values).__name__}, not a list to take an element of",
        )
    index = int(match["index"])
    return values[index] if -len(values) <= index < len(values) else None


def text_field(record: dict, column: str, field: str, required: bool) -> str | None:
    """The text of ``field`` in ``column`` (see :func:`column_value`); None when absent and not
    ``required``."""
    value = column_value(record, column)
    if value is None:
        if required:
            raise RowProblem(f"missing:{field}", column, "missing")
        return None
    if not isinstance(value, str):
        hint = ""
        if isinstance(value, list):
            # MT-bench's `turns`: the error used to be a dead end (issue 24)
            hint = (
                f"; to read one element of the list map {field}={column}[0], or read "
                "role-tagged turns with the messages or sharegpt layout"
            )
        raise RowProblem(
            f"not_string:{field}", column, f"expected a string, got {type(value).__name__}{hint}"
        )
    return value


def check_file(path: Path, whole: bool = False) -> None:
    """A regular file (``whole``: one a reader loads whole, so within the input size cap)."""
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a file")
    if whole:
        check_size(path)
    else:
        check_regular(path)


def arrow_records(table: pa.Table) -> Iterator[RawRecord]:
    for i, record in enumerate(table.to_pylist()):
        yield i + 1, i, record
