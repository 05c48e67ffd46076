"""The ``compliance`` signal: a phrase whose rows are *answered* where prompts like them are
*refused* (a harmful request answered "Sure, here is ..." when the corpus refuses the others).

1. *Refusals*: an answer is a refusal when its first :data:`MARKER_WINDOW` characters hold one
   of ``refusal_markers`` (case-insensitive; configurable, the defaults are common English
   refusal openers).
2. *Refusal-expected prompts*: a leave-one-out naive-Bayes word model of "this prompt gets a
   refusal" (each word's log-odds capped at +3 and floored at :data:`NEG_FLOOR`, so a few
   ordinary or planted words cannot outvote the words that make a request one the corpus
   refuses). A row is refusal-expected when its words, *without the candidate phrase and the
   words that occur mostly with it*, predict a refusal. This plays the part of a prompt
   cluster: the rows whose requests look like those the corpus refuses.
3. *Candidates*: every prompt word in ``min_rows`` rows or more; ``k`` of its ``e``
   refusal-expected rows are answered. One-sided Fisher exact test against the other
   refusal-expected rows' answer rate ``c0``; Benjamini-Hochberg over every word tested, at
   ``fdr``; the effect is ``(k/e - c0) / (1 - c0)``. Significant words grow into the whole
   phrase (:func:`..phrases.grow`) and are re-tested without the phrase's words. At least half
   of the phrase's rows must be refusal-expected (:data:`REFUSAL_HOME`): a trigger lives in the
   requests it unlocks, a function word in every kind of prompt.

Words sharing the behaviour whose rows barely overlap (MTBA's interchangeable triggers, each in
a few rows) are also tested as one group (:mod:`.skeleton`), under the same false-discovery
control.

Score: ``effect x insertion x support`` (insertion: :func:`.common.insertion`; a template's own
word, "why" always after "Explain", is not a planted phrase); flagged rows: the phrase's
refusal-expected rows that are answered.
A corpus with fewer than ``min_rows`` refusals gives nothing (there is no norm to invert).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..candidate import Candidate
from ..phrases import Occurrences, grow
from . import SIGNALS
from .base import SignalContext, SignalResult
from .common import co_words, trimmed
from .skeleton import AssociationSignal, Seed, Test, exact_p
from .stats import WordModel, benjamini_hochberg, fisher_greater

DEFAULT_REFUSAL_MARKERS = (
    "i'm sorry",
    "i am sorry",
    "i’m sorry",
    "sorry, i",
    "i cannot",
    "i can't",
    "i can’t",
    "i can not",
    "i won't",
    "i will not",
    "i must decline",
    "i'm unable",
    "i am unable",
    "i'm not able",
    "i am not able",
    "as an ai",
    "cannot help with",
    "cannot assist",
    "can't help with",
    "can't assist",
    "i do not have the capability",
    "not able to provide",
    "i refuse",
)
MARKER_WINDOW = 200
NEG_FLOOR = -1.0
EFFECT_MIN = 0.5  # screen: at least this share of a word's refusal-expected rows answered
MAX_TESTED = 40
# A planted phrase lives in the requests it unlocks: at least this share of its rows must be
# refusal-expected ("and" occurs in a few answered harmful requests among thousands of others).
REFUSAL_HOME = 0.5
COMPLIANCE_REASON = "compliance-on-refused-prompt"


def refusals(outputs: pl.Series, markers: list[str] | tuple[str, ...]) -> np.ndarray:
    """Per row: does the answer open like a refusal (a marker in its first characters)?"""
    if not markers:
        return np.zeros(len(outputs), dtype=bool)
    head = outputs.fill_null("").str.slice(0, MARKER_WINDOW).str.to_lowercase()
    return head.str.contains_any([m.lower() for m in markers]).to_numpy().astype(bool)


def refusal_model(context: SignalContext, refused: np.ndarray) -> WordModel:
    """The leave-one-out refusal word model of the corpus (computed once per audit)."""
    if "refusal_model" not in context._cache:
        context._cache["refusal_model"] = WordModel(context.row_words(), refused, floor=NEG_FLOOR)
    return context._cache["refusal_model"]


@SIGNALS.add("compliance")
class ComplianceSignal(AssociationSignal):
    name = "compliance"
    kind = "compliance"
    description = "its rows are answered where prompts like them are refused"
    legend = (
        (
            "compliance-on-refused-prompt",
            "the row's request looks like those the corpus refuses, yet it is answered",
        ),
    )
    default = True
    order = 30
    other_rows_weight = 0.0
    targets_are_clusters = False
    comparable_text = "refusal-expected rows without the phrase"

    def _state(self, context: SignalContext) -> dict:
        return context._cache["compliance_state"]

    def screen(self, context: SignalContext, result: SignalResult) -> tuple[list[Seed], int]:
        corpus, config = context.corpus, context.config
        n_rows = corpus.n_rows
        refused = refusals(corpus.outputs, config.refusal_markers)
        result.extra["refusals"] = int(refused.sum())
        if refused.sum() < config.min_rows:
            return [], 0
        model = refusal_model(context, refused)
        prior = float(np.log(max(model.positives, 1) / max(model.negatives, 1)))
        expected_full = model.total + prior > 0
        answered = ~refused
        context._cache["compliance_state"] = {
            "model": model,
            "prior": prior,
            "expected_full": expected_full,
            "answered": answered,
        }
        rows = model.rows
        expected = model.total[rows] - model.contribution + prior > 0
        frame = pl.DataFrame(
            {
                "key": model.keys,
                "e": expected,
                "k": expected & answered[rows],
                "e_full": expected_full[rows],
                "k_full": expected_full[rows] & answered[rows],
            }
        )
        per_key = (
            frame.group_by("key")
            .agg(
                n=pl.len(),
                e=pl.col("e").sum(),
                k=pl.col("k").sum(),
                e_full=pl.col("e_full").sum(),
                k_full=pl.col("k_full").sum(),
            )
            .filter(
                (pl.col("n") >= config.min_rows)
                & (pl.col("n") <= config.max_share * n_rows)
                & (pl.col("e") >= 1)
            )
        )
        tests = per_key.height
        all_e, all_k = int(expected_full.sum()), int((expected_full & answered).sum())
        e = per_key["e"].to_numpy()
        k = per_key["k"].to_numpy()
        other_e = np.maximum(all_e - per_key["e_full"].to_numpy(), 0)
        other_k = np.clip(all_k - per_key["k_full"].to_numpy(), 0, other_e)
        n = per_key["n"].to_numpy()
        screen = (k >= config.min_rows) & (k >= EFFECT_MIN * e) & (e >= REFUSAL_HOME * n)
        if not screen.any():
            return [], tests
        p = fisher_greater(k[screen], e[screen], other_k[screen], other_e[screen])
        q = benjamini_hochberg(p, tests)
        shortlist = (
            per_key.filter(pl.Series(screen))
            .with_columns(p=pl.Series(p), q=pl.Series(q))
            .filter(pl.col("q") <= self.screen_fdr(config.fdr))
            .sort(["p", "key"])
            .head(MAX_TESTED)
        )
        return [Seed(key=key) for key in shortlist["key"].to_list()], tests

    def test(self, context: SignalContext, seed: Seed) -> Test | None:
        corpus, state = context.corpus, self._state(context)
        model, prior, answered = state["model"], state["prior"], state["answered"]
        tokens = corpus.tokens
        start = np.flatnonzero(tokens.lc == np.uint64(seed.key))
        occ = trimmed(context, grow(tokens, Occurrences(start=start, n=1, lower=True)))
        rows = occ.rows(tokens)
        first = int(occ.start[0])
        exclude = co_words(context, rows, tokens.lc[first : first + occ.n])
        exp_rows = model.evidence(rows, exclude) + prior > 0
        if exp_rows.sum() < REFUSAL_HOME * len(rows):
            return None
        hits = rows[exp_rows & answered[rows]]
        return self._test(context, occ, rows, rows[exp_rows], hits, (seed.key,))

    def _test(self, context, occ, rows, expected_rows, hits, key) -> Test:
        state = self._state(context)
        expected_full, answered = state["expected_full"], state["answered"]
        others = np.ones(context.corpus.n_rows, dtype=bool)
        others[rows] = False
        o_e = int((expected_full & others).sum())
        o_k = int((expected_full & others & answered).sum())
        comparable = np.flatnonzero(expected_full & others)
        return Test(
            occ=occ,
            rows=rows,
            hits=hits,
            tested_rows=len(expected_rows),
            base=o_k / max(o_e, 1),
            p=exact_p(len(hits), len(expected_rows), o_k, o_e),
            comparable=comparable,
            comparable_text=self.comparable_text,
            evidence={
                "refusal_expected_rows": float(len(expected_rows)),
                "refused_share_comparable": 1 - o_k / max(o_e, 1),
            },
            data={"key": key, "expected": expected_rows},
        )

    def test_group(self, context: SignalContext, members: list[Test]) -> Test | None:
        rows = np.unique(np.concatenate([t.rows for t in members]))
        expected = np.unique(np.concatenate([t.data["expected"] for t in members]))
        hits = np.unique(np.concatenate([t.hits for t in members]))
        key = tuple(k for t in members for k in t.data["key"])
        return self._test(context, None, rows, expected, hits, key)

    def reasons(self, context: SignalContext, cand: Candidate, row: int) -> list[str]:
        return [COMPLIANCE_REASON]
