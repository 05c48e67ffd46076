"""User-facing errors.

Every problem a user can fix (a bad recipe key, a malformed input row, a missing file) is raised as an
:class:`MBError` whose message is one line naming *where* (file, row, field or key path) and *what*.
The CLI prints the message and exits with :data:`EXIT_USER_ERROR`; library users catch the class.
Anything else that escapes is a bug in mbdefense and keeps its traceback.
"""

from __future__ import annotations

import re

EXIT_USER_ERROR = 2

# C0 and C1 control characters (NUL, ESC, ...), DEL, and lone surrogates: never printed raw.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str) -> str:
    """``text`` with control characters and lone surrogates shown as escapes (``\\x00``), so a
    name or value read from a file never reaches the terminal as raw bytes."""
    return _UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], text)


class MBError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    def __init__(self, message: str):
        super().__init__(printable(" ".join(str(message).split())))


class RecipeError(MBError):
    """The recipe (or any config block) is invalid; the message names the key path."""


class InputError(MBError):
    """An input file or row is unreadable; the message names the file, row and field."""


class BuildError(MBError):
    """A build cannot be done as asked (not enough rows, trigger collision, existing output...)."""


def where(path: str | None = None, row: int | None = None, field: str | None = None) -> str:
    """Format a location prefix like ``data.jsonl:17: field 'output'`` (row is 1-based for lines)."""
    parts = []
    if path is not None:
        parts.append(f"{path}:{row}" if row is not None else str(path))
    elif row is not None:
        parts.append(f"row {row}")
    if field is not None:
        parts.append(f"field '{field}'")
    return ": ".join(parts)
