"""What dedup compares: the normalised text of a field group, as an exact key and as one text.

Field groups (``fields:`` in the recipe):

* ``prompt``: ``system``, ``instruction``, ``input`` (what a model is asked);
* ``output``: ``output`` (what it is taught to answer);
* ``all``: every text field that enters the row id (``system``, ``instruction``, ``input``,
  ``output``, ``triggered_instruction``, ``triggered_input``, ``triggered_output``).

Normalisation is :func:`mbdata.io.schema.normalize_text` (NFKC, case-fold, whitespace collapsed). The
exact key of a row for a group is :func:`mbdata.io.schema.row_id` of the row restricted to the group's
fields, as a 128-bit integer pair: for ``all`` it *is* the row id, for ``prompt`` it is
:func:`mbdata.io.schema.prompt_key`, so dedup agrees with the build's own leak checks.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import xxhash

from ..io.schema import normalize_text

ID_FIELDS = (
    "system",
    "instruction",
    "input",
    "output",
    "triggered_instruction",
    "triggered_input",
    "triggered_output",
)
FIELD_GROUPS = {
    "prompt": ("system", "instruction", "input"),
    "output": ("output",),
    "all": ID_FIELDS,
}


def group_fields(group: str) -> tuple[str, ...]:
    try:
        return FIELD_GROUPS[group]
    except KeyError:
        raise ValueError(
            f"unknown field group {group!r}; expected one of {', '.join(FIELD_GROUPS)}"
        ) from None


@dataclasses.dataclass(frozen=True)
class NormalizedRows:
    """A batch of rows reduced to what dedup needs: exact keys and the text to shingle."""

    keys: np.ndarray  # (n, 2) uint64: the 128-bit exact key
    texts: list[str]  # normalised group fields joined by one space ("" when all empty)


def _normalized_column(table: pa.Table, name: str) -> list[str | None] | None:
    """Normalised values of one column (None for nulls), or None when every value is null."""
    column = table.column(name)
    if column.null_count == len(column):
        return None
    return [None if v is None else normalize_text(v) for v in column.to_pylist()]


def normalize_rows(table: pa.Table, group: str) -> NormalizedRows:
    """Exact keys and near-dedup texts of every row of ``table`` for field group ``group``."""
    fields = group_fields(group)
    columns = [_normalized_column(table, name) if name in fields else None for name in ID_FIELDS]
    n = table.num_rows
    # Exactly the bytes mbdata.io.schema.row_id hashes: per field b"\x00" when null (or outside the
    # group) or b"\x01" + normalised UTF-8, joined by b"\x1f" (tests pin the equality).
    digests = []
    texts = []
    for i in range(n):
        pieces = []
        parts = []
        for column in columns:
            value = None if column is None else column[i]
            if value is None:
                pieces.append(b"\x00")
            else:
                pieces.append(b"\x01" + value.encode("utf-8"))
                if value:
                    parts.append(value)
        digests.append(xxhash.xxh3_128_digest(b"\x1f".join(pieces)))
        texts.append(parts[0] if len(parts) == 1 else " ".join(parts))
    keys = np.frombuffer(b"".join(digests), dtype=">u8").astype(np.uint64).reshape(n, 2)
    return NormalizedRows(keys=keys, texts=texts)


def key_hex(key: np.ndarray) -> str:
    """The 32-hex-digit form of one exact key (equals the row id for field group ``all``)."""
    return f"{int(key[0]):016x}{int(key[1]):016x}"
