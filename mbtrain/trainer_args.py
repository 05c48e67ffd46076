"""``trainer_args``: further transformers/TRL ``TrainingArguments`` passed through to the trainers.

They come from the recipe (``train.trainer_args``) and from the command line (``--trainer-arg
KEY=VALUE``, which wins key by key: :func:`merge`). Both are checked against the real dataclass
before any work: an unknown key is a one-line error naming it and the closest valid name; a key
the recipe's own settings decide (``learning_rate``: ``train.stageN.lr``, ...) is an error naming
the recipe key to change; a value is checked against the field's type annotation as far as it
allows (numbers, booleans, strings, lists, mappings, the names of an enum such as ``optim`` or
``lr_scheduler_type``), by the recipe's own checker (``mbdata.core.config.coerce`` in its
``foreign`` mode).

The keys are ``SFTConfig`` field names (TRL's superset of ``TrainingArguments``). Stage 2 runs a
plain ``transformers.Trainer``: the SFT-only keys (``packing``, ``padding_free``, ...) apply to the
SFT stages only (:func:`for_trainer`).

This module imports transformers/TRL only inside its functions, and they are called only when
there are ``trainer_args`` to check: a recipe without them loads without torch.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from mbdata.core.config import coerce
from mbdata.core.errors import MBError, RecipeError

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
            out[key] = coerce(types_of[key], value, path, foreign=True)
        except RecipeError as exc:
            raise error(str(exc)) from None
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
