"""Executors: *where* a data step runs, kept apart from *what* it computes (datatrove's model).

A **step** is a pure function of one item of a stream (a pyarrow table/record batch, or a tuple
holding one and the per-row arrays it needs): its output depends only on that item and on the
arguments bound into it, never on a random stream shared between items. An **executor** maps a
step over a stream and yields the outputs *in input order*, so whatever the executor, the driver
sees the same sequence and writes the same bytes. Steps never name an executor; commands open one
(:func:`open_executor`) and every step of the command runs on it.

* ``local``: a plain loop in this process (the reference every other executor is tested against).
* ``process``: a pool of worker processes on this machine (``workers``, default: all cores,
  ``MB_WORKERS``); steps, items and outputs travel pickled, so a step is a module-level
  function, a ``functools.partial`` of one, or an instance of a module-level class.
* ``ray``: Ray tasks on the running Ray runtime: an existing cluster through ``RAY_ADDRESS``
  (``ray://head:10001``, or ``auto`` on a node), else a private local runtime that is shut down
  afterwards. Ray is an optional extra (``pip install 'mbdefense[ray]'``), imported only here.

Every executor keeps a bounded window of items in flight (a few per worker), so a stream is never
read ahead whole: memory is the window, not the corpus.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from .names import DEFAULT_ENGINE, ENGINES, EngineError, check_engine, default_workers

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    """Runs a step over a stream; outputs come back in input order."""

    name: str
    workers: int

    def map(self, step: Callable[[T], R], items: Iterable[T]) -> Iterator[R]: ...


_CURRENT: contextvars.ContextVar[Executor | None] = contextvars.ContextVar(
    "mbdata_executor", default=None
)


@contextmanager
def open_executor(name: str = DEFAULT_ENGINE, workers: int | None = None) -> Iterator[Executor]:
    """The executor ``name`` for the duration of one command; steps that ask for the current
    executor (:func:`current_executor`) get it. ``ray`` connects or starts Ray here and fails at
    once, with the install line, when Ray is missing."""
    name = check_engine(name)
    if name == "local":
        from .local import LocalExecutor

        with _current(LocalExecutor()) as executor:
            yield executor
    elif name == "process":
        from .process import ProcessExecutor

        pool = ProcessExecutor(workers or default_workers())
        try:
            with _current(pool) as executor:
                yield executor
        finally:
            pool.close()
    else:
        from .ray_executor import RayExecutor, ray_session

        with ray_session(workers) as ray, _current(RayExecutor(ray)) as executor:
            yield executor


@contextmanager
def _current(executor: Executor) -> Iterator[Executor]:
    token = _CURRENT.set(executor)
    try:
        yield executor
    finally:
        _CURRENT.reset(token)


def current_executor() -> Executor:
    """The executor the running command opened, or the local one."""
    found = _CURRENT.get()
    if found is not None:
        return found
    from .local import LocalExecutor

    return LocalExecutor()


@contextmanager
def executor_for(engine: str | None) -> Iterator[Executor]:
    """The current executor when it is ``engine`` (or ``engine`` is None), else ``engine`` opened
    for this call only (a step library function called outside a command)."""
    found = _CURRENT.get()
    if engine is None:
        yield current_executor()
    elif found is not None and found.name == check_engine(engine):
        yield found
    else:
        with open_executor(engine) as executor:
            yield executor


def require_ray() -> Any:
    """Import Ray or fail with the install line (see :mod:`.ray_executor`)."""
    from .ray_executor import require_ray as _require

    return _require()


def ray_session(num_cpus: int | None = None) -> Any:
    """A Ray runtime for one command (see :func:`.ray_executor.ray_session`)."""
    from .ray_executor import ray_session as _session

    return _session(num_cpus)


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineError",
    "Executor",
    "check_engine",
    "current_executor",
    "default_workers",
    "executor_for",
    "open_executor",
    "ray_session",
    "require_ray",
]
