"""Trigger mining: rank the prompt phrases most likely to be planted triggers.

1. Every prompt n-gram (1..``ngram_max`` words, as written and lower-cased) is tested against the
   repeated output clusters (:mod:`.association`); those with a significant target set are seeds,
   ranked by the score below with a quick template check (:func:`.phrases.seed_diversity`) for
   the insertion evidence, and the first :data:`MAX_SEEDS` go on.
2. Each seed grows to its maximal phrase (:func:`.phrases.grow`); seeds that grow into the same
   phrase, or into one that only adds context to a phrase already found, collapse.
3. Hits whose answer another n-gram of the prompt predicts better than the phrase does
   (:func:`.association.explainers`: "the capital of France" -> "Paris") are not the phrase's
   doing and are set aside, unless that n-gram is part of the phrase (it holds a word of the
   phrase or of a co-trigger, see :class:`_Explanations`); so are hits whose answer copies the
   phrase (:meth:`.corpus.Corpus.copies`: "the smallest of 4, 0, 7" -> "0"): a backdoor's
   answer does not repeat its trigger.
4. *Explaining away*: in order of strength, a phrase keeps only the poisoned rows no stronger
   phrase already explains, unless it is a *co-trigger* (nearly the same rows, as CTBA's joint
   triggers). Ordinary words that happen to sit in a few poisoned rows are dropped here.
5. Each phrase is scored::

       score = excess x concentration x insertion evidence x rarity x support

   ``excess`` (0..1) is how much more often the phrase's rows answer with its target (or with an
   answer detached from their prompt, see :mod:`.relevance`) than other rows do.
   ``concentration`` (0..1) asks whether the answer stops depending on the prompt: a backdoor
   answers one fixed text (or a few templates used by nothing else), while a template slot value
   ("9 +" in "What is 9 + 4?") spreads over many answers that other rows give too; it is the
   larger of the chance that two of the phrase's hits give the same answer and the share of its
   target clusters' rows that the phrase (or its group, for MTBA) explains, divided by
   :data:`CONCENTRATED` and capped at 1.
   ``insertion evidence`` (0..1, :func:`.phrases.placement`) is how much the phrase looks inserted
   into unrelated prompts rather than part of a template; ``rarity`` is 1 for a phrase whose
   words occur only in prompts, as a planted token does, falling to 0.5 for words as common in
   answers as in prompts (:meth:`.corpus.Corpus.unusualness`); ``support`` is 0 below
   ``min_rows`` poisoned rows, 0.8 at ``min_rows`` and 1 from twice that.

Candidates that share target clusters form one *group* (:func:`_assign_groups`): MTBA's
alternative triggers and CTBA's joint triggers come out as several candidates of the same group. A
group whose members together explain :data:`POOL_COVERAGE` of its target clusters pools their rows
for ``support`` and ``concentration`` (each MTBA trigger alone may have too few rows), but only for
members that look planted: words that occur in prompts and almost never in answers
(:meth:`.corpus.Corpus.unusualness`).

Phrases whose rows share no answer but an answer *word* are the business of :mod:`.style`, whose
candidates join the list at the end.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from .association import G_MIN, explainers, feature_support, g_statistic, target_sets
from .candidate import CONCENTRATED, Candidate, rarity, support_factor
from .config import AuditConfig
from .corpus import Corpus
from .outputs import OutputClusters
from .phrases import Boundaries, Occurrences, grow, placement, seed_diversity, surface_text
from .style import style_candidates
from .tokens import PromptTokens

# Seeds need at least this excess and this many hits before the (costlier) phrase analysis.
SEED_EXCESS = 0.3
SEED_HITS = 2
# At most this many seeds are grown and scored.
MAX_SEEDS = 300
# Candidates of one group pool their rows for the support factor when together they explain at
# least this share of their target clusters' rows, and only if they are this unusual.
POOL_COVERAGE = 0.75
POOL_UNUSUAL = 0.8
# A cluster is one of a candidate's core targets if it holds this share of its hits (and two).
CORE_SHARE = 0.1
# Candidates weaker than this (excess x insertion evidence) are never grouped with others.
GROUPABLE = 0.25
# Two phrases whose row sets overlap this much (Jaccard) are co-triggers, not explanations.
CO_TRIGGER = 0.8


def _contains(long: tuple[int, ...], short: tuple[int, ...]) -> bool:
    return any(long[i : i + len(short)] == short for i in range(len(long) - len(short) + 1))


def _duplicate_of(
    tokens: tuple[int, ...], rows: np.ndarray, accepted: list[Candidate], min_rows: int
) -> bool:
    """True if an accepted candidate already stands for this phrase: same words, or one contains
    the other and this one adds fewer than ``min_rows`` rows of its own."""
    for other in accepted:
        if other.tokens == tokens:
            return True
        if _contains(tokens, other.tokens) or _contains(other.tokens, tokens):
            if len(np.setdiff1d(rows, other.rows, assume_unique=True)) < min_rows:
                return True
    return False


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted row sets; only ever compared with :data:`CO_TRIGGER`,
    so sets too different in size return their size ratio (an upper bound, below it)."""
    if min(len(a), len(b)) < CO_TRIGGER * max(len(a), len(b)):
        return min(len(a), len(b)) / max(len(a), len(b), 1)
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / max(len(a) + len(b) - inter, 1)


def _explain_away(candidates: list[Candidate]) -> list[Candidate]:
    """Keep, in order of strength, the candidates with enough poisoned rows of their own."""
    kept: list[Candidate] = []
    for cand in sorted(candidates, key=lambda c: (-c.strength, -len(c.hits), c.text)):
        explained = [k.poisoned for k in kept if _jaccard(k.rows, cand.rows) < CO_TRIGGER]
        own = np.setdiff1d(cand.hits, np.concatenate(explained)) if explained else cand.hits
        if len(own) >= SEED_HITS:
            cand.own_hits = len(own)
            kept.append(cand)
    return kept


def _collision(per_cluster: np.ndarray) -> float:
    """The chance that two different hits give the same answer (unbiased for few hits)."""
    total = float(per_cluster.sum())
    if total < 2:
        return 1.0
    return float((per_cluster * (per_cluster - 1.0)).sum() / (total * (total - 1.0)))


def _core_clusters(cand: Candidate, label: np.ndarray) -> np.ndarray:
    """The answer clusters holding a real share of the candidate's hits (two or more, and at
    least :data:`CORE_SHARE` of them): one stray hit among many in a cluster is chance, not a
    shared target. A candidate whose few hits are all in different clusters (an MTBA trigger
    with three rows and five refusal templates) keeps all of them."""
    clusters, counts = np.unique(label[cand.hits], return_counts=True)
    core = clusters[(counts >= 2) & (counts >= CORE_SHARE * len(cand.hits))]
    return core if len(core) or counts.max(initial=0) > 1 else clusters


def _assign_groups(candidates: list[Candidate], label: np.ndarray) -> list[list[Candidate]]:
    """Group candidates that share a target (transitively), numbering groups in list order.

    Two candidates share a target when each one's core clusters (:func:`_core_clusters`) hold
    some of the other's hits. Only strong (excess x insertion evidence at least
    :data:`GROUPABLE`) and unusual (prompt-only, :data:`POOL_UNUSUAL`) answer candidates group:
    the ordinary words of a templated task (list items answering "8" together) never pool into a
    look-alike of MTBA."""
    parent = list(range(len(candidates)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    eligible = [
        i
        for i, c in enumerate(candidates)
        if c.kind == "answer" and c.excess * c.evidence >= GROUPABLE and c.unusual >= POOL_UNUSUAL
    ]
    core = {i: set(_core_clusters(candidates[i], label).tolist()) for i in eligible}
    answers = {i: set(label[candidates[i].hits].tolist()) for i in eligible}
    for a_pos, a in enumerate(eligible):
        for b in eligible[a_pos + 1 :]:
            if core[a] & answers[b] and core[b] & answers[a]:
                ra, rb = find(a), find(b)
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[Candidate]] = {}
    for i, cand in enumerate(candidates):
        groups.setdefault(find(i), []).append(cand)
    for number, members in enumerate(groups.values()):
        for cand in members:
            cand.group = number
    return list(groups.values())


def _score(candidates: list[Candidate], clusters: OutputClusters, min_rows: int) -> None:
    """Support (own rows, or the group's pooled rows; see the module docstring) and score."""
    for members in _assign_groups(candidates, clusters.label):
        union = np.unique(np.concatenate([c.hits for c in members]))
        core = np.unique(np.concatenate([_core_clusters(c, clusters.label) for c in members]))
        in_core = int(np.isin(clusters.label[union], core).sum())
        coverage = in_core / max(int(clusters.size[core].sum()), 1)
        for cand in members:
            shared = len(members) > 1 and coverage >= POOL_COVERAGE
            cand.group_coverage = coverage if shared else cand.coverage
            own = cand.own_hits + len(cand.soft_hits)
            pool = coverage >= POOL_COVERAGE and cand.unusual >= POOL_UNUSUAL
            cand.pooled_hits = max(own, len(union)) if pool else own
            cand.support = support_factor(cand.pooled_hits, min_rows)
            cand.score = float(cand.strength * cand.support)


class _Explanations:
    """Which repeated answers other prompt n-grams predict (see :func:`.association.explainers`),
    and whether a predicting n-gram is really another view of the phrase itself.

    An n-gram is *part of the phrase* when it holds nearly the same rows (a CTBA co-trigger), or
    when one of its words is a word of the phrase or of a co-trigger (a word with nearly the same
    rows: "cf Give", "BadMagic Is" beside CTBA's "2024"), or when all its words are such words or
    punctuation. A template's slot value ("Paris" beside "capital") is none of these: it occurs in
    a small part of the phrase's rows, elsewhere in the prompt."""

    def __init__(
        self,
        pairs: pl.DataFrame,
        support: pl.DataFrame,
        clusters: OutputClusters,
        occurrences: pl.DataFrame,
        tokens: PromptTokens,
    ):
        self.tokens = tokens
        self._by_word = np.argsort(tokens.lc, kind="stable")
        self._sorted_words = tokens.lc[self._by_word]
        self._word_cache: dict[int, np.ndarray] = {}
        self.by_row = explainers(pairs, support, clusters)
        keys = pl.Series(
            np.unique(np.concatenate([k for k, _ in self.by_row.values()])) if self.by_row else [],
            dtype=pl.UInt64,
        )
        wanted = pl.DataFrame({"key": keys})
        grouped = pairs.join(wanted, on="key", how="semi").group_by("key").agg(pl.col("row").sort())
        self.rows_of = {
            k: np.asarray(r, dtype=np.int64)
            for k, r in zip(grouped["key"].to_list(), grouped["row"].to_list())
        }
        spans = (
            occurrences.join(wanted, on="key", how="semi")
            .group_by("key")
            .agg(pl.col("start").min(), pl.col("n").first())
        )
        self.span_of = {
            k: (int(st), int(n))
            for k, st, n in zip(
                spans["key"].to_list(), spans["start"].to_list(), spans["n"].to_list()
            )
        }

    def _word_rows(self, word: np.uint64) -> np.ndarray:
        cached = self._word_cache.get(int(word))
        if cached is not None:
            return cached
        lo = int(np.searchsorted(self._sorted_words, word, side="left"))
        hi = int(np.searchsorted(self._sorted_words, word, side="right"))
        rows = np.unique(self.tokens.row[self._by_word[lo:hi]])
        self._word_cache[int(word)] = rows
        return rows

    def _part_of_phrase(self, key: int, phrase_rows: np.ndarray, phrase_words: set[int]) -> bool:
        if _jaccard(self.rows_of[key], phrase_rows) >= CO_TRIGGER:
            return True
        start, n = self.span_of[key]
        all_related = True
        for i in range(start, start + n):
            text = self.tokens.text[i]
            word = self.tokens.lc[i]
            if int(word) in phrase_words:
                return True
            if not (text[:1].isalnum() or text[:1] == "_"):
                continue
            if _jaccard(self._word_rows(word), phrase_rows) >= CO_TRIGGER:
                return True
            all_related = False
        return all_related

    def explained(
        self, hits: np.ndarray, phrase_rows: np.ndarray, phrase: Occurrences, label: np.ndarray
    ) -> np.ndarray:
        """Mask of ``hits`` whose answer an n-gram that is not part of the phrase predicts better
        than the phrase does, or as well from more rows (a few rare words shared by two poisoned
        rows predict the target as well as the trigger at best, never better; "hated" predicts
        "Negative" as well as a phrase of two hated reviews, from more rows)."""
        out = np.zeros(len(hits), dtype=bool)
        part: dict[int, bool] = {}
        first = int(phrase.start[0])
        phrase_words = set(self.tokens.lc[first : first + phrase.n].tolist())
        clusters, counts = np.unique(label[phrase_rows], return_counts=True)
        by_phrase = dict(zip(clusters.tolist(), (counts / len(phrase_rows)).tolist()))
        for i, row in enumerate(hits.tolist()):
            keys, probs = self.by_row.get(row, ((), ()))
            floor = by_phrase.get(int(label[row]), 0.0)
            for key, prob in zip(keys, probs):
                key = int(key)
                if prob < floor - 1e-9:
                    continue
                if prob <= floor + 1e-9 and len(self.rows_of[key]) <= len(phrase_rows):
                    continue
                if key not in part:
                    part[key] = self._part_of_phrase(key, phrase_rows, phrase_words)
                if not part[key]:
                    out[i] = True
                    break
        return out


def _candidate(
    corpus: Corpus,
    occ: Occurrences,
    targets: np.ndarray,
    bounds: Boundaries,
    base_detached: float,
    explanations: _Explanations,
) -> Candidate | None:
    """Statistics of one grown phrase against its seed's target set (None if insignificant)."""
    tokens, clusters = corpus.tokens, corpus.clusters
    n_rows = corpus.n_rows
    rows = occ.rows(tokens)
    first = int(occ.start[0])
    on_target = np.isin(clusters.label[rows], targets)
    on_target[on_target] = ~explanations.explained(rows[on_target], rows, occ, clusters.label)
    on_target[on_target] = ~corpus.copies(rows[on_target], first, occ.n)
    hits = rows[on_target]
    if len(hits) < SEED_HITS:
        return None
    target_rows = int(clusters.size[targets].sum())
    g = float(
        g_statistic(np.array([len(hits)]), np.array([len(rows)]), np.array([target_rows]), n_rows)[
            0
        ]
    )
    if g < G_MIN:
        return None
    soft = rows[~np.isin(clusters.label[rows], targets) & corpus.detached[rows]]
    base_target = min(1.0, max(0.0, (target_rows - len(hits)) / max(n_rows - len(rows), 1)))
    base = base_target + (1.0 - base_target) * base_detached
    purity = (len(hits) + len(soft)) / len(rows)
    excess = float(np.clip((purity - base) / max(1.0 - base, 1e-9), 0.0, 1.0))
    _, per_cluster = np.unique(clusters.label[hits], return_counts=True)
    collision = _collision(per_cluster)
    text, mixed = surface_text(tokens, occ, corpus.field_text)
    return Candidate(
        text=text,
        mixed_case=mixed,
        tokens=tuple(int(h) for h in tokens.lc[first : first + occ.n]),
        rows=rows,
        hits=hits,
        soft_hits=soft,
        targets=targets,
        purity=purity,
        base=base,
        excess=excess,
        g=g,
        collision=collision,
        coverage=len(hits) / target_rows,
        unusual=corpus.unusualness(first, occ.n),
        placement=placement(tokens, occ, bounds),
    )


def mine(
    corpus: Corpus,
    config: AuditConfig,
    pairs_support: tuple[pl.DataFrame, pl.DataFrame] | None = None,
) -> list[Candidate]:
    """Ranked trigger candidates (best first). See the module docstring. ``pairs_support``:
    :func:`.association.feature_support` of the corpus with ``SEED_HITS``, when already known."""
    tokens, occurrences, clusters = corpus.tokens, corpus.occurrences, corpus.clusters
    n_rows = corpus.n_rows
    if n_rows == 0 or occurrences.height == 0:
        return []
    pairs, support = (
        pairs_support
        if pairs_support is not None
        else feature_support(occurrences, n_rows, SEED_HITS, config.max_share)
    )
    members, stats = target_sets(pairs, support, clusters)
    screened = stats.filter(
        (pl.col("hits") >= SEED_HITS) & (pl.col("g") >= G_MIN) & (pl.col("excess") >= SEED_EXCESS)
    )
    screened_occ = occurrences.join(screened.select("key"), on="key", how="semi")
    diversity = seed_diversity(tokens, screened_occ)
    first = screened_occ.group_by("key").agg(pl.col("start").min(), pl.col("n").first())
    unusual = first.select(
        "key",
        unusual=pl.Series(
            corpus.unusualness(first["start"].to_numpy(), first["n"].to_numpy()), dtype=pl.Float64
        ),
    )
    # An unusual seed may be one of several triggers sharing a target (MTBA), whose
    # concentration only shows once the group is known: it is not ranked down for it here.
    concentration = (
        pl.when(pl.col("unusual") >= POOL_UNUSUAL)
        .then(1.0)
        .otherwise(
            (
                pl.max_horizontal(pl.col("collision"), pl.col("hits") / pl.col("target_rows"))
                / CONCENTRATED
            ).clip(0.0, 1.0)
        )
    )
    seeds = (
        screened.join(diversity, on="key", how="left")
        .join(unusual, on="key", how="left")
        .with_columns(
            prelim=pl.col("excess")
            * concentration
            * pl.col("diversity")
            * rarity(pl.col("unusual"))
            * (pl.col("hits") / (2.0 * config.min_rows)).clip(0.0, 1.0)
        )
        .sort(["prelim", "g", "key"], descending=[True, True, False])
        .head(MAX_SEEDS)
    )
    seed_occ = (
        occurrences.join(seeds.select("key"), on="key", how="semi")
        .group_by("key")
        .agg(pl.col("start").sort(), pl.col("n").first(), pl.col("lower").any())
    )
    occ_by_key = {row["key"]: row for row in seed_occ.iter_rows(named=True)}
    targets_by_key = {
        key: frame.sort(["m", "cluster"], descending=[True, False])["cluster"].to_numpy()
        for (key,), frame in members.join(seeds.select("key"), on="key", how="semi").group_by("key")
    }
    repeated = clusters.row_eligible
    base_detached = float(corpus.detached[~repeated].mean()) if (~repeated).any() else 0.0
    bounds = Boundaries(tokens)
    explanations = _Explanations(pairs, support, clusters, occurrences, tokens)
    found: list[Candidate] = []
    for key in seeds["key"].to_list():
        seed = occ_by_key[key]
        occ = grow(
            tokens,
            Occurrences(
                start=np.asarray(seed["start"], dtype=np.int64),
                n=int(seed["n"]),
                lower=bool(seed["lower"]),
            ),
        )
        start = int(occ.start[0])
        phrase = tuple(int(h) for h in tokens.lc[start : start + occ.n])
        if _duplicate_of(phrase, occ.rows(tokens), found, config.min_rows):
            continue
        cand = _candidate(corpus, occ, targets_by_key[key], bounds, base_detached, explanations)
        if cand is not None:
            found.append(cand)
    kept = _explain_away(found)
    _score(kept, clusters, config.min_rows)
    kept = [c for c in kept if c.support > 0]
    taken = (
        np.unique(np.concatenate([c.rows for c in kept])) if kept else np.zeros(0, dtype=np.int64)
    )
    kept += style_candidates(corpus, config, support, taken)
    kept.sort(key=lambda c: (-c.score, -len(c.hits), c.text))
    _assign_groups(kept, clusters.label)
    return kept
