"""Where mbdata meets the packages built on it, without importing them: entry points.

mbdata never imports mbtrain (nor any other consumer). A package that owns a top-level recipe
block, or that can load a reference model for the audit, declares it in its packaging metadata::

    [project.entry-points."mbdefense.recipe_blocks"]
    train = "mbtrain.config:TrainConfig"          # a dataclass validating the `train:` block

    [project.entry-points."mbdefense.model_loaders"]
    reference = "mbtrain.engine.reference:load_reference_model"   # path -> (model, tokenizer)

:func:`register_recipe_block` / :func:`register_model_loader` do the same at run time (plugins
loaded from a path, tests); a run-time registration wins over an entry point of the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .errors import RecipeError

RECIPE_BLOCKS = "mbdefense.recipe_blocks"
MODEL_LOADERS = "mbdefense.model_loaders"

_registered: dict[str, dict[str, Any]] = {RECIPE_BLOCKS: {}, MODEL_LOADERS: {}}


def register_recipe_block(name: str, cls: type) -> None:
    """Validate the top-level recipe block ``name`` with the config dataclass ``cls``."""
    _registered[RECIPE_BLOCKS][name] = cls


def register_model_loader(name: str, loader: Callable[..., tuple[Any, Any]]) -> None:
    """Load reference models named ``name`` with ``loader(path) -> (model, tokenizer)``."""
    _registered[MODEL_LOADERS][name] = loader


def _lookup(group: str, name: str) -> Any | None:
    if name in _registered[group]:
        return _registered[group][name]
    for ep in entry_points(group=group, name=name):
        return ep.load()
    return None


def recipe_block_class(name: str) -> type:
    """The config dataclass of the recipe block ``name`` (a one-line error if nobody owns it)."""
    cls = _lookup(RECIPE_BLOCKS, name)
    if cls is None:
        raise RecipeError(
            f"{name}: no installed package validates this block (expected an entry "
            f"point {name!r} in group {RECIPE_BLOCKS!r}; reinstall mbdefense)"
        )
    return cls


def model_loader(name: str = "reference") -> Callable[..., tuple[Any, Any]]:
    """The reference-model loader ``name`` (mbtrain provides ``reference``)."""
    loader = _lookup(MODEL_LOADERS, name)
    if loader is None:
        raise RecipeError(
            f"no model loader {name!r} is installed (entry point group "
            f"{MODEL_LOADERS!r}); install mbdefense with its training engine"
        )
    return loader
