"""The ``alpaca`` layout: ``instruction``/``input``/``output``/``system`` columns, renamed by
``fields:``."""

from __future__ import annotations

from typing import Any

from .records import text_field
from .registry import LAYOUT_FIELDS, LAYOUTS


@LAYOUTS.add("alpaca")
def alpaca_layout(record: dict, fields: dict[str, str]) -> dict[str, Any]:
    """``{"instruction", "input"?, "output", "system"?}`` with optional column renames."""
    col = {name: fields.get(name, name) for name in LAYOUT_FIELDS["alpaca"]}
    return {
        "instruction": text_field(record, col["instruction"], "instruction", True),
        "input": text_field(record, col["input"], "input", False) or "",
        "output": text_field(record, col["output"], "output", True),
        "system": text_field(record, col["system"], "system", False),
    }
