"""Click parameter types whose allowed values come from a registry (the one list of names).

``RegistryChoice`` accepts a registry's names case-insensitively (``--format TRL``) and answers a
typo with the valid names and the closest one, in the registry's own words. The registry is
imported only when the option is parsed or its help is shown, so ``mb --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click


class RegistryChoice(click.ParamType):
    """Names from ``module:attribute`` (a :class:`mbdata.core.registry.Registry`), case-insensitive."""

    def __init__(self, target: str):
        self.target = target
        self.name = target.rpartition(":")[2].lower()

    def registry(self) -> Any:
        """The registry, or what a function of that name returns (a registry built on demand)."""
        module, _, attr = self.target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        return obj if hasattr(obj, "names") else obj()

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.registry().names()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        registry = self.registry()
        names = registry.names()
        if value in names:
            return value
        folded = {n.lower(): n for n in names}
        if isinstance(value, str) and value.lower() in folded:
            return folded[value.lower()]
        self.fail(registry.unknown(value), param, ctx)


def engine_option(**overrides: Any) -> Any:
    """``--engine [local|process|ray]``: where a data command runs (:mod:`mbdata.executors`)."""
    from mbdata.engines import DEFAULT_ENGINE, ENGINES

    kwargs: dict[str, Any] = {
        "type": click.Choice(ENGINES, case_sensitive=False),
        "default": DEFAULT_ENGINE,
        "show_default": True,
        "help": "Engine: 'local' (one process, streaming), 'process' (worker processes, "
        "MB_WORKERS) or 'ray' (set RAY_ADDRESS to use an existing cluster; needs the 'ray' "
        "extra). Same output on every engine.",
    }
    kwargs.update(overrides)
    return click.option("--engine", **kwargs)


class RunAlias(click.ParamType):
    """A run's CLI alias from :data:`mbtrain.runs.RUNS` (the runs trained on ``split``): the
    choices are read from the registry when the option is parsed or shown, so a run registered
    by a plugin is offered too."""

    def __init__(self, split: str):
        self.split = split
        self.name = "run"

    def aliases(self) -> dict[str, str]:
        from mbtrain.runs import RUNS

        return RUNS.aliases(self.split)  # type: ignore[arg-type]

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(self.aliases()) + "]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        import difflib

        aliases = list(self.aliases())
        if value in aliases:
            return value
        close = difflib.get_close_matches(str(value), aliases, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.fail(f"unknown run {value!r}; valid names: {', '.join(aliases)}{hint}", param, ctx)
