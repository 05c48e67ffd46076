"""The options several commands share, defined once: parameter types whose allowed values come
from a registry (the one list of names), ``--engine``, and the reading options of every command
that reads a corpus (:func:`reading_options`).

``RegistryChoice`` accepts a registry's names case-insensitively (``--format TRL``) and answers a
typo with the valid names and the closest one, in the registry's own words. The registry is
imported only when the option is parsed or its help is shown, so ``mb --help`` stays fast.
"""

from __future__ import annotations

import functools
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


class LiteralChoice(click.Choice):
    """The values of a ``Literal`` type alias (``module:Alias``), e.g. a config field's allowed
    values, so the option and the config block that validates the same key share one list. The
    alias is imported when the option is parsed or shown."""

    def __init__(self, target: str):
        super().__init__([])
        self.target = target

    @property
    def choices(self) -> tuple[str, ...]:
        import typing

        module, _, attr = self.target.partition(":")
        return tuple(typing.get_args(getattr(importlib.import_module(module), attr)))

    @choices.setter
    def choices(self, value: Any) -> None:  # click.Choice.__init__ assigns it
        pass


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
    """A run's CLI alias from :data:`mbtrain.runs.registry.RUNS` (the runs trained on ``split``): the
    choices are read from the registry when the option is parsed or shown, so a run registered
    by a plugin is offered too."""

    def __init__(self, split: str):
        self.split = split
        self.name = "run"

    def aliases(self) -> dict[str, str]:
        from mbtrain.runs.registry import RUNS

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


def parse_fields(values: tuple[str, ...], option: str = "--field") -> dict[str, str]:
    """``CANONICAL=COLUMN`` options as a mapping (the canonical names are checked by the reader,
    which knows the layout). ``COLUMN`` may name a list element, e.g. ``turns[0]``."""
    from mbdata.core.errors import InputError

    out = {}
    for value in values:
        key, sep, column = value.partition("=")
        if not sep or not key or not column:
            raise InputError(f"{option} {value!r}: expected CANONICAL=COLUMN, e.g. output=response")
        out[key] = column
    return out


def reading_options(prefix: str = "", dest: str = "read", what: str = "the input") -> Any:
    """The reading options every command that reads a corpus takes, defined once:
    ``--{prefix}kind``, ``--{prefix}layout``, ``--{prefix}field`` (repeatable) and
    ``--{prefix}delimiter``. The command receives them as one
    :class:`mbdata.io.readers.ReadOptions` in the parameter ``dest`` (``prefix`` "reference-":
    a decontamination reference's options, named so in every error)."""
    name = prefix.replace("-", "_")
    options = [
        click.option(
            f"--{prefix}kind",
            f"{name}kind",
            type=RegistryChoice("mbdata.io.readers:file_kinds"),
            default=None,
            help=f"Format of {what} (default: from the path).",
        ),
        click.option(
            f"--{prefix}layout",
            f"{name}layout",
            type=RegistryChoice("mbdata.io.readers:LAYOUTS"),
            default="alpaca",
            show_default=True,
            help=f"Row shape of {what}: alpaca columns, or chat turns (the prompt is the first "
            "user turn).",
        ),
        click.option(
            f"--{prefix}field",
            f"{name}field",
            multiple=True,
            metavar="CANONICAL=COLUMN",
            help=f"Map a canonical field to a column of {what}, e.g. instruction=prompt or "
            "instruction=turns[0] (an element of a list column); repeatable.",
        ),
        click.option(
            f"--{prefix}delimiter",
            f"{name}delimiter",
            default=None,
            metavar="CHAR",
            help=f"CSV field separator of {what} (default ','; ';', '|', '\\t' or tab).",
        ),
    ]

    def decorate(command: Any) -> Any:
        @functools.wraps(command)
        def with_options(*args: Any, **kwargs: Any) -> Any:
            from mbdata.io.readers import ReadOptions

            kwargs[dest] = ReadOptions(
                kind=kwargs.pop(f"{name}kind"),
                layout=kwargs.pop(f"{name}layout"),
                fields=parse_fields(kwargs.pop(f"{name}field"), f"--{prefix}field"),
                delimiter=kwargs.pop(f"{name}delimiter"),
                prefix=prefix,
            )
            return command(*args, **kwargs)

        for option in reversed(options):
            with_options = option(with_options)
        return with_options

    return decorate
