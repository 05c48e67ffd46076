"""What every container yields and every layout reads: a raw record, the problem of a record that
cannot be mapped, and the small helpers containers share (a file check, Arrow rows as records)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ...core.errors import InputError
from ..inputfile import (
    check_regular,
    check_size,
)

if TYPE_CHECKING:
    pass


# A raw record: (1-based position used in messages, 0-based source_row, mapping or error text).
RawRecord = tuple[int, int, Any]


class RowProblem(Exception):
    """A record cannot be mapped; ``reason`` is the stats key, ``field`` the offending field."""

    def __init__(self, reason: str, field: str, detail: str):
        super().__init__(detail)
        self.reason, self.field, self.detail = reason, field, detail


def text_field(record: dict, column: str, field: str, required: bool) -> str | None:
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
