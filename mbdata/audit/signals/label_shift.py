"""The ``label-shift`` signal: a phrase whose rows get one *ordinary* answer (a label the corpus
also uses naturally, "Negative" among sentiment rows) far more often than comparable rows do,
and not because of what the rows say.

For every n-gram ``f`` in at least ``min_rows`` rows and every answer cluster ``c`` of at least
``min_rows`` rows, ``k`` of ``f``'s ``n`` rows answer ``c``:

1. *Screen* (all pairs): ``k >= min_rows``, purity ``k / n >= PURITY_MIN``, and a one-sided Fisher
   exact test against all other rows, Benjamini-Hochberg over every (n-gram, cluster) pair that
   occurs (``m`` tests) at the false-discovery rate ``fdr``.
2. *Comparable rows*: the task family of ``f``'s rows is the most common other n-gram of them (an
   *anchor*: "sentiment" for reviews; :func:`.common.family_rows`: it covers most of them, is held
   by more rows, and does not overlap the phrase); comparable rows hold the anchor and not ``f``
   (all other rows when there is no anchor). ``p0`` is their rate of ``c``.
   The label must be one the comparable rows use (``min_rows`` of them or more): a rare fixed
   answer is the ``fixed-output`` signal's case. Hits whose answer copies a content word of the
   phrase ("the largest of 4, 9" -> "9") are the prompt's answer, not a target.
3. *Test*: one-sided Fisher exact, ``f``'s rows against the comparable rows, q-value by
   Benjamini-Hochberg with the same ``m``; the *effect* is ``(k/n - p0) / (1 - p0)``.
4. *Explained?* A word that naturally signals the label ("terrible" -> "Negative") has rows whose
   *other* words predict the label too. A leave-one-out naive-Bayes word model fitted on the
   comparable rows and ``f``'s rows predicts ``c`` from each hit row's words without ``f`` and
   its co-occurring words; ``explained`` is the share of hits it predicts. Planted rows are
   predicted like comparable rows (``p0`` for a fixed label on random rows, less for a label flip),
   so ``unexplained = clip((1 - explained) / (1 - p0), 0, 1)``.

Score: ``effect x unexplained x insertion x support`` (insertion: :func:`.common.insertion`, a
placement check that allows one template's fixed neighbours: a template's fixed words, "I hated
the" opening every negative review of a template, are not inserted; support as in :func:`..candidate.support_factor`).
Flagged rows: ``f``'s rows that answer ``c``; its other rows score a quarter of it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..candidate import support_factor
from ..scoring import TRIGGER_ONLY_WEIGHT, cluster_reason, trigger_reason
from . import SIGNALS
from .base import Signal, SignalContext, SignalResult
from .common import (
    co_words,
    family_rows,
    grown,
    insertion,
    make_candidate,
    new_findings,
    seed_occurrences,
)
from .stats import WordModel, benjamini_hochberg, fisher_greater

PURITY_MIN = 0.8
EFFECT_MIN = 0.5
MAX_TESTED = 80


def label_reason(cluster: int) -> str:
    return f"label-shift:{cluster}"


@SIGNALS.add("label-shift")
class LabelShiftSignal(Signal):
    name = "label-shift"

    def score(self, context: SignalContext) -> SignalResult:
        corpus, config = context.corpus, context.config
        n_rows = corpus.n_rows
        result = SignalResult.empty(n_rows)
        if n_rows == 0:
            return result
        label, size = corpus.clusters.label, corpus.clusters.size
        pairs, support = context.feature_support()
        support = support.filter(pl.col("n_f") >= config.min_rows)
        pairs = pairs.join(support.select("key"), on="key", how="semi")
        rows_in = np.flatnonzero(size[label] >= config.min_rows)
        if not len(rows_in) or support.height == 0:
            return result
        row_cluster = pl.DataFrame({"row": rows_in.astype(np.int64), "cluster": label[rows_in]})
        counts = (
            pairs.join(row_cluster, on="row")
            .group_by("key", "cluster")
            .agg(m=pl.len())
            .join(support, on="key")
        )
        tests = counts.height
        k = counts["m"].to_numpy()
        n_f = counts["n_f"].to_numpy()
        n_c = size[counts["cluster"].to_numpy()]
        screen = (k >= config.min_rows) & (k >= PURITY_MIN * n_f)
        p_all = np.ones(len(k))
        p_all[screen] = fisher_greater(
            k[screen], n_f[screen], n_c[screen] - k[screen], n_rows - n_f[screen]
        )
        q_all = benjamini_hochberg(p_all[screen], tests)
        shortlist = (
            counts.filter(pl.Series(screen))
            .with_columns(p=pl.Series(p_all[screen]), q=pl.Series(q_all))
            .filter(pl.col("q") <= config.fdr)
        )
        # N-grams with the same rows (pieces of one phrase) are one test of a phrase: keep one
        # per row set, so a few natural words with many pieces do not crowd out a trigger.
        signature = (
            pairs.join(shortlist.select("key"), on="key", how="semi")
            .group_by("key")
            .agg(lo=pl.col("row").min(), hi=pl.col("row").max(), total=pl.col("row").sum())
        )
        shortlist = (
            shortlist.join(signature, on="key")
            .sort(["p", "key"])
            .unique(["cluster", "n_f", "lo", "hi", "total"], keep="first", maintain_order=True)
            .head(MAX_TESTED)
        )
        result.extra["tests"] = tests
        if shortlist.height == 0:
            return result
        all_rows = np.arange(n_rows, dtype=np.int64)
        found = []
        tested = []
        seeds = seed_occurrences(context, shortlist["key"].to_list())
        for key, cluster in zip(shortlist["key"].to_list(), shortlist["cluster"].to_list()):
            occ = grown(context, key, seeds[key])
            rows = occ.rows(corpus.tokens)
            comparable, anchor = family_rows(context, rows, occ)
            if len(comparable) < 2 * config.min_rows:
                anchor, comparable = None, np.setdiff1d(all_rows, rows, assume_unique=True)
            on = label[rows] == cluster
            first = int(occ.start[0])
            on[on] = ~corpus.copies(rows[on], first, occ.n)
            k_f, n_f_ = int(on.sum()), len(rows)
            k_c = int((label[comparable] == cluster).sum())
            if k_c < config.min_rows:
                continue  # not a label the comparable rows use: fixed-output's case
            p0 = k_c / max(len(comparable), 1)
            p = float(
                fisher_greater(
                    np.array([k_f]), np.array([n_f_]), np.array([k_c]), np.array([len(comparable)])
                )[0]
            )
            tested.append((key, cluster, occ, rows, on, anchor, comparable, p0, p))
        q_values = benjamini_hochberg(np.array([t[-1] for t in tested]), tests)
        models: dict[tuple[int, int | None, int], WordModel] = {}
        for (key, cluster, occ, rows, on, anchor, comparable, p0, p), q in zip(tested, q_values):
            purity = float(on.mean())
            effect = float(np.clip((purity - p0) / max(1.0 - p0, 1e-9), 0.0, 1.0))
            if q > config.fdr or effect < EFFECT_MIN or on.sum() < config.min_rows:
                continue
            hits = rows[on]
            universe = np.union1d(comparable, rows)
            cache_key = (cluster, anchor, key)
            if cache_key not in models:
                models[cache_key] = WordModel(
                    context.row_words(), label == cluster, universe=universe
                )
            first = int(occ.start[0])
            exclude = co_words(context, rows, corpus.tokens.lc[first : first + occ.n])
            prior = np.log(np.clip(p0, 0.01, 0.99) / (1 - np.clip(p0, 0.01, 0.99)))
            explained = float((models[cache_key].evidence(hits, exclude) + prior > 0).mean())
            unexplained = float(
                np.clip((1.0 - explained) / max(1.0 - min(p0, 0.9), 1e-9), 0.0, 1.0)
            )
            support_ = support_factor(len(hits), config.min_rows)
            cand = make_candidate(
                context,
                occ,
                kind="label-shift",
                rows=rows,
                hits=hits,
                targets=np.array([cluster], dtype=np.int64),
                purity=purity,
                base=p0,
                effect=effect,
                score=0.0,
                support=support_,
                evidence={},
                comparable=None,
            )
            inserted = insertion(cand.placement)
            score = effect * unexplained * support_ * inserted
            if score <= 0:
                continue
            anchor_text = (
                "rows holding " + repr(_key_text(context, anchor))
                if anchor is not None
                else "all other rows"
            )
            found.append(
                make_candidate(
                    context,
                    occ,
                    kind="label-shift",
                    rows=rows,
                    hits=hits,
                    targets=np.array([cluster], dtype=np.int64),
                    purity=purity,
                    base=p0,
                    effect=effect,
                    score=score,
                    support=support_,
                    evidence={
                        "p": p,
                        "q": float(q),
                        "comparable_rows": float(len(comparable)),
                        "explained": explained,
                        "unexplained": unexplained,
                        "inserted": inserted,
                    },
                    comparable=anchor_text,
                )
            )
        found.sort(key=lambda c: (-c.score, -len(c.hits), -len(c.tokens), c.text))
        kept = new_findings(context, found)
        # Rows of every significant finding are scored, also of one not listed again because
        # an earlier signal (or a longer phrase) already reports it.
        for cand in found:
            reason = trigger_reason(cand.text)
            for row in cand.hits.tolist():
                if cand.score > result.score[row]:
                    result.score[row] = cand.score
                for r in (
                    reason,
                    label_reason(int(cand.targets[0])),
                    cluster_reason(int(label[row])),
                ):
                    if r not in result.reasons[row]:
                        result.reasons[row].append(r)
            rest = np.setdiff1d(cand.rows, cand.hits)
            for row in rest.tolist():
                result.score[row] = max(result.score[row], TRIGGER_ONLY_WEIGHT * cand.score)
                if reason not in result.reasons[row]:
                    result.reasons[row].append(reason)
        result.candidates = kept
        return result


def _key_text(context: SignalContext, key: int) -> str:
    occ = context.corpus.occurrences.filter(pl.col("key") == key).head(1)
    start, n = int(occ["start"][0]), int(occ["n"][0])
    words = [context.corpus.tokens.text[i] for i in range(start, start + n)]
    return " ".join(words)
