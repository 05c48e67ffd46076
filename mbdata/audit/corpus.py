"""Everything the audit derives from a corpus once, before mining: tokens, n-grams, output
clusters, detached answers and vocabulary counts."""

from __future__ import annotations

import dataclasses
from typing import overload

import numpy as np
import polars as pl

from .config import AuditConfig
from .counts import CorpusCounts, prompt_word_keys
from .outputs import OutputClusters, cluster_outputs, normalize_outputs
from .relevance import COMMON_SHARE, detached_outputs
from .tokens import PromptTokens, ngram_table, row_bits, tokenize_prompts


def _counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct keys and how often each occurs (a sort, not a hash table: faster here)."""
    keys = np.sort(keys)
    if not len(keys):
        return keys, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return keys[starts], np.diff(np.r_[starts, len(keys)])


def _lookup_many(table: tuple[np.ndarray, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """Counts of many keys at once (0 where absent)."""
    sorted_keys, counts = table
    if not len(sorted_keys):
        return np.zeros(len(keys), dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, counts[at], 0)


def _lookup(table: tuple[np.ndarray, np.ndarray], key: int) -> int:
    keys, counts = table
    i = int(np.searchsorted(keys, np.uint64(key)))
    return int(counts[i]) if i < len(keys) and keys[i] == np.uint64(key) else 0


@dataclasses.dataclass
class Corpus:
    """The audited rows, analysed. Row numbers are positions in the audited table."""

    instructions: pl.Series
    inputs: pl.Series
    outputs: pl.Series
    tokens: PromptTokens
    occurrences: pl.DataFrame
    clusters: OutputClusters
    detached: np.ndarray
    prompt_df: tuple[np.ndarray, np.ndarray]  # lower-cased token hash -> prompts containing it
    output_df: tuple[np.ndarray, np.ndarray]  # lower-cased token hash -> outputs containing it
    output_pairs: np.ndarray  # sorted (word key high bits | row) of outputs
    output_keys: np.ndarray  # output word keys, grouped by row ...
    output_offsets: np.ndarray  # ... row i's are output_keys[off[i]:off[i+1]]
    _token_unusual: np.ndarray | None = dataclasses.field(default=None, repr=False)

    @property
    def n_rows(self) -> int:
        return self.tokens.n_rows

    def field_text(self, row: int, field: int) -> str:
        return (self.instructions if field == 0 else self.inputs)[row] or ""

    def token_unusualness(self) -> np.ndarray:
        """Per prompt token: its prompts / (prompts + outputs) count ratio (0 for punctuation);
        computed once, vectorised."""
        if self._token_unusual is None:
            in_prompts = _lookup_many(self.prompt_df, self.tokens.lc).astype(np.float64)
            in_outputs = _lookup_many(self.output_df, self.tokens.lc).astype(np.float64)
            word = self.tokens.text.str.contains(r"^\w").to_numpy()
            ratio = np.divide(
                in_prompts,
                in_prompts + in_outputs,
                out=np.zeros_like(in_prompts),
                where=in_prompts > 0,
            )
            self._token_unusual = np.where(word, ratio, 0.0)
        return self._token_unusual

    @overload
    def unusualness(self, start: int, n: int) -> float: ...
    @overload
    def unusualness(self, start: np.ndarray, n: int | np.ndarray) -> np.ndarray: ...
    def unusualness(self, start: int | np.ndarray, n: int | np.ndarray) -> float | np.ndarray:
        """How much more the most prompt-only word of the phrase at token ``start`` (``n``
        tokens) occurs in prompts than in answers (arrays give one value per phrase).

        A planted trigger lives only in prompts (1.0); ordinary words also turn up in the answers
        that discuss them (0.5 when as frequent in both). Punctuation is ignored."""
        per_token = self.token_unusualness()
        start = np.asarray(start, dtype=np.int64)
        n = np.asarray(n, dtype=np.int64)
        best = np.zeros(start.shape, dtype=np.float64)
        for k in range(int(n.max()) if n.size else 0):
            inside = k < n
            index = np.minimum(start + k, len(per_token) - 1)
            best = np.where(inside, np.maximum(best, per_token[index]), best)
        return float(best) if best.ndim == 0 else best

    def output_words_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The distinct answer words of ``rows``: (word keys, the row of each)."""
        starts = self.output_offsets[rows]
        sizes = self.output_offsets[rows + 1] - starts
        index = np.repeat(starts - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(sizes.sum())
        return self.output_keys[index], np.repeat(rows, sizes)

    def output_frequency(self, keys: np.ndarray) -> np.ndarray:
        """How many answers contain each word key."""
        return _lookup_many(self.output_df, keys)

    def output_word(self, key: int, row: int) -> str:
        """The text of answer word ``key`` as it appears in ``row``'s normalised answer."""
        words = normalize_outputs(pl.Series([self.outputs[row]])).str.split(" ").explode()
        match = words.filter(words.hash(seed=7) == key)
        return match[0] if len(match) else ""

    def copies(self, rows: np.ndarray, start: int, n: int) -> np.ndarray:
        """Mask of ``rows`` whose answer contains a content word of the phrase at token ``start``
        (``n`` tokens): a number, or a word of three letters or more that is common neither in
        answers nor in prompts (see :mod:`.relevance`). Such an answer copies the phrase ("the
        smallest of 4, 0, 7" -> "0"), so the phrase is part of the question, not a trigger."""
        keys = []
        for i in range(start, start + n):
            text = self.tokens.text[i]
            digit = any(ch.isdigit() for ch in text)
            key = int(self.tokens.lc[i])
            common = COMMON_SHARE * self.n_rows
            if digit or (
                len(text) >= 3
                and text[:1].isalnum()
                and _lookup(self.output_df, key) <= common
                and _lookup(self.prompt_df, key) <= common
            ):
                keys.append(key)
        out = np.zeros(len(rows), dtype=bool)
        for key in keys:
            probe = _packed(np.full(len(rows), key, dtype=np.uint64), rows, self.n_rows)
            at = np.searchsorted(self.output_pairs, probe)
            at = np.minimum(at, len(self.output_pairs) - 1)
            out |= self.output_pairs[at] == probe if len(self.output_pairs) else False
        return out


def _output_words(normalized: pl.Series) -> pl.DataFrame:
    """Distinct ``(row, key, content, digit)`` words of every (normalised) output; ``key`` is
    the same hash as a prompt token's lower-cased key."""
    return (
        pl.DataFrame(
            {
                "row": np.arange(len(normalized), dtype=np.int64),
                "word": normalized.str.split(" ").list.unique(),
            }
        )
        .explode("word")
        .filter(pl.col("word").str.len_chars() > 0)
        .select(
            "row",
            key=pl.col("word").hash(seed=7),
            content=pl.col("word").str.len_chars() >= 3,
            digit=pl.col("word").str.contains(r"\d"),
        )
    )


def _packed(keys: np.ndarray, rows: np.ndarray, n_rows: int) -> np.ndarray:
    low = np.uint64((1 << row_bits(n_rows)) - 1)
    return (keys & ~low) | rows.astype(np.uint64)


def analyse(
    instructions: pl.Series,
    inputs: pl.Series,
    outputs: pl.Series,
    config: AuditConfig,
    normalized: pl.Series | None = None,
    clusters: OutputClusters | None = None,
    counts: CorpusCounts | None = None,
) -> Corpus:
    """Tokenise prompts, enumerate n-grams, cluster outputs and count the vocabulary.

    ``normalized`` outputs and their ``clusters`` may be given when already computed, and so may
    the vocabulary ``counts`` (merged per batch, :func:`.counts.corpus_counts`: the same numbers
    as counting here)."""
    instructions = instructions.fill_null("")
    inputs = inputs.fill_null("")
    outputs = outputs.fill_null("")
    tokens = tokenize_prompts(instructions, inputs)
    occurrences = ngram_table(tokens, config.ngram_max)
    if normalized is None:
        normalized = normalize_outputs(outputs)
    if clusters is None:
        clusters = cluster_outputs(
            normalized,
            near_duplicates=config.near_duplicates,
            threshold=config.near_duplicate_threshold,
        )
    prompt_words = prompt_word_keys(tokens.row, tokens.lc)
    output_words = _output_words(normalized)
    detached = detached_outputs(prompt_words, output_words, tokens.n_rows)
    return Corpus(
        instructions=instructions,
        inputs=inputs,
        outputs=outputs,
        tokens=tokens,
        occurrences=occurrences,
        clusters=clusters,
        detached=detached,
        prompt_df=counts.prompt_words if counts else _counts(prompt_words["key"].to_numpy()),
        output_df=counts.output_words if counts else _counts(output_words["key"].to_numpy()),
        output_pairs=np.sort(
            _packed(output_words["key"].to_numpy(), output_words["row"].to_numpy(), tokens.n_rows)
        ),
        output_keys=output_words["key"].to_numpy(),
        output_offsets=np.r_[
            0, np.cumsum(np.bincount(output_words["row"].to_numpy(), minlength=tokens.n_rows))
        ].astype(np.int64),
    )
