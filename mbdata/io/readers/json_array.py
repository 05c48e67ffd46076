"""The ``json`` container: a JSON array of objects (or an object holding one list), read whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import InputError
from ...core.limits import MAX_JSON_DEPTH, json_too_deep
from ..inputfile import open_regular, read_capped
from .jsontext import SURROGATE_ESCAPE, json_value_error, not_unicode
from .records import RawRecord, RowProblem
from .registry import CONTAINERS

if TYPE_CHECKING:
    from .source import SourceSpec


@CONTAINERS.add("json")
def read_json(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """A JSON array of objects (or an object holding one list, e.g. ``{"data": [...]}``)."""
    with open_regular(path) as fh:
        data = read_capped(fh, path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}:{line}: not valid UTF-8 (byte {exc.start})") from None
    try:
        parsed = json.loads(text)
    except RecursionError:
        raise InputError(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text:
            raise InputError(
                f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); this looks like JSON "
                "Lines: use kind: jsonl"
            ) from None
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise InputError(f"{path}: invalid JSON: {json_value_error(exc)}") from None
    check_unicode = SURROGATE_ESCAPE.search(data) is not None
    if isinstance(parsed, dict):
        lists = [v for v in parsed.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(f"{path}: expected a JSON array of rows (or an object with one list)")
        parsed = lists[0]
    if not isinstance(parsed, list):
        raise InputError(f"{path}: expected a JSON array of rows, got {type(parsed).__name__}")
    for i, record in enumerate(parsed):
        if json_too_deep(record):
            record = RowProblem(
                "too_deep", "-", f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
            )
        elif not isinstance(record, dict):
            record = RowProblem(
                "not_object", "-", f"expected an object, got {type(record).__name__}"
            )
        elif check_unicode:
            record = not_unicode(record) or record
        yield i + 1, i, record
