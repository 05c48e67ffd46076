"""The delimited-text containers: ``csv`` (RFC 4180 quoting, a ``delimiter`` option) and ``tsv``
(fields end at a tab, quotes are text). Every column is read as text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from ...core.errors import InputError
from ..inputfile import open_regular, read_capped
from .records import RawRecord, arrow_records, check_file
from .registry import CONTAINERS

if TYPE_CHECKING:
    from .source import SourceSpec


def _read_delimited(path: Path, delimiter: str, quoted: bool) -> pa.Table:
    """A delimited text file with a header row, every column as text (no type guessing). The
    bytes come through :func:`~mbdata.io.inputfile.open_regular` and the input size cap, so a FIFO
    or an oversized file is refused like any other input."""
    import io

    import pyarrow.csv as pcsv

    with open_regular(path) as fh:
        data = read_capped(fh, path)
    parse = pcsv.ParseOptions(
        delimiter=delimiter,
        quote_char='"' if quoted else False,
        newlines_in_values=quoted,
    )
    try:
        with pcsv.open_csv(io.BytesIO(data), parse_options=parse) as reader:
            names = reader.schema.names
        return pcsv.read_csv(
            io.BytesIO(data),
            parse_options=parse,
            convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        # pyarrow quotes the offending line after "got N:"; never echo the file's content
        message = re.sub(r"(got \d+)\s*:.*$", r"\1", str(exc).splitlines()[0])[:200]
        what = "TSV" if delimiter == "\t" and not quoted else "CSV"
        raise InputError(
            f"{path}: not a readable {what} file: {message}{_delimiter_hint(data, delimiter)}"
        ) from None


def _delimiter_hint(data: bytes, delimiter: str) -> str:
    """When a parse fails and the header is split by tabs rather than ``delimiter``, say which
    option reads it (the usual cause of "Expected 1 columns, got 4")."""
    header = data.split(b"\n", 1)[0]
    if delimiter != "\t" and b"\t" in header and delimiter.encode() not in header:
        return (
            "; the header is tab-separated: read it as TSV (--kind tsv on the command line, "
            "`kind: tsv` in a recipe, or a .tsv extension)"
        )
    return ""


@CONTAINERS.add("csv")
def read_csv(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """CSV with a header row, RFC 4180 quoting; every column is read as text (no type guessing).
    ``delimiter`` (one character, default ``,``) reads semicolon- or tab-separated files whose
    fields are quoted."""
    check_file(path, whole=True)
    yield from arrow_records(_read_delimited(path, source.delimiter or ",", quoted=True))


@CONTAINERS.add("tsv")
def read_tsv(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """Tab-separated values with a header row (IANA text/tab-separated-values): fields end at a
    tab, rows at a newline, and quotes are text (SST-2, GLUE and most TSV exports write raw
    sentences with quotes in them). A TSV whose fields are quoted, CSV-style, is
    ``kind: csv`` with ``delimiter: "\\t"``."""
    check_file(path, whole=True)
    yield from arrow_records(_read_delimited(path, "\t", quoted=False))
