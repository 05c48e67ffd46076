"""Execution engines for the data layer: ``local`` (one process, streaming) and ``ray`` (Ray Data).

Both engines run the same steps and must give the same output (byte-identical shards, the same
dedup clusters, the same audit flags); the engine decides only *where* the work runs. Ray is an
optional extra (``pip install 'mbdefense[ray]'``), imported only when ``--engine ray`` or the
recipe's ``engine: ray`` asks for it.

Pointing at an existing cluster: set ``RAY_ADDRESS`` (e.g. ``ray://head:10001`` or ``auto``); with no
address a private local Ray is started with ``num_cpus`` workers and shut down afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..core.errors import MBError

#: The one list of engine names (CLI choices and recipe validation read it).
ENGINES: tuple[str, ...] = ("local", "ray")
DEFAULT_ENGINE = "local"


class EngineError(MBError):
    """An engine that cannot run here (Ray missing, a cluster that cannot be reached)."""


def check_engine(name: str) -> str:
    """``name`` folded to lower case, or a one-line error listing the engines."""
    folded = str(name).lower()
    if folded not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; valid engines: {', '.join(ENGINES)}")
    return folded


def require_ray() -> Any:
    """Import Ray (with Ray Data) or fail with the install line; never imported otherwise."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineError(
            "engine 'ray' needs Ray Data, which is not installed: pip install 'mbdefense[ray]' "
            f"({exc})"
        ) from None
    return ray


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[Any]:
    """A Ray runtime for the duration of one command.

    Reuses a runtime the caller already started (a notebook, a test fixture); connects to
    ``RAY_ADDRESS`` when it is set; otherwise starts a private local runtime with ``num_cpus``
    workers (all cores when None) and shuts it down on exit, so a command leaves no processes.
    """
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
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        yield ray
    finally:
        ray.shutdown()
