"""The executor names and their one error type (imported by the executors and by callers that
only validate a name, without importing any executor)."""

from __future__ import annotations

import os

from ..core.errors import MBError

#: The one list of executor names (``--engine`` choices and the recipe's ``engine:`` read it).
ENGINES: tuple[str, ...] = ("local", "process", "ray")
DEFAULT_ENGINE = "local"


class EngineError(MBError):
    """An executor that cannot run here (Ray missing, a cluster that cannot be reached)."""


def check_engine(name: str) -> str:
    """``name`` folded to lower case, or a one-line error listing the executors."""
    folded = str(name).lower()
    if folded not in ENGINES:
        raise EngineError(f"unknown engine {name!r}; valid engines: {', '.join(ENGINES)}")
    return folded


def default_workers() -> int:
    """``MB_WORKERS`` when set, else the machine's cores."""
    value = os.environ.get("MB_WORKERS")
    if value:
        try:
            workers = int(value)
        except ValueError:
            raise EngineError(f"MB_WORKERS: expected a whole number, got {value!r}") from None
        if workers < 1:
            raise EngineError(f"MB_WORKERS: must be >= 1, got {workers}")
        return workers
    return os.cpu_count() or 1
