"""Name → implementation registries (readers, attacks, behaviours, exporters...).

Recipes refer to code by name. A failed lookup lists the valid names, so a typo in a recipe is a
one-line fix rather than a hunt through the source. Modeled on dolma's registry.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

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

    def get(self, name: str, path: str = "") -> T:
        try:
            return self._items[name]
        except KeyError:
            prefix = f"{path}: " if path else ""
            raise RecipeError(f"{prefix}unknown {self.kind} {name!r}; valid names: "
                              + ", ".join(sorted(self._items))) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
