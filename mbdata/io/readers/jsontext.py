"""JSON checks shared by the JSON Lines and JSON array containers: lone surrogates, and the value
errors of ``json.loads`` that are not syntax errors."""

from __future__ import annotations

import json
import re
from typing import Any

from .records import RowProblem

# A JSON escape of a UTF-16 surrogate: json.loads joins a valid pair, a lone one stays in the str
# and cannot be encoded as UTF-8 later (the rare lines that match are checked value by value).
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abAB]")


def not_unicode(record: Any) -> RowProblem | None:
    """The problem of a parsed record holding a lone surrogate (not valid Unicode), if any."""
    items = record.items() if isinstance(record, dict) else [("-", record)]
    for key, value in items:
        try:
            json.dumps([key, value], ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            field = key if isinstance(key, str) and key.isprintable() else "-"
            return RowProblem(
                "invalid_unicode",
                field,
                "a lone surrogate escape such as \\ud800 (not valid Unicode text)",
            )
    return None


def json_value_error(exc: ValueError) -> str:
    """A ValueError of json.loads that is not a syntax error: an integer past Python's
    4,300-digit conversion limit."""
    if "digits" in str(exc):
        return "an integer with more than 4,300 digits"
    return str(exc).splitlines()[0][:200]
