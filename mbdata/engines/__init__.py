"""Engine names for the data commands: the executors of :mod:`mbdata.executors`.

``--engine`` and the recipe's ``engine:`` pick an executor by name; the executor decides only
*where* the steps run, never what they compute (byte-identical outputs on every engine). This
module keeps the names the CLI and the recipe import; the one list lives in
:data:`mbdata.executors.ENGINES`.
"""

from __future__ import annotations

from ..executors import (
    DEFAULT_ENGINE,
    ENGINES,
    EngineError,
    check_engine,
    open_executor,
    ray_session,
    require_ray,
)

__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "EngineError",
    "check_engine",
    "open_executor",
    "ray_session",
    "require_ray",
]
