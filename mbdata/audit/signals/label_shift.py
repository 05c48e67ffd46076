"""The ``label-shift`` signal: a phrase whose rows get one *ordinary* answer (a label the corpus
also uses naturally, "Negative" among sentiment rows) far more often than comparable rows do,
and not because of what the rows say.

For every n-gram ``f`` in at least ``min_rows`` rows and every answer cluster ``c`` of at least
``min_rows`` rows, ``k`` of ``f``'s ``n`` rows answer ``c``:

1. *Screen* (all pairs): ``k >= min_rows``, purity ``k / n >= PURITY_MIN``, and a one-sided Fisher
   exact test against all other rows; the shortlist is the pairs with q <= ``fdr``
   (Benjamini-Hochberg over every (n-gram, cluster) pair that occurs, ``m`` tests).
2. *Comparable rows* (:func:`.task.task_rows`): the rows answering one of ``c``'s label set
   (the labels given to prompts like ``c``'s: "Positive" and "Negative" for reviews, with or
   without an instruction template), narrowed to a template anchor's rows when there is one,
   without ``f``'s rows. ``p0`` is their rate of ``c``; the label must be one they use
   (``min_rows`` of them or more): a rare fixed answer is the ``fixed-output`` signal's case.
   Hits whose answer copies a content word of the phrase ("the largest of 4, 9" -> "9") are the
   prompt's answer, not a target.
3. *Test*: one-sided Fisher exact, ``f``'s rows against the comparable rows; the *effect* is
   ``(k/n - p0) / (1 - p0)``. Phrases sharing a label whose rows barely overlap (MTBA) are also
   tested as one group (:mod:`.skeleton`); Benjamini-Hochberg over all ``m`` plus the groups.
4. *Explained?* (:func:`.task.explanation`): a word that naturally signals the label
   ("terrible" -> "Negative") has rows whose *other* words lean to the label as natural rows do;
   planted rows lean like rows of the other labels. ``unexplained`` is 0 unless the hits are
   significantly less explained than natural rows.

Score: ``effect x unexplained x insertion x support`` (insertion: :func:`.common.insertion`, a
placement check that allows one template's fixed neighbours: a template's fixed words, "I hated
the" opening every negative review of a template, are not inserted; support as in
:func:`..candidate.support_factor`). Flagged rows: ``f``'s rows that answer ``c``; its other
rows score a quarter of it.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..candidate import Candidate
from ..scoring import cluster_reason
from . import SIGNALS
from .base import SignalContext, SignalResult
from .common import grown, phrase_keys, seed_occurrences
from .skeleton import AssociationSignal, Seed, Test, exact_p
from .stats import benjamini_hochberg, fisher_greater
from .task import explanation, task_rows

PURITY_MIN = 0.8
MAX_TESTED = 80


def label_reason(cluster: int) -> str:
    return f"label-shift:{cluster}"


@SIGNALS.add("label-shift")
class LabelShiftSignal(AssociationSignal):
    name = "label-shift"
    kind = "label-shift"
    description = "its rows get one label far more often than comparable rows"
    legend = (
        (
            "label-shift:N",
            "the row carries a phrase whose rows get label cluster N far more often "
            "than comparable rows, and its own words do not explain the label",
        ),
    )
    default = True
    order = 20

    def screen(self, context: SignalContext, result: SignalResult) -> tuple[list[Seed], int]:
        corpus, config = context.corpus, context.config
        n_rows = corpus.n_rows
        label, size = corpus.clusters.label, corpus.clusters.size
        pairs, support = context.feature_support()
        support = support.filter(pl.col("n_f") >= config.min_rows)
        pairs = pairs.join(support.select("key"), on="key", how="semi")
        rows_in = np.flatnonzero(size[label] >= config.min_rows)
        if not len(rows_in) or support.height == 0:
            return [], 0
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
            .filter(pl.col("q") <= self.screen_fdr(config.fdr))
        )
        # N-grams with the same rows (pieces of one phrase) are one test of a phrase: keep one
        # per row set, so a few natural words with many pieces do not crowd out a trigger.
        signature = (
            pairs.join(shortlist.select("key"), on="key", how="semi")
            .group_by("key")
            .agg(lo=pl.col("row").min(), hi=pl.col("row").max(), total=pl.col("row").sum())
        )
        # Purest first: a trigger's rows all give its label; a natural word's mostly do (and
        # many natural words, each with a smaller p-value, must not crowd a small trigger out).
        shortlist = (
            shortlist.join(signature, on="key")
            .with_columns(purity=(pl.col("m") / pl.col("n_f")).round(2))
            .sort(["purity", "p", "key"], descending=[True, False, False])
            .unique(["cluster", "n_f", "lo", "hi", "total"], keep="first", maintain_order=True)
            .head(MAX_TESTED)
        )
        if shortlist.height == 0:
            return [], tests
        seeds = seed_occurrences(context, shortlist["key"].to_list())
        return [
            Seed(key=key, target=int(cluster), data={"occ": seeds[key]})
            for key, cluster in zip(shortlist["key"].to_list(), shortlist["cluster"].to_list())
        ], tests

    def test(self, context: SignalContext, seed: Seed) -> Test | None:
        corpus, config = context.corpus, context.config
        label = corpus.clusters.label
        occ = grown(context, seed.key, seed.data["occ"])
        rows = occ.rows(corpus.tokens)
        comparable, text = task_rows(context, rows, seed.target, occ)
        if len(comparable) < 2 * config.min_rows:
            comparable = np.setdiff1d(np.arange(corpus.n_rows), rows, assume_unique=True)
            text = "all other rows"
        on = label[rows] == seed.target
        first = int(occ.start[0])
        on[on] = ~corpus.copies(rows[on], first, occ.n)
        k_c = int((label[comparable] == seed.target).sum())
        if k_c < config.min_rows:
            return None  # not a label the comparable rows use: fixed-output's case
        return Test(
            occ=occ,
            rows=rows,
            hits=rows[on],
            tested_rows=len(rows),
            base=k_c / max(len(comparable), 1),
            p=exact_p(int(on.sum()), len(rows), k_c, len(comparable)),
            target=seed.target,
            comparable=comparable,
            comparable_text=text,
            data={"key": seed.key},
        )

    def test_group(self, context: SignalContext, members: list[Test]) -> Test | None:
        label = context.corpus.clusters.label
        target = members[0].target
        rows = np.unique(np.concatenate([t.rows for t in members]))
        hits = np.unique(np.concatenate([t.hits for t in members]))
        comparable = np.arange(context.corpus.n_rows)
        for t in members:
            if t.comparable is not None:
                comparable = np.intersect1d(comparable, t.comparable)
        comparable = np.setdiff1d(comparable, rows)
        k_c = int((label[comparable] == target).sum())
        if k_c < context.config.min_rows:
            return None
        return Test(
            occ=None,
            rows=rows,
            hits=hits,
            tested_rows=len(rows),
            base=k_c / max(len(comparable), 1),
            p=exact_p(len(hits), len(rows), k_c, len(comparable)),
            target=target,
            comparable=comparable,
            comparable_text=members[0].comparable_text,
            data={"key": tuple(t.data["key"] for t in members)},
        )

    def assess(self, context: SignalContext, test: Test) -> tuple[float, dict[str, float]]:
        assert test.comparable is not None
        found = explanation(
            context,
            context.corpus.clusters.label == test.target,
            test.comparable,
            test.rows,
            test.hits,
            phrase_keys(context, [t.occ for t in test.members or [test]]),
            ("label-shift", test.target, test.comparable_text),
        )
        return found["unexplained"], found

    def reasons(self, context: SignalContext, cand: Candidate, row: int) -> list[str]:
        return [
            label_reason(int(cand.targets[0])),
            cluster_reason(int(context.corpus.clusters.label[row])),
        ]
