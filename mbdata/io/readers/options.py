"""How to read an input path: the reading options every command that reads a corpus shares.

``mb audit``, ``mb dedup`` (its input and each ``--reference``) and the Python functions behind
them take the same four options, defined once here (the CLI side is
:func:`cli.params.reading_options`): the container ``kind`` (default: guessed from the path), the row
``layout``, the column ``fields`` mapping and, for CSV, the ``delimiter``. A reference's options
carry the ``reference-`` prefix, so every error names the option the user typed
(``--reference-field``, not ``--field``).

A mapped column may name one element of a list column: ``instruction=turns[0]`` reads the first
string of MT-bench's ``turns`` list (``[-1]``: the last). Chat data with role-tagged turns is read
with ``layout`` ``messages`` or ``sharegpt`` instead, whose prompt is the first user turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ...core.errors import InputError
from ...core.limits import short_repr

# What a user can type for a tab on a command line (a literal tab is awkward in a shell).
_TAB_SPELLINGS = {"\\t": "\t", "tab": "\t", "TAB": "\t"}


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """The reading options of one input (see the module docstring). ``prefix`` is what the
    command-line names of these options start with after ``--`` (``""`` for the input,
    ``"reference-"`` for a decontamination reference): errors and hints use it."""

    kind: str | None = None
    layout: str = "alpaca"
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delimiter: str | None = None
    split: str | None = None
    prefix: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", dict(self.fields))
        if self.delimiter is not None:
            delimiter = _TAB_SPELLINGS.get(self.delimiter, self.delimiter)
            if len(delimiter) != 1 or delimiter in '"\r\n':
                raise InputError(
                    f"{self.option('delimiter')} {short_repr(self.delimiter)}: expected one "
                    "character other than a quote or a newline (a tab: '\\t' or tab)"
                )
            object.__setattr__(self, "delimiter", delimiter)

    def option(self, name: str) -> str:
        """The command-line name of one option, e.g. ``--reference-field``."""
        return f"--{self.prefix}{name}"

    @property
    def field_option(self) -> str:
        return self.option("field")

    def check_delimiter(self, path: Any, kind: str) -> None:
        """A delimiter is for CSV only: refuse it, naming the option, for any other kind."""
        if self.delimiter is None or kind == "csv":
            return
        if kind == "tsv":
            hint = "a TSV is always tab-separated; for quoted tab-separated fields pass " + (
                f"{self.option('kind')} csv {self.option('delimiter')} '\\t'"
            )
        else:
            hint = f"pass {self.option('kind')} csv to read it as CSV"
        raise InputError(
            f"{path}: {self.option('delimiter')} is for CSV input, and this input is read as "
            f"{kind!r}; {hint}"
        )

    def recorded(self) -> dict[str, Any]:
        """The options that differ from the defaults (``fields`` aside), for a manifest: empty for
        a plain alpaca file read by its extension, so such outputs keep their content hash."""
        out: dict[str, Any] = {}
        if self.kind is not None:
            out["kind"] = self.kind
        if self.layout != "alpaca":
            out["layout"] = self.layout
        if self.delimiter is not None:
            out["delimiter"] = self.delimiter
        if self.split is not None:
            out["split"] = self.split
        return out


def read_options(
    options: ReadOptions | None,
    *,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: Mapping[str, str] | None = None,
    delimiter: str | None = None,
    split: str | None = None,
    field_option: str = "--field",
) -> ReadOptions:
    """``options``, or the options the keyword arguments spell (the older keyword API of
    :func:`~mbdata.io.readers.read_input`, where ``field_option`` names the mapping option in hints);
    ``options`` and any other keyword at once is a programming error."""
    if options is None:
        prefix = field_option.removeprefix("--").removesuffix("field")
        return ReadOptions(kind, layout, dict(fields or {}), delimiter, split, prefix)
    if (kind, layout, dict(fields or {}), delimiter, split) != (None, "alpaca", {}, None, None):
        raise TypeError("pass the reading options as options= or as keywords, not both")
    return options
