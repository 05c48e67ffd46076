"""Strict, typed config blocks built from plain mappings (parsed YAML/JSON).

Every block of a recipe is a frozen dataclass. :func:`from_mapping` turns a mapping into one,
rejecting unknown keys, wrong types and out-of-range values with a message that names the key path
(``attacks[1].rate``) and the allowed values. :func:`to_mapping` is the inverse and is what goes into
the manifest (defaults filled in), so a resolved block can be parsed back into the same object.

Constraints are declared next to the field, via :func:`spec`:

    rate: float = spec(0.01, ge=0.0, le=1.0, doc="fraction of training rows")
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from .errors import RecipeError
from .limits import short_repr

_MISSING = dataclasses.MISSING
_YAML11_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def spec(
    default: Any = _MISSING,
    *,
    default_factory: Any = _MISSING,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    pattern: str | None = None,
    form: str | None = None,
    doc: str = "",
    choices: Any = None,
    omit_default: bool = False,
) -> Any:
    """A dataclass field with validation metadata (bounds, regex ``pattern`` described to users
    as ``form``, ``choices``: a zero-argument callable giving the allowed names, normally a
    :meth:`mbdata.core.registry.Registry.choices`, so the registry is the one list) and a docstring.
    ``omit_default``: :func:`to_mapping` leaves the key out while it holds its default, so adding
    such a key to a block does not change the fingerprint of recipes written before it."""
    meta = {
        "ge": ge,
        "le": le,
        "gt": gt,
        "lt": lt,
        "pattern": pattern,
        "form": form,
        "doc": doc,
        "choices": choices,
        "omit_default": omit_default,
    }
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if default is _MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " | null"
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return f"mapping of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check_bounds(value: Any, meta: Mapping[str, Any], path: str) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if meta.get("ge") is not None and value < meta["ge"]:
            raise RecipeError(f"{path}: must be >= {meta['ge']}, got {value}")
        if meta.get("le") is not None and value > meta["le"]:
            raise RecipeError(f"{path}: must be <= {meta['le']}, got {value}")
        if meta.get("gt") is not None and value <= meta["gt"]:
            raise RecipeError(f"{path}: must be > {meta['gt']}, got {value}")
        if meta.get("lt") is not None and value >= meta["lt"]:
            raise RecipeError(f"{path}: must be < {meta['lt']}, got {value}")
    if isinstance(value, str) and meta.get("choices") is not None:
        registry = getattr(meta["choices"], "__self__", None)
        if value not in meta["choices"]():
            if registry is not None:
                raise RecipeError(registry.unknown(value, path))
            close = difflib.get_close_matches(value.lower(), meta["choices"](), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(
                f"{path}: {short_repr(value)} is not allowed{hint}; allowed values: "
                + ", ".join(repr(a) for a in meta["choices"]())
            )
    if isinstance(value, str) and meta.get("pattern") and not re.fullmatch(meta["pattern"], value):
        form = meta.get("form") or f"matching {meta['pattern']}"
        raise RecipeError(f"{path}: {short_repr(value)} is not {form}")


def coerce(tp: Any, value: Any, path: str, *, foreign: bool = False) -> Any:
    """Check ``value`` against the type annotation ``tp``; build nested dataclasses.

    ``foreign``: ``tp`` comes from another library's dataclass (transformers' and TRL's
    ``TrainingArguments``, for ``train.trainer_args``), whose annotations use more than ours do:
    enums (a value must be one of their names, with a "did you mean"), ``Sequence``/``Mapping``,
    bare ``dict``, and classes this cannot judge, which are passed through for the dataclass
    itself to check. Our own blocks keep the strict default: an annotation not understood here is
    a bug in the block definition."""
    origin = get_origin(tp)
    if tp is Any or (foreign and tp is object):
        return value
    if origin in (Union, types.UnionType):
        return _coerce_union(tp, value, path, foreign)
    if origin is Literal:
        return _coerce_literal(tp, value, path)
    if origin is list or (foreign and (origin is Sequence or tp is list)):
        return _coerce_list(tp, value, path, foreign)
    if origin is dict or (foreign and (origin is Mapping or tp is dict)):
        return _coerce_dict(tp, value, path, foreign)
    if foreign and isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum_value(tp, [m.value for m in tp], value, path)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_mapping(tp, value, path)
    if tp in _SCALARS:
        return _SCALARS[tp](value, path)
    if foreign:
        return value  # a class this cannot judge: the foreign dataclass checks it
    raise TypeError(f"unsupported config type {tp!r} at {path}")  # a bug in a block definition


def _coerce_union(tp: Any, value: Any, path: str, foreign: bool) -> Any:
    """``A | B | None``: null where allowed, a foreign enum's names, else the first option that
    accepts the value (one option's own error when only one is tried)."""
    options = get_args(tp)
    if value is None:
        if type(None) in options:
            return None
        raise RecipeError(f"{path}: must not be null; expected {_type_name(tp)}")
    enums = [o for o in options if isinstance(o, type) and issubclass(o, enum.Enum)]
    if foreign and enums and isinstance(value, str):
        # `OptimizerNames | str`: the string must still be one of the enum's names
        return _enum_value(enums[0], [m.value for e in enums for m in e], value, path)
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return coerce(option, value, path, foreign=foreign)
        except RecipeError as exc:
            errors.append(str(exc))
    if len(errors) == 1:
        raise RecipeError(errors[0])
    raise RecipeError(
        f"{path}: expected {_type_name(tp)}, got {type(value).__name__} {short_repr(value)}"
    )


def _coerce_literal(tp: Any, value: Any, path: str) -> Any:
    allowed = get_args(tp)
    if value not in allowed or type(value) is not type(allowed[allowed.index(value)]):
        raise RecipeError(
            f"{path}: {short_repr(value)} is not allowed; allowed values: "
            + ", ".join(repr(a) for a in allowed)
        )
    return value


def _coerce_list(tp: Any, value: Any, path: str, foreign: bool) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise RecipeError(
            f"{path}: expected a list, got {type(value).__name__} {short_repr(value)}"
        )
    (item_tp,) = get_args(tp) or (Any,)
    return [coerce(item_tp, v, _join(path, i), foreign=foreign) for i, v in enumerate(value)]


def _coerce_dict(tp: Any, value: Any, path: str, foreign: bool) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RecipeError(f"{path}: expected a mapping, got {type(value).__name__}")
    key_tp, val_tp = get_args(tp) or (str, Any)
    out = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise RecipeError(f"{path}: keys must be strings, got {short_repr(k)}")
        out[k] = coerce(val_tp, v, _join(path, k), foreign=foreign)
    return out


def _coerce_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise RecipeError(f"{path}: expected true or false, got {short_repr(value)}")
    return value


def _coerce_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecipeError(
            f"{path}: expected an integer, got {type(value).__name__} {short_repr(value)}"
        )
    return value


def _coerce_float(value: Any, path: str) -> float:
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        # PyYAML follows YAML 1.1, which reads `5e-4` (no dot) as a string.
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecipeError(
            f"{path}: expected a number, got {type(value).__name__} {short_repr(value)}"
        )
    if not math.isfinite(value):
        raise RecipeError(f"{path}: expected a finite number, got {short_repr(value)}")
    return float(value)


def _coerce_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise RecipeError(
            f"{path}: expected a string, got {type(value).__name__} "
            f"{short_repr(value)}{_quote_hint(path, value)}"
        )
    return value


# The scalar annotations a block may use, each with its check (by exact type: a bool is no int).
_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    str: _coerce_str,
}


def _enum_value(cls: type[enum.Enum], names: list[Any], value: Any, path: str) -> Any:
    """``value`` if it is one of an enum's names, else a one-line error with the closest one."""
    if isinstance(value, str) and value in names:
        return value
    hint = _did_you_mean(value, [str(n) for n in names])
    raise RecipeError(f"{path}: {short_repr(value)} is not one of the {cls.__name__}{hint}")


def _did_you_mean(key: Any, allowed: Any) -> str:
    """`` (did you mean 'defense'?)`` for a near miss of an allowed key, else ""."""
    import difflib

    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quote_hint(path: str, value: Any) -> str:
    """YAML reads an unquoted ``1.0`` or ``2`` as a number; say how to keep it a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return ""
    key = path.rsplit(".", 1)[-1] or "key"
    example = "1.0.0" if key == "version" else str(value)
    return f' (YAML reads an unquoted {short_repr(value)} as a number: quote it, e.g. {key}: "{example}")'


def from_mapping(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, strictly. ``path`` prefixes error messages."""
    where = path or "recipe"
    if data is None:
        data = {}
    shorthand = getattr(cls, "from_shorthand", None)
    if shorthand is not None and not isinstance(data, dict):
        data = shorthand(data, where)
    if not isinstance(data, dict):
        raise RecipeError(
            f"{where}: expected a mapping, got {type(data).__name__} {short_repr(data)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=repr)
    if unknown:
        raise RecipeError(
            f"{where}: unknown key {short_repr(unknown[0])}"
            f"{_did_you_mean(unknown[0], fields)}; allowed keys: " + ", ".join(fields)
        )
    kwargs = {}
    for name, field in fields.items():
        key_path = _join(path, name)
        if name not in data:
            if field.default is _MISSING and field.default_factory is _MISSING:
                raise RecipeError(f"{key_path}: required key is missing")
            continue
        value = coerce(hints[name], data[name], key_path)
        _check_bounds(value, field.metadata, key_path)
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        check(path)
    return obj


def to_mapping(obj: Any) -> Any:
    """The inverse of :func:`from_mapping`: plain dicts/lists with every default filled in."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_mapping(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.init
            and not (f.metadata.get("omit_default") and _is_default(f, getattr(obj, f.name)))
        }
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


def _is_default(field: dataclasses.Field, value: Any) -> bool:
    if field.default is not _MISSING:
        return bool(value == field.default)
    if field.default_factory is not _MISSING:
        return bool(value == field.default_factory())
    return False


def describe(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) rows for documentation tables of a block."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.default is not _MISSING:
            default = repr(f.default)
        elif f.default_factory is not _MISSING:
            default = repr(to_mapping(f.default_factory()))
        else:
            default = "(required)"
        type_name = _type_name(hints[f.name])
        if f.metadata.get("choices") is not None:
            type_name = " | ".join(repr(c) for c in f.metadata["choices"]())
            if "null" in _type_name(hints[f.name]):
                type_name += " | null"
        rows.append((f.name, type_name, default, f.metadata.get("doc", "")))
    return rows


# A name in a recipe (dataset, source, trigger set): letters, digits, '_', '.', '-'.
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"


def canonical_json(data: Any) -> str:
    """The canonical JSON form used for every hash: sorted keys, no whitespace, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
