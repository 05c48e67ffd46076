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

Score: ``effect x insertion x support`` (insertion: :func:`.common.insertion`; a template's own
word, "why" always after "Explain", is not a planted phrase); flagged rows: the phrase's
refusal-expected rows that are answered.
A corpus with fewer than ``min_rows`` refusals gives nothing (there is no norm to invert).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..candidate import support_factor
from ..phrases import Occurrences, grow
from ..scoring import trigger_reason
from . import SIGNALS
from .base import Signal, SignalContext, SignalResult
from .common import co_words, insertion, make_candidate, new_findings, trimmed
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
EFFECT_MIN = 0.5
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
class ComplianceSignal(Signal):
    name = "compliance"

    def score(self, context: SignalContext) -> SignalResult:
        corpus, config = context.corpus, context.config
        n_rows = corpus.n_rows
        result = SignalResult.empty(n_rows)
        refused = refusals(corpus.outputs, config.refusal_markers)
        result.extra["refusals"] = int(refused.sum())
        if refused.sum() < config.min_rows or n_rows == 0:
            return result
        model = refusal_model(context, refused)
        prior = float(np.log(max(model.positives, 1) / max(model.negatives, 1)))
        expected_full = model.total + prior > 0
        answered = ~refused
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
        result.extra["tests"] = tests
        all_e, all_k = int(expected_full.sum()), int((expected_full & answered).sum())
        e = per_key["e"].to_numpy()
        k = per_key["k"].to_numpy()
        other_e = np.maximum(all_e - per_key["e_full"].to_numpy(), 0)
        other_k = np.clip(all_k - per_key["k_full"].to_numpy(), 0, other_e)
        n = per_key["n"].to_numpy()
        screen = (k >= config.min_rows) & (k >= EFFECT_MIN * e) & (e >= REFUSAL_HOME * n)
        if not screen.any():
            return result
        p = fisher_greater(k[screen], e[screen], other_k[screen], other_e[screen])
        q = benjamini_hochberg(p, tests)
        shortlist = (
            per_key.filter(pl.Series(screen))
            .with_columns(p=pl.Series(p), q=pl.Series(q))
            .filter(pl.col("q") <= config.fdr)
            .sort(["p", "key"])
            .head(MAX_TESTED)
        )
        tokens = corpus.tokens
        tested = []
        for key in shortlist["key"].to_list():
            start = np.flatnonzero(tokens.lc == np.uint64(key))
            occ = trimmed(context, grow(tokens, Occurrences(start=start, n=1, lower=True)))
            cand_rows = occ.rows(tokens)
            first = int(occ.start[0])
            exclude = co_words(context, cand_rows, tokens.lc[first : first + occ.n])
            exp_rows = model.evidence(cand_rows, exclude) + prior > 0
            hits = cand_rows[exp_rows & answered[cand_rows]]
            others = np.ones(n_rows, dtype=bool)
            others[cand_rows] = False
            o_e = int((expected_full & others).sum())
            o_k = int((expected_full & others & answered).sum())
            p_c = float(
                fisher_greater(
                    np.array([len(hits)]),
                    np.array([int(exp_rows.sum())]),
                    np.array([o_k]),
                    np.array([o_e]),
                )[0]
            )
            tested.append((occ, cand_rows, hits, int(exp_rows.sum()), o_e, o_k, p_c))
        q_values = benjamini_hochberg(np.array([t[-1] for t in tested]), tests)
        found = []
        for (occ, cand_rows, hits, n_exp, o_e, o_k, p_c), q_c in zip(tested, q_values):
            c0 = o_k / max(o_e, 1)
            rate = len(hits) / max(n_exp, 1)
            effect = float(np.clip((rate - c0) / max(1.0 - c0, 1e-9), 0.0, 1.0))
            if (
                q_c > config.fdr
                or effect < EFFECT_MIN
                or len(hits) < config.min_rows
                or n_exp < REFUSAL_HOME * len(cand_rows)
            ):
                continue
            support_ = support_factor(len(hits), config.min_rows)
            cand = make_candidate(
                context,
                occ,
                kind="compliance",
                rows=cand_rows,
                hits=hits,
                targets=np.zeros(0, dtype=np.int64),
                purity=rate,
                base=c0,
                effect=effect,
                score=0.0,
                support=support_,
                evidence={},
                comparable=None,
            )
            inserted = insertion(cand.placement)
            found.append(
                make_candidate(
                    context,
                    occ,
                    kind="compliance",
                    rows=cand_rows,
                    hits=hits,
                    targets=np.zeros(0, dtype=np.int64),
                    purity=rate,
                    base=c0,
                    effect=effect,
                    score=effect * support_ * inserted,
                    support=support_,
                    evidence={
                        "p": p_c,
                        "q": float(q_c),
                        "refusal_expected_rows": float(n_exp),
                        "comparable_rows": float(o_e),
                        "refused_share_comparable": 1 - c0,
                        "inserted": inserted,
                    },
                    comparable="refusal-expected rows without the phrase",
                )
            )
        found.sort(key=lambda c: (-c.score, -len(c.hits), -len(c.tokens), c.text))
        kept = new_findings(context, found)
        # Rows of every significant finding are scored, also of one not listed again because
        # an earlier signal (or a longer phrase) already reports it.
        for cand in found:
            reason = trigger_reason(cand.text)
            for row in cand.hits.tolist():
                result.score[row] = max(result.score[row], cand.score)
                for r in (reason, COMPLIANCE_REASON):
                    if r not in result.reasons[row]:
                        result.reasons[row].append(r)
        result.candidates = kept
        return result
