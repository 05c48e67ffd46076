"""The ``parquet`` container, read whole through pyarrow."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from ...core.errors import InputError
from .records import RawRecord, arrow_records, check_file
from .registry import CONTAINERS

if TYPE_CHECKING:
    from .source import SourceSpec


@CONTAINERS.add("parquet")
def read_parquet(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    check_file(path, whole=True)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{path}: not a readable Parquet file: {str(exc).splitlines()[0]}"
        ) from None
    yield from arrow_records(table)
