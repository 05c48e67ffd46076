"""The reader registries, the one list of container kinds and row layouts: ``--kind``/``--layout``
choices, a recipe's ``kind:``/``layout:`` and "did you mean" all come from here. Containers and
layouts register themselves in their modules (``CONTAINERS.add``/``LAYOUTS.add``); the package
imports them all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ...core.registry import Registry
from .records import RawRecord

CONTAINERS: Registry[Callable[..., Iterator[RawRecord]]] = Registry("source kind")


LAYOUTS: Registry[Callable[[dict, dict[str, str]], dict[str, Any]]] = Registry("layout")


# The canonical fields a source may map per layout (``fields:`` keys).
LAYOUT_FIELDS = {
    "alpaca": ("instruction", "input", "output", "system"),
    "sharegpt": ("conversations", "system"),
    "messages": ("messages",),
}

# File extensions and the container each reads as (the kind a path is guessed to be).
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
}


# Kinds that are not read from a local file (the CLI's --kind offers the others, and "build").
NOT_FILES = ("hub", "synthetic")


def file_kinds() -> Registry[str]:
    """The kinds a local path can be read as: the container registry's file kinds and ``build``,
    as a registry (built on each call, so a plugin container is included) whose names and "did
    you mean" are those of the CLI's ``--kind``."""
    kinds: Registry[str] = Registry("input kind")
    for name in [n for n in CONTAINERS.names() if n not in NOT_FILES] + ["build"]:
        kinds.register(name, name)
    return kinds
