"""Shipped recipes (YAML), installed as package data so ``mb demo`` finds them anywhere.

Use :func:`path` to locate one: ``recipes.path("demo.yaml")``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(name: str) -> Path:
    """The filesystem path of a shipped recipe (or example data file)."""
    return Path(str(resources.files(__name__).joinpath(name)))


def names() -> list[str]:
    """Shipped recipe file names."""
    return sorted(p.name for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml"))
