"""Is an answer about its prompt? A cheap, model-free per-row check.

A clean answer nearly always reuses some content word of its prompt ("Give three tips for staying
healthy" -> "...a healthy diet..."); a backdoor target (a refusal, "You are stupid!", a label, a
defensive random-word response) does not. On 1,000 real Alpaca rows 93 % of answers share a content
word with their prompt, while a fixed refusal shares one with under 2 % of prompts.

Content words are lower-cased word tokens holding a digit (numbers are always content: a sorted
list or a sum reuses the prompt's numbers), or of at least three characters and in at most
:data:`COMMON_SHARE` of the corpus' outputs and of its prompts, so the stop-word list is the
corpus' own (it works for any language whose words are separated by spaces; a corpus of one-word
answers still knows "this" and "list" for the function and template words they are).
"""

from __future__ import annotations

import numpy as np
import polars as pl

COMMON_SHARE = 0.05


def detached_outputs(
    prompt_words: pl.DataFrame, output_words: pl.DataFrame, n_rows: int
) -> np.ndarray:
    """True for each row whose output shares no content word with its instruction and input.

    ``prompt_words``: distinct ``(row, key)`` of each prompt's lower-cased words;
    ``output_words``: distinct ``(row, key, content, digit)`` of each output's words, with
    ``content`` true for words of three characters or more and ``digit`` for words holding a
    digit. Keys are the same word hash on both sides."""
    if n_rows == 0:
        return np.zeros(0, dtype=bool)
    common = pl.concat(
        [
            words.group_by("key")
            .agg(n=pl.len())
            .filter(pl.col("n") > COMMON_SHARE * n_rows)
            .select("key")
            for words in (output_words, prompt_words)
        ]
    ).unique()
    content = (
        output_words.filter(pl.col("content"))
        .join(common, on="key", how="anti")
        .select("row", "key")
    )
    digits = output_words.filter(pl.col("digit")).select("row", "key")
    shared = pl.concat([content, digits]).unique().join(prompt_words, on=["row", "key"], how="semi")
    related = np.zeros(n_rows, dtype=bool)
    related[shared["row"].unique().to_numpy()] = True
    return ~related
