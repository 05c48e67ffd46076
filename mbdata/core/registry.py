"""Name → implementation registries (readers, attacks, behaviours, exporters...).

Recipes refer to code by name. A failed lookup lists the valid names, so a typo in a recipe is a
one-line fix rather than a hunt through the source. Modeled on dolma's registry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import RecipeError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of implementations, filled with the :meth:`add` decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def register(self, name: str, obj: T) -> T:
        """Add ``obj`` under ``name`` (the non-decorator form of :meth:`add`)."""
        return self.add(name)(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for plugins and tests that add an entry for a while)."""
        del self._items[name]

    def get(self, name: str, path: str = "") -> T:
        try:
            return self._items[name]
        except KeyError:
            raise RecipeError(self.unknown(name, path)) from None

    def unknown(self, name: object, path: str = "") -> str:
        """The one-line message for a name that is not registered: valid names, closest match."""
        prefix = f"{path}: " if path else ""
        hint = ""
        if isinstance(name, str):
            close = difflib.get_close_matches(name.lower(), self.names(), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{prefix}unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}{hint}"

    def choices(self) -> Callable[[], list[str]]:
        """A zero-argument callable giving the current names, for ``spec(choices=...)``: a recipe
        field whose allowed values are this registry's, however many plugins add later."""
        return self.names

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
