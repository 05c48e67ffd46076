"""Readers: every supported corpus format into the canonical schema.

One module per container (:mod:`.jsonl`, :mod:`.json_array`, :mod:`.delimited` for csv/tsv,
:mod:`.parquet`, :mod:`.hf` for hf_disk/hub, :mod:`.synthetic`) and per layout (:mod:`.alpaca`,
:mod:`.chat` for sharegpt/messages), each registering itself in :mod:`.registry` (the one list
behind ``--kind``, ``--layout`` and a recipe's ``kind:``/``layout:``); :mod:`.rows` is the row loop,
:mod:`.inputs` reads any path, :mod:`.options` holds the reading options every command shares.

A reader turns one :class:`~mbdata.recipe.SourceSpec` into canonical rows. Two independent choices
describe a source: the *container* (``kind``: json, jsonl, parquet, csv, tsv, hf_disk, hub,
synthetic) and the *layout* of a row (``alpaca``: instruction/input/output; ``sharegpt``: ``conversations`` of
from/value turns; ``messages``: OpenAI-style role/content turns). Containers yield raw records; a layout
maps a record to canonical fields, with per-source column renames from ``fields:``.

Rows are named everywhere by ``source_row``, their 0-based index in the input as read (skipped rows
included; blank JSONL lines are not rows); JSONL errors also give the 1-based line. A required column
missing from the first rows is one schema error listing the columns found. Bad rows raise
:class:`~mbdata.core.errors.InputError` counting all of them and naming the first five; with
``skip_bad_rows`` they are dropped, counted under a reason such as ``bad_row:missing:output`` and
returned as :class:`BadRow` records. ``lenient`` reads (audit, dedup) keep empty texts as data.
"""

from __future__ import annotations

# Registration order is the order of the registries' names (``--kind``/``--layout`` choices).
from . import alpaca, chat, delimited, hf, json_array, jsonl, parquet, synthetic  # noqa: F401  (layouts register themselves)  # noqa: F401  (containers)
from .alpaca import alpaca_layout
from .chat import layout_without_answer, messages_layout, sharegpt_layout
from .delimited import read_csv, read_tsv
from .hf import read_hf_disk, read_hub
from .inputs import (
    InputRead,
    batch_row_numbers,
    detect_kind,
    iter_input_batches,
    read_any,
    read_input,
)
from .json_array import read_json
from .jsonl import read_jsonl
from .options import ReadOptions
from .parquet import read_parquet
from .records import RawRecord, RowProblem
from .registry import CONTAINERS, EXTENSIONS, LAYOUT_FIELDS, LAYOUTS, file_kinds
from .rows import (
    BAD_ROWS_NAMED,
    BATCH_ROWS,
    SCHEMA_PROBE_ROWS,
    BadRow,
    ReadResult,
    RowStream,
    check_fields,
    iter_rows_batches,
    read_rows,
    rows_table,
)
from .source import SourceSpec
from .synthetic import read_synthetic

__all__ = [
    "BAD_ROWS_NAMED",
    "BATCH_ROWS",
    "CONTAINERS",
    "EXTENSIONS",
    "LAYOUTS",
    "LAYOUT_FIELDS",
    "SCHEMA_PROBE_ROWS",
    "BadRow",
    "InputRead",
    "RawRecord",
    "ReadOptions",
    "ReadResult",
    "RowProblem",
    "RowStream",
    "SourceSpec",
    "alpaca_layout",
    "batch_row_numbers",
    "check_fields",
    "detect_kind",
    "file_kinds",
    "iter_input_batches",
    "iter_rows_batches",
    "layout_without_answer",
    "messages_layout",
    "read_any",
    "read_csv",
    "read_hf_disk",
    "read_hub",
    "read_input",
    "read_json",
    "read_jsonl",
    "read_parquet",
    "read_rows",
    "read_synthetic",
    "read_tsv",
    "rows_table",
    "sharegpt_layout",
]
