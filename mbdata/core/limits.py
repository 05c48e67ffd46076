"""Bounds on hostile input: YAML alias bombs, huge values in error messages, deep JSON nesting.

A recipe is small: :func:`load_yaml` refuses YAML whose aliases expand past :data:`MAX_YAML_NODES`
nodes (a 634-byte "billion laughs" file would otherwise take gigabytes to validate), recursive
aliases, and nesting deeper than the parser can take. :func:`short_repr` is how error messages show
a value: at most :data:`MAX_REPR` characters, computed without ever building the full repr. JSON
rows deeper than :data:`MAX_JSON_DEPTH` levels are bad rows (no field of a training row needs more).

Memory caps (issue 23), each raised by its environment variable (bytes, see :data:`LIMITS`): the
text a recipe's aliases expand to (checked on the parsed nodes, before anything is built from
them), one line of a JSONL input, and a file that a reader loads whole (JSON, CSV, Parquet). A YAML
mapping with the same key twice is refused (the last one would silently win).
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

import yaml

from .errors import MBError

MAX_REPR = 200
MAX_YAML_NODES = 100_000
MAX_JSON_DEPTH = 100

# The byte caps: environment variable -> (default, what it bounds). The one list of them.
MAX_RECIPE_BYTES = "MBDEFENSE_MAX_RECIPE_BYTES"
MAX_LINE_BYTES = "MBDEFENSE_MAX_LINE_BYTES"
MAX_INPUT_BYTES = "MBDEFENSE_MAX_INPUT_BYTES"
LIMITS: dict[str, tuple[int, str]] = {
    MAX_RECIPE_BYTES: (16 << 20, "a recipe or --config file, and its text once aliases expand"),
    MAX_LINE_BYTES: (64 << 20, "one line of a JSONL input"),
    MAX_INPUT_BYTES: (4 << 30, "a JSON, CSV or Parquet input (read whole)"),
}


def limit(var: str) -> int:
    """The cap named by ``var``: its environment value (a positive whole number of bytes) or the
    default from :data:`LIMITS`."""
    default = LIMITS[var][0]
    raw = os.environ.get(var, "").strip().replace("_", "")
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise MBError(f"{var}={short_repr(os.environ[var])}: expected a positive number of bytes")
    return int(raw)


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << (shift - 4)) == 0:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n:,} bytes"


def too_big(what: str, var: str, cap: int) -> str:
    """The error text for a value past a cap: the cap, and how to raise it."""
    return (
        f"{what} is larger than the {_size(cap)} limit ({var}={cap}); if it is genuine, raise "
        f"the limit with the environment variable {var}=BYTES"
    )


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
    the file, not in the expansion); raises on a recursive alias, and when the scalars' text once
    expanded passes ``MBDEFENSE_MAX_RECIPE_BYTES`` (one 1 MB anchored string used 50,000 times is
    few nodes but 50 GB of canonical JSON)."""
    sizes: dict[int, int] = {}
    chars: dict[int, int] = {}
    char_cap = limit(MAX_RECIPE_BYTES)
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            active.discard(key)
            children = _children(node)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            chars[key] = sum(chars[id(c)] for c in children) + (
                len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            )
            if sizes[key] > MAX_YAML_NODES:
                raise YamlLimitError(
                    f"aliases expand to more than {MAX_YAML_NODES:,} nodes; "
                    "write the recipe out without anchors"
                )
            if chars[key] > char_cap:
                raise YamlLimitError(
                    too_big("the text its aliases expand to", MAX_RECIPE_BYTES, char_cap)
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


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _BoundedLoader(yaml.SafeLoader):
    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        """A mapping that names a key twice is refused (YAML says keys are unique; PyYAML keeps the
        last silently). Keys brought in by a ``<<`` merge may be overridden, as YAML allows."""
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, str] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node)
                mark = key_node.start_mark
                at = f"line {mark.line + 1} column {mark.column + 1}"
                if key in first:
                    raise YamlLimitError(
                        f"duplicate key {short_repr(key)} at {at} (first at {first[key]}); "
                        "a key may appear once per mapping"
                    )
                first[key] = at
        return super().construct_mapping(node, deep=deep)


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
