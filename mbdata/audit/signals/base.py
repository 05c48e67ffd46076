"""What every audit signal gets and gives back."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from ..association import feature_support
from ..candidate import Candidate
from ..config import AuditConfig
from ..corpus import Corpus

SEED_HITS = 2


@dataclasses.dataclass
class SignalContext:
    """The analysed corpus, the settings, and what earlier signals found (a later signal leaves
    their rows and phrases to them). Costly shared tables are computed once, on first use."""

    corpus: Corpus
    config: AuditConfig
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    prompt_of: Callable[[Candidate], list[str]] | None = None
    _cache: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def feature_support(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Distinct (n-gram key, row) pairs of minable n-grams and each key's row count
        (:func:`..association.feature_support`)."""
        if "support" not in self._cache:
            self._cache["support"] = feature_support(
                self.corpus.occurrences, self.corpus.n_rows, SEED_HITS, self.config.max_share
            )
        return self._cache["support"]

    def pair_index(self) -> dict[str, np.ndarray]:
        """Numpy views of :meth:`feature_support` for per-candidate lookups without scanning:
        pair keys/rows (sorted by key, then row), the pair order by row with per-row offsets,
        the support keys (sorted) and counts, and the n-gram occurrences ordered by start."""
        if "pair_index" not in self._cache:
            pairs, support = self.feature_support()
            keys = pairs["key"].to_numpy()
            rows = pairs["row"].to_numpy()
            by_row = np.argsort(rows, kind="stable")
            offsets = np.searchsorted(rows[by_row], np.arange(self.corpus.n_rows + 1))
            occ = self.corpus.occurrences
            occ_start = occ["start"].to_numpy()
            by_start = np.argsort(occ_start, kind="stable")
            self._cache["pair_index"] = {
                "keys": keys,
                "rows": rows,
                "by_row": by_row,
                "row_offsets": offsets,
                "support_keys": support["key"].to_numpy(),
                "support_n": support["n_f"].to_numpy(),
                "occ_start": occ_start[by_start],
                "occ_end": (occ_start + occ["n"].to_numpy().astype(np.int64))[by_start],
                "occ_key": occ["key"].to_numpy()[by_start],
            }
        return self._cache["pair_index"]

    def reference_model(self) -> tuple[Any, Any]:
        """The ``model`` setting's reference model and tokenizer, loaded once for every signal
        that asks (:func:`..model_score.load_reference_model`)."""
        if "reference_model" not in self._cache:
            from ..model_score import load_reference_model

            self._cache["reference_model"] = load_reference_model(str(self.config.model))
        return self._cache["reference_model"]

    def row_words(self) -> pl.DataFrame:
        """Distinct ``(row, key)`` of each prompt's lower-cased word tokens (no punctuation)."""
        if "row_words" not in self._cache:
            tokens = self.corpus.tokens
            word = tokens.text.str.contains(r"^\w").to_numpy()
            self._cache["row_words"] = pl.DataFrame(
                {"row": tokens.row[word], "key": tokens.lc[word]}
            ).unique(maintain_order=True)
        return self._cache["row_words"]

    def taken_rows(self) -> np.ndarray:
        """Rows an earlier signal already marks as poisoned (with a candidate over the threshold)."""
        strong = [c.poisoned for c in self.candidates if c.score >= self.config.threshold]
        if not strong:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(strong))


@dataclasses.dataclass
class SignalResult:
    """Candidates (best first) and, per analysed row, a score in 0..1 and its reasons."""

    candidates: list[Candidate]
    score: np.ndarray
    reasons: list[list[str]]
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def empty(cls, n_rows: int) -> SignalResult:
        return cls([], np.zeros(n_rows, dtype=np.float64), [[] for _ in range(n_rows)])


class Signal:
    """One way of spotting a planted trigger. Subclasses set ``name`` and implement
    :meth:`score`; register them with ``@SIGNALS.add(name)``. ``default``: run when the settings
    name no signals, in ``order`` (smaller first)."""

    name = ""
    default = False
    order = 100
    kind = ""  # the ``kind`` of its candidates
    description = ""  # what a candidate of this kind means, in words (reports)
    legend: tuple[tuple[str, str], ...] = ()  # the row reasons it adds, with their meaning

    def score(self, context: SignalContext) -> SignalResult:  # pragma: no cover - interface
        raise NotImplementedError
