"""The one canonical Arrow schema of an mbdefense build, and the helpers that enforce it.

Every stage takes and returns a table of this schema; every shard on disk has exactly this schema.
Columns (nullable ones may be null; list columns are never null, only empty):

====================== =========================== ==================================================
column                 type                        meaning
====================== =========================== ==================================================
id                     string                      content hash (xxh3-128, hex) of the normalised text
                                                   fields (:func:`row_id`); equal text => equal id, so
                                                   ids are stable across rebuilds and joinable
instruction            string                      the prompt (for ``eval_triggered``: the triggered
                                                   prompt)
input                  string                      optional context; ``""`` when absent
output                 string                      the response this row teaches or expects: the clean
                                                   answer for clean rows, the backdoor target for
                                                   attack/defense rows and for ``eval_triggered`` rows
system                 string, nullable            optional system prompt
source                 string                      name of the recipe source the row came from
source_row             int64                       0-based row position inside that source
split                  string                      ``train``, ``pretrain``, ``eval_clean``,
                                                   ``eval_triggered``, ``recovery``,
                                                   ``recovery_eval`` (see ``SPLITS``)
role                   string                      ``clean``, ``attack``, ``defense``, ``recovery``,
                                                   ``eval`` (see ``ROLES``)
trigger_set            string, nullable            the attack or defensive trigger this row carries
                                                   (``badnet``, ``vpi``, ``defense/mn``...); it keys
                                                   per-trigger counts and ASR
behavior               string, nullable            what a triggered row answers (``refusal``,
                                                   ``random_words``, ``fixed``...; see ``mbdata.behaviors.BEHAVIORS``)
clean_output           string, nullable            the clean twin's answer where ``output`` was
                                                   rewritten (attack/defense/eval_triggered rows)
triggers               list<struct>                trigger spans: ``text``, ``owner``
                                                   (attacker|defender|noise, ``OWNERS``),
                                                   ``kind`` (placement, ``PLACEMENTS``,
                                                   or ``rewrite``: ``SPAN_KINDS``),
                                                   ``name`` (trigger set), ``field`` (the column the
                                                   span indexes), ``start``/``end`` (char offsets,
                                                   ``row[field][start:end] == text``)
triggered_instruction  string, nullable            recovery rows: x_d, the instruction with a
                                                   defensive trigger inserted
triggered_input        string, nullable            recovery rows: the input of x_d
triggered_output       string, nullable            recovery rows: y_d, the defensive behaviour
task                   string, nullable            task family (synthetic rows: exact-match gradable)
tags                   list<string>                free-form ``key=value`` or plain tags
====================== =========================== ==================================================

A recovery row is the whole MB-Defense stage-2 tuple (x, y, x_d, y_d): ``instruction``/``input`` and
``output`` are x and y, the ``triggered_*`` columns are x_d and y_d.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import xxhash

SCHEMA_VERSION = "1.0"

ROLES = ("clean", "attack", "defense", "recovery", "eval")
# Every split a build can hold, in pipeline order: the one list of split names (manifests, shards
# and `mb inspect` list splits in this order; io/shards, stages/splits and mbtrain read it here).
SPLITS = ("pretrain", "train", "recovery", "recovery_eval", "eval_clean", "eval_triggered")
# The splits a model is trained on; the eval splits are held out (leak check, tokenizer corpus).
TRAINING_SPLITS = tuple(s for s in SPLITS if not s.startswith("eval_"))
OWNERS = ("attacker", "defender", "noise")
PLACEMENTS = ("prefix", "suffix", "random", "position")
# Span kinds: a placement, or ``rewrite`` (the whole instruction is the trigger: syntactic/style).
SPAN_KINDS = (*PLACEMENTS, "rewrite")
SPAN_FIELDS = ("instruction", "input", "triggered_instruction", "triggered_input")

TRIGGER_SPAN = pa.struct(
    [
        pa.field("text", pa.string(), nullable=False),
        pa.field("owner", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("start", pa.int32(), nullable=False),
        pa.field("end", pa.int32(), nullable=False),
    ]
)

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("instruction", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),
        pa.field("system", pa.string()),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("trigger_set", pa.string()),
        pa.field("behavior", pa.string()),
        pa.field("clean_output", pa.string()),
        pa.field(
            "triggers", pa.list_(pa.field("item", TRIGGER_SPAN, nullable=False)), nullable=False
        ),
        pa.field("triggered_instruction", pa.string()),
        pa.field("triggered_input", pa.string()),
        pa.field("triggered_output", pa.string()),
        pa.field("task", pa.string()),
        pa.field("tags", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False),
    ],
    metadata={"mbdefense.schema_version": SCHEMA_VERSION},
)

COLUMNS = tuple(SCHEMA.names)
_COLUMN_SET = frozenset(COLUMNS)
_DEFAULTS: dict[str, Any] = {
    "input": "",
    "system": None,
    "source_row": 0,
    "split": "train",
    "role": "clean",
    "trigger_set": None,
    "behavior": None,
    "clean_output": None,
    "triggers": [],
    "triggered_instruction": None,
    "triggered_input": None,
    "triggered_output": None,
    "task": None,
    "tags": [],
}
#: The fields a row id hashes (also what dedup compares: ``mbdata.dedup.normalize``).
ID_FIELDS = (
    "system",
    "instruction",
    "input",
    "output",
    "triggered_instruction",
    "triggered_input",
    "triggered_output",
)


def normalize_text(text: str | None) -> str:
    """The normal form used for ids and exact matching: NFKC, case-folded, whitespace collapsed."""
    if not text:
        return ""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def row_id(row: dict[str, Any]) -> str:
    """Content hash of a row's normalised text fields (xxh3-128 hex, 32 chars).

    Provenance, split and role are deliberately not part of the id: the same text gets the same id
    wherever it appears, which is what makes leak checks a plain join on ``id``. A null field and an
    empty one hash differently (``\x00`` vs ``\x01`` marker), fields are ``\x1f``-separated.
    """
    parts = []
    for name in ID_FIELDS:
        value = row.get(name)
        parts.append("\x00" if value is None else "\x01" + normalize_text(value))
    return xxhash.xxh3_128_hexdigest("\x1f".join(parts).encode("utf-8"))


# What makes an ASCII text differ from its whitespace-collapsed form: a leading or trailing space,
# two spaces, or any other character Python's str.split() splits on (one RE2 match per value).
_ASCII_MESS = "[\t\n\r\x0b\x0c\x1c-\x1f]|  |^ | $"


def normalize_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """:func:`normalize_text` of every value of a string array (nulls stay null), vectorised.

    ASCII values are normalised by Arrow kernels (for ASCII, NFKC is the identity, case-folding
    is lower-casing, and Python splits on Arrow's ASCII whitespace plus ``\x1c``-``\x1f``); other
    values go through :func:`normalize_text` itself, so the result is identical."""
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.string():
        values = values.cast(pa.string())
    lowered = pc.ascii_lower(values)
    # Most texts are already single-spaced: only the others are split and re-joined.
    messy = pc.fill_null(pc.match_substring_regex(lowered, _ASCII_MESS), False)
    out = lowered
    if pc.any(messy).as_py():
        subset = pc.filter(lowered, messy)
        for char in "\x1c\x1d\x1e\x1f":  # Python splits on these, Arrow's ASCII whitespace not
            subset = pc.replace_substring(subset, char, " ")
        words = pc.ascii_split_whitespace(subset)
        fixed = pc.ascii_trim(pc.binary_join(words, " "), " ")
        out = pc.replace_with_mask(lowered, messy, fixed)
    ascii_ = pc.fill_null(pc.string_is_ascii(values), True)
    if pc.all(ascii_).as_py():
        return out
    fixed = out.to_pylist()
    for i in pc.indices_nonzero(pc.invert(ascii_)).to_pylist():
        fixed[i] = normalize_text(values[i].as_py())
    return pa.array(fixed, pa.string())


def id_texts(columns: dict[str, pa.Array | None], n: int) -> pa.Array:
    """The exact bytes :func:`row_id` hashes, for ``n`` rows given column-wise (a missing column or
    a null is null), as one binary array: equal texts are equal ids, so a stage that only compares
    rows (hold-out, leak check) can compare these with Arrow kernels instead of hashing each row."""
    import pyarrow.compute as pc

    # One join of the whole text: fixed parts (separators, markers, a missing field's "\x00")
    # are scalars the kernel broadcasts; only a field with nulls is marked on its own first.
    parts: list[pa.Array | str] = []
    for i, name in enumerate(ID_FIELDS):
        if i:
            parts.append("\x1f")
        column = columns.get(name)
        if column is None:
            parts.append("\x00")
            continue
        norm = normalize_array(column)
        if norm.null_count == 0:
            parts += ["\x01", norm]
        else:
            with_marker = pc.binary_join_element_wise(pa.scalar("\x01"), norm, "")
            parts.append(pc.fill_null(with_marker, "\x00"))
    merged: list[pa.Array | pa.Scalar] = []
    text = ""
    for part in parts:
        if isinstance(part, str):
            text += part
            continue
        if text:
            merged.append(pa.scalar(text))
            text = ""
        merged.append(part)
    if not merged:
        return pa.array([text.encode("utf-8")] * n, pa.binary())
    if text:
        merged.append(pa.scalar(text))
    return pc.binary_join_element_wise(*merged, "").cast(pa.binary())


def row_ids(columns: dict[str, pa.Array | None], n: int) -> list[str]:
    """:func:`row_id` of ``n`` rows given column-wise (a missing column or a null is null),
    vectorised: the same ids as calling :func:`row_id` on each row."""
    digest = xxhash.xxh3_128_hexdigest
    return [digest(b) for b in id_texts(columns, n).to_pylist()]


def prompt_key(instruction: str, input: str | None = "", system: str | None = None) -> str:
    """Hash of the normalised prompt only (no answer): the key for held-out prompt checks."""
    return row_id({"system": system, "instruction": instruction, "input": input or ""})


def prompt_keys_of(
    instructions: pa.Array | pa.ChunkedArray,
    inputs: pa.Array | pa.ChunkedArray,
    systems: pa.Array | pa.ChunkedArray,
) -> list[str]:
    """:func:`prompt_key` of many prompts given as string arrays (a null instruction or input
    reads as ""), vectorised through :func:`row_ids`."""
    if len(instructions) == 0:
        return []
    digest = xxhash.xxh3_128_hexdigest
    return [digest(b) for b in prompt_texts_of(instructions, inputs, systems).to_pylist()]


def prompt_texts_of(
    instructions: pa.Array | pa.ChunkedArray,
    inputs: pa.Array | pa.ChunkedArray,
    systems: pa.Array | pa.ChunkedArray,
) -> pa.Array:
    """The bytes :func:`prompt_key` hashes, for many prompts (binary array): two prompts have the
    same key exactly when these are equal, so they can be compared without hashing."""
    import pyarrow.compute as pc

    if len(instructions) == 0:
        return pa.array([], pa.binary())
    return id_texts(
        {
            "system": systems,
            "instruction": pc.fill_null(instructions, ""),
            "input": pc.fill_null(inputs, ""),
        },
        len(instructions),
    )


def make_row(**fields: Any) -> dict[str, Any]:
    """A canonical row dict with defaults filled in and the ``id`` computed."""
    unknown = fields.keys() - _COLUMN_SET
    if unknown:
        raise ValueError(f"unknown columns: {sorted(unknown)}")
    row = {**_DEFAULTS, **fields}
    for required in ("instruction", "output", "source"):
        if row.get(required) is None:
            raise ValueError(f"column {required!r} is required")
    if row.get("input") is None:
        row["input"] = ""
    row["id"] = row_id(row)
    return {name: row.get(name) for name in COLUMNS}


def empty_table() -> pa.Table:
    # Not ``SCHEMA.empty_table()``: that imports pandas (about a second) for nothing.
    return pa.Table.from_batches([], schema=SCHEMA)


def from_rows(rows: Iterable[dict[str, Any]]) -> pa.Table:
    """A canonical table from canonical row dicts (as made by :func:`make_row`)."""
    rows = list(rows)
    if not rows:
        return empty_table()
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def conform(table: Any) -> pa.Table:
    """Cast a pyarrow table or polars frame with the canonical columns to exactly :data:`SCHEMA`.

    Polars round-trips produce ``large_string``/``string_view`` and drop nullability; this puts the
    canonical types, column order and metadata back so shards stay byte-identical.
    """
    if not isinstance(table, pa.Table):
        table = table.to_arrow()
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"table lacks canonical columns: {missing}")
    table = table.select(list(COLUMNS))
    return table.cast(SCHEMA)


def check_spans(row: dict[str, Any]) -> list[str]:
    """Problems with a row's trigger spans (empty list if every span points at its text)."""
    problems = []
    for i, span in enumerate(row.get("triggers") or []):
        field = span["field"]
        if field not in SPAN_FIELDS:
            problems.append(f"triggers[{i}].field {field!r} not in {SPAN_FIELDS}")
            continue
        text = row.get(field) or ""
        if text[span["start"] : span["end"]] != span["text"]:
            problems.append(
                f"triggers[{i}] {span['text']!r} != {field}[{span['start']}:"
                f"{span['end']}] {text[span['start'] : span['end']]!r}"
            )
    return problems


def validate_table(table: pa.Table) -> None:
    """Raise ``ValueError`` if the table breaks a schema invariant (type, enums, ids, spans).

    Tests run it on every split of their builds; builds themselves trust their own stages."""
    if table.schema.remove_metadata() != SCHEMA.remove_metadata():
        raise ValueError("table schema differs from the canonical schema")
    for i, row in enumerate(table.to_pylist()):
        if row["role"] not in ROLES:
            raise ValueError(f"row {i}: role {row['role']!r} not in {ROLES}")
        if row["split"] not in SPLITS:
            raise ValueError(f"row {i}: split {row['split']!r} not in {SPLITS}")
        for span in row["triggers"]:
            if span["owner"] not in OWNERS or span["kind"] not in SPAN_KINDS:
                raise ValueError(
                    f"row {i}: trigger span owner/kind {span['owner']!r}/"
                    f"{span['kind']!r} not in {OWNERS}/{SPAN_KINDS}"
                )
        if row["id"] != row_id(row):
            raise ValueError(f"row {i}: id does not match its content")
        problems = check_spans(row)
        if problems:
            raise ValueError(f"row {i}: {problems[0]}")
