"""Bounds on hostile input: YAML alias bombs, huge values in error messages, deep JSON nesting.

A recipe is small: :func:`load_yaml` refuses YAML whose aliases expand past :data:`MAX_YAML_NODES`
nodes (a 634-byte "billion laughs" file would otherwise take gigabytes to validate), recursive
aliases, and nesting deeper than the parser can take. :func:`short_repr` is how error messages show
a value: at most :data:`MAX_REPR` characters, computed without ever building the full repr. JSON
rows deeper than :data:`MAX_JSON_DEPTH` levels are bad rows (no field of a training row needs more).
"""

from __future__ import annotations

import reprlib
from typing import Any

import yaml

MAX_REPR = 200
MAX_YAML_NODES = 100_000
MAX_JSON_DEPTH = 100

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 8, 8, 8
_REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = _REPR.maxarray = 8
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = MAX_REPR, 60, MAX_REPR


def short_repr(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to ``limit`` characters (with ``...``), cheap for any size."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int past Python's 4,300-digit repr limit
        text = f"<{type(value).__name__} too long to show>"
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class YamlLimitError(ValueError):
    """The YAML is within the syntax but beyond what a recipe may be."""


def _expanded_size(root: yaml.Node) -> int:
    """Nodes the document has once every alias is expanded (memoized, so the check is linear in
    the file, not in the expansion); raises on a recursive alias."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise YamlLimitError(
                    f"aliases expand to more than {MAX_YAML_NODES:,} nodes; "
                    "write the recipe out without anchors"
                )
            continue
        if key in sizes:
            continue
        if key in active:
            raise YamlLimitError("a recursive alias (an anchor used inside itself)")
        active.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


class _BoundedLoader(yaml.SafeLoader):
    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node)
        return super().construct_document(node)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the bounds above (raises :class:`YamlLimitError` or
    ``yaml.YAMLError``)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except RecursionError:
        raise YamlLimitError("nested too deeply") from None
    except ValueError as exc:  # e.g. an integer past Python's 4,300-digit limit
        if isinstance(exc, YamlLimitError):
            raise
        raise YamlLimitError(str(exc).splitlines()[0][:200]) from None


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed JSON value nests containers deeper than ``limit`` (iterative)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in item if isinstance(v, (dict, list)))
    return False
