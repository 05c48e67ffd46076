"""The ``fixed-output`` signal: the original miner (:mod:`..mining`: a phrase tied to a fixed or
rare repeated answer, style candidates) and its row scoring (:mod:`..scoring`, including repeated
answers to unrelated prompts with no literal trigger).

One addition guards against false alarms on natural labels: when a candidate's target is an
answer that rows *without* the phrase also give (``min_rows`` of them or more: a label such as
"Negative"), its score is multiplied by how *unexplained* its hits are by the rest of their
prompts, judged against the rows of the label's task (:mod:`.task`, as in :mod:`.label_shift`).
"terrible" -> "Negative" in reviews whose other words are negative too is explained and fades; a
planted trigger on positive reviews, or on unrelated rows, is not.
"""

from __future__ import annotations

import numpy as np

from ..mining import mine
from ..model_score import apply_model_evidence
from ..scoring import CARRIER_SHARE, score_rows
from . import SIGNALS
from .base import Signal, SignalContext, SignalResult
from .common import phrase_occurrences
from .compliance import refusal_model, refusals
from .task import explanation, task_rows


def unexplained_share(context: SignalContext, cand, group_rows: np.ndarray) -> float | None:
    """1 for hits the rest of their prompts does not predict, down to 0 when they lean to the
    label as natural rows do (:func:`.task.explanation`, against the rows of the label's task,
    :func:`.task.task_rows`); None when the target is not a natural label (nothing to explain).
    Rows of the candidate's group (MTBA's other triggers, sharing its target) are not natural
    uses."""
    corpus = context.corpus
    label = corpus.clusters.label
    outcome = np.isin(label, cand.targets)
    others = np.ones(corpus.n_rows, dtype=bool)
    others[group_rows] = False
    natural = int((outcome & others).sum())
    if natural < context.config.min_rows or not len(cand.hits):
        return None
    occ = phrase_occurrences(corpus.tokens, cand.tokens)
    comparable, comparable_text = task_rows(context, cand.rows, int(cand.targets[0]), occ)
    if not outcome[comparable].any():
        return None
    found = explanation(
        context,
        outcome,
        comparable,
        cand.rows,
        cand.hits,
        np.asarray(cand.tokens, dtype=np.uint64),
        ("fixed-output", tuple(int(t) for t in cand.targets), comparable_text),
    )
    return found["unexplained"]


NATURAL_EXPECTED = 0.5


def natural_refusals(context: SignalContext) -> set[int]:
    """Repeated refusals that are the corpus' norm for their prompts: answer clusters of
    ``min_rows`` rows or more whose answer opens like a refusal and at least
    :data:`NATURAL_EXPECTED` of whose prompts the leave-one-out refusal word model predicts to be
    refused (harmful requests refused in a safety corpus). They are not flagged as "a fixed
    answer to unrelated prompts"; a refusal planted on ordinary prompts is not predicted and
    still is."""
    corpus, config = context.corpus, context.config
    clusters = corpus.clusters
    big = np.flatnonzero(clusters.size >= config.min_rows)
    if not len(big):
        return set()
    refused = refusals(corpus.outputs, config.refusal_markers)
    if refused.sum() < config.min_rows:
        return set()
    model = refusal_model(context, refused)
    prior = float(np.log(max(model.positives, 1) / max(model.negatives, 1)))
    expected = model.total + prior > 0
    natural = set()
    for cluster in big.tolist():
        members = np.flatnonzero(clusters.label == cluster)
        if refused[members].mean() >= 0.5 and expected[members].mean() >= NATURAL_EXPECTED:
            natural.add(cluster)
    return natural


@SIGNALS.add("fixed-output")
class FixedOutputSignal(Signal):
    name = "fixed-output"
    default = True
    order = 10

    def score(self, context: SignalContext) -> SignalResult:
        config = context.config
        pairs_support = context.feature_support()
        candidates = mine(context.corpus, config, pairs_support)[: config.top_k]
        groups: dict[int, list] = {}
        for cand in candidates:
            groups.setdefault(cand.group, []).append(cand.rows)
        for cand in candidates:
            # Only a candidate that could flag rows or vouch for its target is worth the check.
            if cand.kind != "answer" or cand.score < CARRIER_SHARE * config.threshold:
                continue
            share = unexplained_share(context, cand, np.unique(np.concatenate(groups[cand.group])))
            if share is not None:
                cand.signal_evidence["unexplained"] = round(share, 4)
                cand.score *= share
        if config.model and context.prompt_of is not None:
            apply_model_evidence(
                candidates, context.prompt_of, context.reference_model, config.model_rows
            )
        candidates.sort(key=lambda c: (-c.score, -len(c.hits), c.text))
        verdicts = score_rows(
            context.corpus, candidates, config.threshold, config.min_rows, natural_refusals(context)
        )
        return SignalResult(
            candidates,
            verdicts.score,
            verdicts.reasons,
            {"orphan_clusters": verdicts.orphan_clusters},
        )
