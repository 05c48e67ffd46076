"""The audit's corpus statistics as mergeable counts: computed per batch of rows and summed.

The vocabulary statistics the signals read (:attr:`.corpus.Corpus.prompt_df`: in how many prompts
each lower-cased word occurs; :attr:`.corpus.Corpus.output_df`: in how many answers) are sums over
rows, and a row never spans two batches, so per-batch counts added up key by key are exactly the
whole-corpus counts. That is what lets the audit compute them where the rows are: batch after batch
in one process, or as one executor task per batch (``--engine process|ray``), merged on the
driver (:func:`corpus_counts`). Mining itself (candidate phrases, clusters, scores) needs every row
at once and runs on the driver.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pyarrow as pa

Counts = tuple[np.ndarray, np.ndarray]  # sorted distinct uint64 keys, int64 count per key

_PROMPT, _OUTPUT = 0, 1


def count_keys(keys: np.ndarray) -> Counts:
    """Sorted distinct keys and how often each occurs."""
    keys = np.sort(np.asarray(keys, dtype=np.uint64))
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.diff(np.r_[starts, len(keys)]).astype(np.int64)


def merge_counts(parts: list[Counts]) -> Counts:
    """Counts of several batches added up key by key (the same as counting all rows at once)."""
    keys = np.concatenate([k for k, _ in parts]) if parts else np.zeros(0, dtype=np.uint64)
    counts = np.concatenate([c for _, c in parts]) if parts else np.zeros(0, dtype=np.int64)
    if not len(keys):
        return keys.astype(np.uint64), counts.astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys, counts = keys[order], counts[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.add.reduceat(counts, starts).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class CorpusCounts:
    """Rows seen and the per-word row counts of prompts and answers (mergeable)."""

    rows: int
    prompt_words: Counts
    output_words: Counts

    def merge(self, other: CorpusCounts) -> CorpusCounts:
        return CorpusCounts(
            self.rows + other.rows,
            merge_counts([self.prompt_words, other.prompt_words]),
            merge_counts([self.output_words, other.output_words]),
        )


def prompt_word_keys(tokens_row: np.ndarray, tokens_lc: np.ndarray) -> pl.DataFrame:
    """Distinct ``(row, key)`` of each prompt's lower-cased words."""
    return pl.DataFrame({"row": tokens_row, "key": tokens_lc}).unique()


def batch_counts(batch: pa.Table) -> pa.Table:
    """One batch's counts as a table ``side`` (0 prompts, 1 answers), ``key``, ``count`` (a pure
    per-batch step; the Ray engine runs it in ``map_batches``)."""
    from .corpus import _output_words
    from .outputs import normalize_outputs
    from .tokens import tokenize_prompts

    def text(name: str) -> pl.Series:
        if name not in batch.column_names:
            return pl.Series(name, [""] * batch.num_rows, dtype=pl.String)
        series = pl.from_arrow(batch.column(name))
        assert isinstance(series, pl.Series)  # a column, not a table
        return series.cast(pl.String).fill_null("")

    tokens = tokenize_prompts(text("instruction"), text("input"))
    prompt = count_keys(prompt_word_keys(tokens.row, tokens.lc)["key"].to_numpy())
    output = count_keys(_output_words(normalize_outputs(text("output")))["key"].to_numpy())
    sides = [np.full(len(prompt[0]), _PROMPT, np.int8), np.full(len(output[0]), _OUTPUT, np.int8)]
    return pa.table(
        {
            "side": np.concatenate(sides),
            "key": np.concatenate([prompt[0], output[0]]).astype(np.uint64),
            "count": np.concatenate([prompt[1], output[1]]).astype(np.int64),
        }
    )


def _from_table(part: pa.Table, rows: int) -> CorpusCounts:
    side = part.column("side").to_numpy()
    key = part.column("key").to_numpy()
    count = part.column("count").to_numpy()
    return CorpusCounts(
        rows,
        (key[side == _PROMPT], count[side == _PROMPT]),
        (key[side == _OUTPUT], count[side == _OUTPUT]),
    )


def corpus_counts(
    instructions: pl.Series,
    inputs: pl.Series,
    outputs: pl.Series,
    *,
    engine: str = "local",
    batch_rows: int | None = None,
) -> CorpusCounts:
    """The corpus' word counts, computed per batch of rows on ``engine`` and merged."""
    from ..engines.batches import BATCH_ROWS, map_table

    table = pa.table(
        {
            "instruction": instructions.to_arrow(),
            "input": inputs.to_arrow(),
            "output": outputs.to_arrow(),
        }
    )
    size = batch_rows or BATCH_ROWS
    per_batch = map_table(table, batch_counts, engine=engine, batch_rows=size)
    merged = _from_table(per_batch, table.num_rows)
    return CorpusCounts(
        merged.rows,
        merge_counts([merged.prompt_words]),
        merge_counts([merged.output_words]),
    )
