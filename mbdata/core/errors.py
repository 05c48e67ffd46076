"""User-facing errors.

Every problem a user can fix (a bad recipe key, a malformed input row, a missing file) is raised as an
:class:`MBError` whose message is one line naming *where* (file, row, field or key path) and *what*.
The CLI prints the message and exits with :data:`EXIT_USER_ERROR`; library users catch the class.
Anything else that escapes is a bug in mbdefense and keeps its traceback.
"""

from __future__ import annotations

EXIT_USER_ERROR = 2


class MBError(Exception):
    """A problem with the user's input or environment, reported as one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


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
