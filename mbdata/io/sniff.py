"""A source file's first bytes against its declared ``kind``: the check behind ``mb recipe
validate`` (issue 24: ``kind: jsonl`` on a JSON-array file validated ``ok`` and only the build
failed).

Only the first :data:`SNIFF_BYTES` bytes are read (through
:func:`~mbdata.io.inputfile.open_regular`), so validating a recipe costs the same for a 10 GB corpus
as for a small one. The checks are the unambiguous ones (a Parquet magic number, a gzip header, the
bracket a JSON array opens with, a tab-separated header); anything the first bytes cannot settle
is left to the reader, which fails with its own one-line error if the kind is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from .inputfile import open_regular

SNIFF_BYTES = 64 * 1024

_PARQUET = b"PAR1"
_GZIP = b"\x1f\x8b"
_ZIP = b"PK\x03\x04"


def _looks(head: bytes) -> str | None:
    """What the first bytes say the file is (a kind name, or a phrase for what no kind reads)."""
    if head.startswith(_PARQUET):
        return "parquet"
    if head.startswith(_GZIP):
        return "gzip"
    if head.startswith(_ZIP):
        return "zip"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        first, sep, rest = text.partition(b"\n")
        if not sep:
            return None  # one object, or a first line longer than the sniff: the reader decides
        try:
            json.loads(first)
        except (ValueError, RecursionError):
            return None  # an object spread over lines: JSON (or broken JSONL), not settled here
        return "jsonl" if rest.lstrip().startswith(b"{") else None
    header = text.split(b"\n", 1)[0]
    if b"\t" in header and b"," not in header:
        return "tsv"
    if b"," in header and b"\t" not in header:
        return "csv"
    return None


_PHRASES = {
    "parquet": "is a Parquet file (it starts with PAR1)",
    "gzip": "is gzip-compressed",
    "zip": "is a zip archive",
    "json": "looks like a JSON array",
    "jsonl": "looks like JSON Lines (one object per line)",
    "tsv": "looks tab-separated (its first line has tabs and no commas)",
    "csv": "looks comma-separated (its first line has commas and no tabs)",
}

_SNIFFED = ("jsonl", "json", "parquet", "csv", "tsv")


def kind_mismatch(path: str | Path, kind: str, delimiter: str | None = None) -> str | None:
    """A one-line reason why the file at ``path`` is not ``kind`` judging by its first bytes,
    ending with what to do, or None when they agree (or the first bytes cannot tell). Raises
    :class:`~mbdata.core.errors.InputError` if the file cannot be opened."""
    if kind not in _SNIFFED:
        return None
    with open_regular(path) as fh:
        head = fh.read(SNIFF_BYTES)
    looks = _looks(head)
    if looks is None or looks == kind:
        return None
    if kind == "csv" and looks == "tsv":
        header = head.removeprefix(b"\xef\xbb\xbf").lstrip().split(b"\n", 1)[0]
        if (delimiter or ",").encode("utf-8") in header:
            return None  # e.g. delimiter: "\t", or ";" on a header that has it
        return f'{_PHRASES[looks]}: use kind: tsv (or kind: csv with delimiter: "\\t")'
    if kind == "csv" and looks == "csv":
        return None
    if looks in ("gzip", "zip"):
        return f"{_PHRASES[looks]}: decompress it first (mb reads uncompressed files)"
    return f"{_PHRASES[looks]}: use kind: {looks}"
