"""Shared statistics of the association signals: exact tests, false-discovery control, and a
leave-one-out word model of "what answer does the rest of this prompt predict?"."""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.stats import hypergeom

# Smoothing of the word model (pseudo-rows per class) and the cap on one word's log-odds, so a
# handful of words cannot outvote the rest of a prompt.
ALPHA = 0.5
WORD_CAP = 3.0
# A phrase word explains its row by itself (WordModel.outside) only if seen in this many rows.
SEEN_MIN = 3


def fisher_greater(
    k: np.ndarray, n: np.ndarray, k_other: np.ndarray, n_other: np.ndarray
) -> np.ndarray:
    """One-sided Fisher exact p-values: is ``k`` of ``n`` more than the ``k_other`` of
    ``n_other`` comparable rows would make likely (all rows pooled, hypergeometric upper tail)?"""
    k = np.asarray(k, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    total = n + np.asarray(n_other, dtype=np.int64)
    successes = k + np.asarray(k_other, dtype=np.int64)
    return np.clip(hypergeom.sf(k - 1, total, successes, n), 0.0, 1.0)


def benjamini_hochberg(p: np.ndarray, m: int | None = None) -> np.ndarray:
    """Benjamini-Hochberg q-values of ``p`` among ``m`` tests in all (``m`` >= ``len(p)``: tests
    screened out before an exact p-value was computed count with p = 1)."""
    p = np.asarray(p, dtype=np.float64)
    m = max(int(m if m is not None else len(p)), len(p), 1)
    if not len(p):
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, len(p) + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.clip(q, 0.0, 1.0)
    return out


class WordModel:
    """Naive-Bayes log-odds of a binary row outcome (an answer cluster, a refusal) from the
    prompt's words, leave-one-out: a row never explains itself, so a word seen only in that row
    says nothing about it.

    ``evidence(rows, exclude)`` is the summed, capped log-odds of each row's words except the
    word keys in ``exclude`` (a candidate trigger and its co-occurring words)."""

    def __init__(
        self,
        row_words: pl.DataFrame,
        outcome: np.ndarray,
        cap: float = WORD_CAP,
        floor: float | None = None,
        universe: np.ndarray | None = None,
    ):
        self.outcome = np.asarray(outcome, dtype=bool)
        if universe is not None:
            row_words = row_words.filter(pl.col("row").is_in(pl.Series(universe).implode()))
            inside = self.outcome[universe]
        else:
            inside = self.outcome
        self.positives = int(inside.sum())
        self.negatives = int(len(inside) - self.positives)
        rows = row_words["row"].to_numpy()
        keys = row_words["key"].to_numpy()
        hit = self.outcome[rows]
        counts = (
            pl.DataFrame({"key": keys, "hit": hit})
            .group_by("key")
            .agg(a=pl.col("hit").sum(), n=pl.len())
        )
        self._keys = counts["key"].to_numpy()
        order = np.argsort(self._keys)
        self._keys = self._keys[order]
        self._a = counts["a"].to_numpy().astype(np.float64)[order]
        self._b = counts["n"].to_numpy().astype(np.float64)[order] - self._a
        self.cap = cap
        self.floor = -cap if floor is None else floor
        self.rows, self.keys = rows, keys
        self.contribution = self._llr(keys, hit)
        self.total = np.bincount(rows, weights=self.contribution, minlength=len(self.outcome))

    def _llr(self, keys: np.ndarray, hit: np.ndarray) -> np.ndarray:
        at = np.searchsorted(self._keys, keys)
        a = self._a[at] - hit
        b = self._b[at] - ~hit
        pos = max(self.positives, 1)
        neg = max(self.negatives, 1)
        llr = np.log((a + ALPHA) / (pos + 2 * ALPHA)) - np.log((b + ALPHA) / (neg + 2 * ALPHA))
        return np.clip(llr, self.floor, self.cap)

    def outside(
        self,
        row_words: pl.DataFrame,
        rows: np.ndarray,
        phrase: np.ndarray | None = None,
        held_out: np.ndarray | None = None,
        explains: float | None = None,
    ) -> np.ndarray:
        """Per row of ``rows``: summed word log-odds of its words, each word's counts taken
        from the fitted rows outside ``held_out`` (default ``rows``): what the words say
        *elsewhere*. The words in ``phrase`` (a candidate's own) may only add evidence for the
        outcome, never against it: a phrase can be a natural word for its label, but it cannot
        make its own rows look unexplained. With ``explains``, a row one of whose phrase words
        favours the outcome by that log-odds or more is predicted whatever its other words say (the phrase
        is a natural word for the outcome: "witty , but" in a positive review that ends
        "dull")."""
        rows = np.asarray(rows, dtype=np.int64)
        held_out = rows if held_out is None else np.asarray(held_out, dtype=np.int64)
        mine = row_words.filter(pl.col("row").is_in(pl.Series(rows).implode()))
        keys = mine["key"].to_numpy()
        at = np.minimum(np.searchsorted(self._keys, keys), max(len(self._keys) - 1, 0))
        known = (self._keys[at] == keys) if len(self._keys) else np.zeros(len(keys), bool)
        a = np.where(known, self._a[at] if len(self._a) else 0.0, 0.0)
        b = np.where(known, self._b[at] if len(self._b) else 0.0, 0.0)
        # remove the held-out rows' own counts (those the model was fitted on), totals included
        pos, neg = float(self.positives), float(self.negatives)
        fitted = np.intersect1d(held_out, self.rows)
        pos -= float(self.outcome[fitted].sum())
        neg -= float(len(fitted) - self.outcome[fitted].sum())
        inside = np.isin(self.rows, held_out)
        if inside.any():
            frame = pl.DataFrame({"key": self.keys[inside], "hit": self.outcome[self.rows[inside]]})
            own = frame.group_by("key").agg(a=pl.col("hit").sum(), n=pl.len())
            own_keys = own["key"].to_numpy()
            order = np.argsort(own_keys)
            own_keys = own_keys[order]
            own_a = own["a"].to_numpy().astype(np.float64)[order]
            own_b = own["n"].to_numpy().astype(np.float64)[order] - own_a
            j = np.minimum(np.searchsorted(own_keys, keys), len(own_keys) - 1)
            match = own_keys[j] == keys
            a = a - np.where(match, own_a[j], 0.0)
            b = b - np.where(match, own_b[j], 0.0)
        pos, neg = max(pos, 1.0), max(neg, 1.0)
        llr = np.log((a + ALPHA) / (pos + 2 * ALPHA)) - np.log((b + ALPHA) / (neg + 2 * ALPHA))
        llr = np.clip(llr, self.floor, self.cap)
        order = np.argsort(rows, kind="stable")
        where = order[np.searchsorted(rows[order], mine["row"].to_numpy())]
        out = np.zeros(len(rows))
        if phrase is not None and len(phrase):
            own_word = np.isin(keys, phrase)
            per_row_own = np.zeros(len(rows))
            np.add.at(per_row_own, where[own_word], llr[own_word])
            out += np.maximum(per_row_own, 0.0)
            if explains is not None:
                seen = own_word & (a + b >= SEEN_MIN)  # an unseen word says nothing
                strongest = np.full(len(rows), -np.inf)
                np.maximum.at(strongest, where[seen], llr[seen])
                out[strongest >= explains] = np.inf
            llr = np.where(own_word, 0.0, llr)
        np.add.at(out, where, llr)
        return out

    def evidence(self, rows: np.ndarray, exclude: np.ndarray) -> np.ndarray:
        """Per row of ``rows``: summed word log-odds without the words in ``exclude``."""
        rows = np.asarray(rows, dtype=np.int64)
        out = self.total[rows].copy()
        if len(exclude):
            mask = np.isin(self.keys, exclude) & np.isin(self.rows, rows)
            removed = np.bincount(
                self.rows[mask], weights=self.contribution[mask], minlength=len(self.outcome)
            )
            out -= removed[rows]
        return out
