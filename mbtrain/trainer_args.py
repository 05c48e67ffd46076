"""``trainer_args``: further transformers/TRL ``TrainingArguments`` passed through to the trainers.

They come from the recipe (``train.trainer_args``) and from the command line (``--trainer-arg
KEY=VALUE``, which wins key by key: :func:`merge`). Both are checked against the real dataclass
before any work: an unknown key is a one-line error naming it and the closest valid name; a key
the recipe's own settings decide (``learning_rate``: ``train.stageN.lr``, ...) is an error naming
the recipe key to change; a value is checked against the field's type annotation as far as it
allows (numbers, booleans, strings, lists, mappings, the names of an enum such as ``optim`` or
``lr_scheduler_type``).

The keys are ``SFTConfig`` field names (TRL's superset of ``TrainingArguments``). Stage 2 runs a
plain ``transformers.Trainer``: the SFT-only keys (``packing``, ``padding_free``, ...) apply to the
SFT stages only (:func:`for_trainer`).

This module imports transformers/TRL only inside its functions, and they are called only when
there are ``trainer_args`` to check: a recipe without them loads without torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

from mbdata.core.errors import MBError

# TrainingArguments that mbtrain sets from the recipe (or the command), and where to change them:
# passing them here would silently fight the recipe.
OWNED = {
    "output_dir": "the command (its output folder)",
    "num_train_epochs": "the recipe (train.stageN.epochs)",
    "learning_rate": "the recipe (train.stageN.lr)",
    "per_device_train_batch_size": "the recipe (train.stageN.batch_size)",
    "gradient_accumulation_steps": "the recipe (train.stageN.grad_accum)",
    "weight_decay": "the recipe (train.stageN.weight_decay)",
    "max_grad_norm": "the recipe (train.stageN.max_grad_norm)",
    "seed": "the recipe (train.seed)",
    "data_seed": "the recipe (train.seed)",
    "eval_strategy": "the recipe (train.stage2.select)",
    "save_strategy": "the recipe (train.checkpoint_every)",
    "load_best_model_at_end": "the recipe (train.stage2.select)",
    "metric_for_best_model": "the recipe (train.stage2.select)",
}
_FLOAT_TEXT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _config_class(sft: bool) -> type:
    if sft:
        from trl import SFTConfig

        return SFTConfig
    from transformers import TrainingArguments

    return TrainingArguments


def field_types(sft: bool = True) -> dict[str, Any]:
    """Settable field name -> type annotation of ``SFTConfig`` (``sft``) or ``TrainingArguments``."""
    cls = _config_class(sft)
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def _name(tp: Any) -> str:
    """``str | list[str] | None`` for an annotation, as a user reads it."""
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if get_origin(tp) is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


class _Mismatch(Exception):
    """A value that does not fit an annotation (the message says what was expected)."""


def _check(tp: Any, value: Any) -> Any:
    """``value`` checked against ``tp``, returned normalised (``1e-4`` read as text by YAML 1.1
    becomes a float); an annotation this cannot judge accepts the value as it is."""
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise _Mismatch("must not be null")
        enums = [o for o in options if isinstance(o, type) and issubclass(o, enum.Enum)]
        if enums and isinstance(value, str):  # `OptimizerNames | str`: the str must be a name
            names = [m.value for e in enums for m in e]
            if value in names:
                return value
            close = difflib.get_close_matches(value, [str(n) for n in names], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise _Mismatch(f"{value!r} is not one of the {enums[0].__name__}{hint}")
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(option, value)
            except _Mismatch:
                pass
        raise _Mismatch(f"expected {_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise _Mismatch("expected one of " + ", ".join(repr(a) for a in get_args(tp)))
    if origin in (list, Sequence) or tp is list:
        if not isinstance(value, list):
            raise _Mismatch(f"expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        return [_check(args[0], v) for v in value] if args else value
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise _Mismatch(f"expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, str) and value in [m.value for m in tp]:
            return value
        raise _Mismatch(f"{value!r} is not one of the {tp.__name__}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch(f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch(f"expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
        raise _Mismatch(f"expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch(f"expected a string, got {type(value).__name__} {value!r}")
    return value  # a class this check does not know (the dataclass itself judges it)


def check_trainer_args(
    args: Mapping[str, Any] | Sequence[tuple[str, Any]],
    sft: bool = True,
    *,
    where: str = "trainer_args",
    error: type[MBError] = MBError,
) -> dict[str, Any]:
    """``args`` checked against the real ``SFTConfig`` (``sft``) or ``TrainingArguments`` and
    normalised; the first problem is raised as ``error`` with a one-line message that starts with
    ``where.KEY``."""
    args = dict(args)
    if not args:
        return {}
    types_of = field_types(sft)
    cls_name = _config_class(sft).__name__
    out = {}
    for key, value in args.items():
        path = f"{where}.{key}"
        if key in OWNED:
            raise error(f"{path}: set by {OWNED[key]}; change it there")
        if key not in types_of:
            close = difflib.get_close_matches(str(key), list(types_of), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}?" if close else "see the transformers/TRL docs"
            raise error(f"{path}: not a {cls_name} field ({hint})")
        try:
            out[key] = _check(types_of[key], value)
        except _Mismatch as exc:
            raise error(f"{path}: {exc}") from None
    return out


def merge(recipe: Mapping[str, Any] | None, command: Mapping[str, Any] | None) -> dict[str, Any]:
    """The recipe's ``train.trainer_args`` with the command line's ``--trainer-arg`` on top (the
    command wins, key by key)."""
    return {**dict(recipe or {}), **dict(command or {})}


def for_trainer(args: Mapping[str, Any] | Sequence[tuple[str, Any]], sft: bool) -> dict[str, Any]:
    """The keys that apply to one trainer: all of them for an SFT stage; for stage 2 (a plain
    ``Trainer``) the ``TrainingArguments`` ones, without the SFT-only keys."""
    args = dict(args)
    if sft or not args:
        return args
    plain = field_types(sft=False)
    return {k: v for k, v in args.items() if k in plain}
