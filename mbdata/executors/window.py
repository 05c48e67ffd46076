"""Ordered, bounded fan-out shared by the parallel executors."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_window(
    items: Iterable[T],
    submit: Callable[[T], Any],
    result: Callable[[Any], R],
    window: int,
    cancel: Callable[[Any], None] | None = None,
) -> Iterator[R]:
    """Submit items as earlier ones finish, at most ``window`` in flight, and yield their results
    in input order. The stream is pulled only as the window frees up, so a large input is never
    read ahead; on an error (or when the consumer stops) the pending work is cancelled."""
    pending: deque[Any] = deque()
    try:
        for item in items:
            pending.append(submit(item))
            if len(pending) >= window:
                yield result(pending.popleft())
        while pending:
            yield result(pending.popleft())
    finally:
        if cancel is not None:
            for handle in pending:
                cancel(handle)
