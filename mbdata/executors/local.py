"""The ``local`` executor: the step runs in this process, item after item (the reference)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


class LocalExecutor:
    """A plain lazy loop: one item in memory at a time beside what the caller keeps."""

    name = "local"
    workers = 1

    def map(self, step: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield step(item)
