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
import pyarrow.compute as pc
import xxhash

from ..io.schema import ID_FIELDS, normalize_array

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


def normalize_rows(table: pa.Table, group: str) -> NormalizedRows:
    """Exact keys and near-dedup texts of every row of ``table`` for field group ``group``.

    Column-wise (:func:`mbdata.io.schema.normalize_array`); the per-row loop is one join and one
    digest."""
    fields = group_fields(group)
    n = table.num_rows
    marked: list[pa.Array | pa.ChunkedArray | None] = []
    parts: list[pa.Array | pa.ChunkedArray] = []
    for name in ID_FIELDS:
        column = table.column(name) if name in fields else None
        if column is None or column.null_count == len(column):
            marked.append(None)
            continue
        norm = normalize_array(column)
        # Exactly the bytes mbdata.io.schema.row_id hashes: per field b"\x00" when null (or outside
        # the group) or b"\x01" + normalised UTF-8, joined by b"\x1f" (tests pin the equality).
        marked.append(pc.fill_null(pc.binary_join_element_wise("\x01", norm, ""), "\x00"))
        parts.append(pc.if_else(pc.equal(norm, ""), pa.scalar(None, pa.string()), norm))
    null_mark = pa.array(["\x00"] * n, pa.string())
    joined = pc.binary_join_element_wise(
        *[null_mark if m is None else m for m in marked], "\x1f"
    ).cast(pa.binary())
    digest = xxhash.xxh3_128_digest
    keys = np.frombuffer(b"".join(map(digest, joined.to_pylist())), dtype=">u8")
    keys = keys.astype(np.uint64).reshape(n, 2)
    if not parts:
        texts = [""] * n
    else:
        # a leading "" column: Arrow drops rows whose inputs are all null under "skip"
        lead = pa.array([""] * n, pa.string())
        text = pc.binary_join_element_wise(lead, *parts, " ", null_handling="skip")
        texts = pc.utf8_slice_codeunits(text, 1).to_pylist()
    return NormalizedRows(keys=keys, texts=texts)


def key_hex(key: np.ndarray) -> str:
    """The 32-hex-digit form of one exact key (equals the row id for field group ``all``)."""
    return f"{int(key[0]):016x}{int(key[1]):016x}"
