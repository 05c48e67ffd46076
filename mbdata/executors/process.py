"""The ``process`` executor: a pool of worker processes on this machine.

Workers are started by a fork server (``spawn`` where there is none), never forked from the
driver: the driver runs thread pools (Arrow's, polars') whose locks a plain ``fork`` can copy in a
held state, and such a child waits forever. So a step travels pickled, and must be a module-level
function, a :func:`functools.partial` of one, or an instance of a module-level class (every mbdata
step is); items and outputs travel pickled too (pyarrow tables and numpy arrays pickle as
buffers). The pool is started on the first :meth:`ProcessExecutor.map` and kept for the command
(its start-up, importing the step's modules, is paid once), then closed by
:func:`mbdata.executors.open_executor`.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from .window import ordered_window

T = TypeVar("T")
R = TypeVar("R")


def _apply(step: Callable[[Any], Any], item: Any) -> Any:
    return step(item)


class ProcessExecutor:
    """``workers`` processes; items in flight: two per worker."""

    name = "process"

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._pool: Any = None

    def _started(self) -> Any:
        if self._pool is None:
            methods = multiprocessing.get_all_start_methods()
            method = "forkserver" if "forkserver" in methods else "spawn"
            # No set_forkserver_preload: the fork server is one per process, shared with
            # mbtrain's job runner, and its preload list is global state that is not ours to set.
            self._pool = multiprocessing.get_context(method).Pool(self.workers)
        return self._pool

    def map(self, step: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        pool = self._started()
        yield from ordered_window(
            items,
            lambda item: pool.apply_async(_apply, (step, item)),
            lambda handle: handle.get(),
            2 * self.workers,
        )

    def close(self) -> None:
        """Stop the workers (a command's end, or an error: pending work is dropped)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
