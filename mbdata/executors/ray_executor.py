"""The ``ray`` executor: each item is one Ray task on the running Ray runtime.

The step is put in the object store once (Ray's own serialisation of *our* code; no input data is
ever unpickled from outside) and every item becomes one task; results come back in input order,
at most two tasks per cluster CPU in flight. Pointing at an existing cluster: set ``RAY_ADDRESS``
(``ray://head:10001`` or ``auto``); with no address a private local Ray is started with
``num_cpus`` workers (all cores when None) and shut down afterwards; a runtime the caller already
started (a notebook, a test fixture) is reused and left running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from .names import EngineError
from .window import ordered_window

T = TypeVar("T")
R = TypeVar("R")


def require_ray() -> Any:
    """Import Ray or fail with the install line; never imported otherwise."""
    try:
        import ray
    except ImportError as exc:
        raise EngineError(
            f"engine 'ray' needs Ray, which is not installed: pip install 'mbdefense[ray]' ({exc})"
        ) from None
    return ray


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[Any]:
    """A Ray runtime for the duration of one command (see the module doc)."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address is None and num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # ConnectionError and Ray's own errors: one line for the user
        where = f"RAY_ADDRESS={address}" if address else "a local Ray runtime"
        raise EngineError(f"cannot start {where}: {exc}") from None
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def _apply(step: Callable[[Any], Any], item: Any) -> Any:
    return step(item)


class RayExecutor:
    """Ray tasks, one per item, on the runtime of the command's :func:`ray_session`."""

    name = "ray"

    def __init__(self, ray: Any):
        self.ray = ray
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(_apply)

    def map(self, step: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        ray = self.ray
        step_ref = ray.put(step)
        yield from ordered_window(
            items,
            lambda item: self._remote.remote(step_ref, item),
            ray.get,
            2 * self.workers,
            cancel=self._cancel,
        )

    def _cancel(self, ref: Any) -> None:
        try:
            self.ray.cancel(ref, force=True)
        except Exception:  # already finished, or the runtime is going away: nothing to stop
            pass
