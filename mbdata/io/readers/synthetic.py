"""The ``synthetic`` container: the embedded, seeded corpus of verifiable tasks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .records import RawRecord
from .registry import CONTAINERS

if TYPE_CHECKING:
    from .source import SourceSpec


@CONTAINERS.add("synthetic")
def read_synthetic(path: Path | None, source: SourceSpec, seed: int = 0) -> Iterator[RawRecord]:
    """The embedded, seeded corpus of verifiable tasks (see :mod:`mbdata.synthetic`)."""
    from ...synthetic import generate

    for i, record in enumerate(generate(source.count or 0, seed, source.tasks)):
        yield i + 1, i, record
