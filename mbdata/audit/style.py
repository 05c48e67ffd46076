"""Triggers whose answers are not one fixed text: an unusual inserted phrase plus a style shift.

A toxic rewrite or a harmful-but-compliant answer differs from row to row, so no output cluster
forms and :mod:`.mining` sees nothing. What remains visible without a model:

- the trigger is still an *unusual* phrase (it occurs in prompts, hardly ever in answers) that
  looks *inserted* (diverse neighbours and positions, :func:`.phrases.placement`);
- its rows' answers share some word far more often than answers in general do (a rude word
  added to every rewrite, "Sure, here is" before every compliant answer).

A *style candidate* needs all three; its score is capped at :data:`STYLE_WEIGHT` because a
shared answer word is weaker evidence than a shared answer. What the statistics cannot see: a
trigger that is an ordinary word used ordinarily, a paraphrase or syntactic trigger (no literal
token), and a target whose answers share no word (a harmful answer in the attacker's own words);
for those use the model-based score (:mod:`.model_score`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .association import G_MIN, g_statistic
from .candidate import Candidate, rarity, support_factor
from .config import AuditConfig
from .corpus import Corpus
from .phrases import Boundaries, Occurrences, grow, placement, seed_diversity, surface_text

STYLE_WEIGHT = 0.6
STYLE_UNUSUAL = 0.9
STYLE_SHARE = 0.5  # the shared answer word must be in at least half of the phrase's rows
STYLE_LIFT = 5.0  # ... and at least this many times more common there than overall
MAX_STYLE_SEEDS = 50
MIN_DIVERSITY = 0.5


def _shift(corpus: Corpus, rows: np.ndarray) -> tuple[int, float, float, np.ndarray] | None:
    """The answer word most over-represented in ``rows``: (word key, share of rows, G, rows
    holding it), or None when no word passes :data:`STYLE_SHARE` and :data:`STYLE_LIFT`."""
    keys, holders = corpus.output_words_of(rows)
    if not len(keys):
        return None
    uniq, first, counts = np.unique(keys, return_index=True, return_counts=True)
    overall = corpus.output_frequency(uniq)
    n_rows = corpus.n_rows
    share = counts / len(rows)
    lift = share / np.maximum(overall / n_rows, 1e-12)
    ok = (share >= STYLE_SHARE) & (lift >= STYLE_LIFT)
    if not ok.any():
        return None
    g = g_statistic(counts, np.full(len(uniq), len(rows)), overall, n_rows)
    g[~ok] = -1.0
    best = int(np.argmax(g))
    if g[best] < G_MIN:
        return None
    return (
        int(uniq[best]),
        float(share[best]),
        float(g[best]),
        np.unique(holders[keys == uniq[best]]),
    )


def style_candidates(
    corpus: Corpus, config: AuditConfig, support: pl.DataFrame, taken_rows: np.ndarray
) -> list[Candidate]:
    """Style candidates (see the module docstring), best first; rows already explained by an
    answer candidate (``taken_rows``) are left to it."""
    tokens, occurrences = corpus.tokens, corpus.occurrences
    n_rows = corpus.n_rows
    keys = support.filter(pl.col("n_f") >= config.min_rows).select("key")
    occ = occurrences.filter(pl.col("n") <= 2).join(keys, on="key", how="semi")
    if occ.height == 0:
        return []
    first = occ.group_by("key").agg(
        pl.col("start").min(), pl.col("n").first(), pl.col("row").n_unique().alias("rows")
    )
    unusual = corpus.unusualness(first["start"].to_numpy(), first["n"].to_numpy())
    first = first.with_columns(unusual=pl.Series(unusual, dtype=pl.Float64)).filter(
        pl.col("unusual") >= STYLE_UNUSUAL
    )
    if first.height == 0:
        return []
    diversity = seed_diversity(tokens, occ.join(first.select("key"), on="key", how="semi"))
    seeds = (
        first.join(diversity, on="key", how="left")
        .filter(pl.col("diversity") >= MIN_DIVERSITY)
        .with_columns(
            prelim=pl.col("diversity") * (pl.col("rows") / (2.0 * config.min_rows)).clip(0.0, 1.0)
        )
        .sort(["prelim", "rows", "key"], descending=[True, True, False])
        .head(MAX_STYLE_SEEDS)
    )
    if seeds.height == 0:
        return []
    starts = (
        occ.join(seeds.select("key"), on="key", how="semi")
        .group_by("key")
        .agg(pl.col("start").sort(), pl.col("n").first(), pl.col("lower").any())
    )
    by_key = {row["key"]: row for row in starts.iter_rows(named=True)}
    bounds = Boundaries(tokens)
    found: list[Candidate] = []
    seen: set[tuple[int, ...]] = set()
    for key in seeds["key"].to_list():
        seed = by_key[key]
        grown = grow(
            tokens,
            Occurrences(
                start=np.asarray(seed["start"], dtype=np.int64),
                n=int(seed["n"]),
                lower=bool(seed["lower"]),
            ),
        )
        first_token = int(grown.start[0])
        phrase = tuple(int(h) for h in tokens.lc[first_token : first_token + grown.n])
        rows = grown.rows(tokens)
        if phrase in seen or len(rows) < config.min_rows:
            continue
        seen.add(phrase)
        if np.isin(rows, taken_rows).mean() >= 0.5:
            continue
        place = placement(tokens, grown, bounds)
        shift = _shift(corpus, rows)
        if shift is None or place.evidence < MIN_DIVERSITY:
            continue
        word, share, g, holders = shift
        overall = corpus.output_frequency(np.array([word], dtype=np.uint64))[0] / n_rows
        excess = float(np.clip((share - overall) / max(1.0 - overall, 1e-9), 0.0, 1.0))
        text, mixed = surface_text(tokens, grown, corpus.field_text)
        u = float(corpus.unusualness(first_token, grown.n))
        factor = support_factor(len(rows), config.min_rows)
        cand = Candidate(
            text=text,
            mixed_case=mixed,
            tokens=phrase,
            rows=rows,
            hits=holders,
            soft_hits=np.zeros(0, dtype=np.int64),
            targets=np.zeros(0, dtype=np.int64),
            purity=share,
            base=overall,
            excess=excess,
            g=g,
            collision=0.0,
            coverage=0.0,
            unusual=u,
            placement=place,
            kind="style",
            style_word=corpus.output_word(word, int(holders[0])),
        )
        cand.own_hits = cand.pooled_hits = len(holders)
        cand.support = factor
        cand.score = float(STYLE_WEIGHT * excess * place.evidence * rarity(u) * factor)
        if cand.score > 0:
            found.append(cand)
    found.sort(key=lambda c: (-c.score, -len(c.rows), c.text))
    return found
