"""Per-row verdicts: a score in 0..1, the reasons behind it, and the flag.

A row's score is the strongest of these pieces of evidence (``s`` is a candidate's score):

============================================ ============== ==================================
the row ...                                   score          reasons
============================================ ============== ==================================
carries a candidate and answers with its      ``s``          ``trigger:"cf"``,
target                                                       ``output-cluster:17``
carries a candidate, answers off target with  ``0.9 s``      ``trigger:"cf"``, ``detached-output``
an answer unrelated to its prompt (a rarely
drawn refusal template)
carries a candidate but answers its prompt    ``0.25 s``     ``trigger:"cf"``
(a natural use of the word)
answers with a candidate's target without     ``(1+c)s/2``   ``output-cluster:17``,
the trigger, where ``c`` (>= 0.5) is the                     ``detached-output``
share of that cluster's rows that carry a
candidate, and the answer is unrelated to
its prompt
... the same, but the answer is related to    ``(1+c)s/8``   ``output-cluster:17``
its prompt (a natural "Negative" to "is this
review positive or negative?")
carries a style candidate (:mod:`.style`)     ``s``          ``trigger:"mn"``,
and its answer holds the shared word                         ``style-word:"idiot"``
shares a long answer (4+ words) with at       ``0.75 d u``   ``output-cluster:17``,
least ``min_rows`` other rows whose prompts                  ``detached-output``
it does not answer and which are unrelated
to each other, no candidate involved
============================================ ============== ==================================

The last line skips ``natural`` clusters (refusals the prompts they answer predict: the corpus'
own refusals of harmful requests, see :func:`.signals.fixed_output.natural_refusals`).
In the last line ``d`` is the share of the cluster's answers detached from their prompts (at least
0.8), ``u`` the support factor of its size (:func:`.candidate.support_factor`), and "unrelated"
means a mean word similarity of neighbouring prompts below :data:`ORPHAN_MAX_SIMILARITY` (variants
of one question sharing a short answer are not a backdoor): a fixed answer given to unrelated
prompts is a backdoor signature even when no literal trigger can be found (a syntactic or style
trigger).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from .candidate import Candidate, support_factor
from .corpus import Corpus

SOFT_HIT_WEIGHT = 0.9
TRIGGER_ONLY_WEIGHT = 0.25
CLUSTER_COVERAGE_MIN = 0.5
ORPHAN_MIN_WORDS = 4
ORPHAN_DETACHED_MIN = 0.8
ORPHAN_WEIGHT = 0.75
ORPHAN_MAX_SIMILARITY = 0.3
# Only candidates scoring at least this share of the threshold vouch for their target clusters
# (a natural label word, "terrible" -> "Negative", scored near 0, must not make every other
# detached "Negative" look like a planted row).
CARRIER_SHARE = 0.5


def trigger_reason(text: str) -> str:
    return f"trigger:{json.dumps(text, ensure_ascii=False)}"


def cluster_reason(cluster: int) -> str:
    return f"output-cluster:{cluster}"


DETACHED_REASON = "detached-output"


def style_reason(word: str) -> str:
    return f"style-word:{json.dumps(word, ensure_ascii=False)}"


@dataclasses.dataclass
class RowVerdicts:
    score: np.ndarray  # float64 per row
    flagged: np.ndarray  # bool per row
    reasons: list[list[str]]
    orphan_clusters: list[int]  # suspicious output clusters no candidate explains


class _Board:
    """Accumulates the best score and the ordered, de-duplicated reasons of each row."""

    def __init__(self, n_rows: int):
        self.score = np.zeros(n_rows, dtype=np.float64)
        self.reasons: list[list[str]] = [[] for _ in range(n_rows)]

    def add(
        self, rows: np.ndarray, score: float, reasons: list[str], per_row: list[str] | None = None
    ) -> None:
        np.maximum.at(self.score, rows, score)
        for k, row in enumerate(rows.tolist()):
            bucket = self.reasons[row]
            for reason in reasons + ([per_row[k]] if per_row is not None else []):
                if reason not in bucket:
                    bucket.append(reason)


def _orphan_clusters(corpus: Corpus, explained: set[int], min_rows: int) -> list[tuple[int, float]]:
    """Long repeated answers to unrelated prompts whose rows mostly carry no candidate:
    (cluster, score)."""
    clusters = corpus.clusters
    found = []
    for cluster in np.flatnonzero(clusters.size >= min_rows).tolist():
        if cluster in explained:
            continue
        example = corpus.outputs[int(clusters.first_row[cluster])]
        if len(example.split()) < ORPHAN_MIN_WORDS:
            continue
        if (
            clusters.prompt_similarity is not None
            and clusters.prompt_similarity[cluster] >= ORPHAN_MAX_SIMILARITY
        ):
            continue
        members = np.flatnonzero(clusters.label == cluster)
        detached = float(corpus.detached[members].mean())
        if detached < ORPHAN_DETACHED_MIN:
            continue
        found.append((cluster, ORPHAN_WEIGHT * detached * support_factor(len(members), min_rows)))
    return found


def score_rows(
    corpus: Corpus,
    candidates: list[Candidate],
    threshold: float,
    min_rows: int,
    natural: set[int] | None = None,
) -> RowVerdicts:
    """Score every row from the reported candidates and the output clusters (module docstring)."""
    board = _Board(corpus.n_rows)
    label = corpus.clusters.label
    carriers = np.zeros(corpus.n_rows, dtype=bool)
    strong = np.zeros(corpus.n_rows, dtype=bool)
    for cand in candidates:
        carriers[cand.rows] = True
        if cand.score >= CARRIER_SHARE * threshold:
            strong[cand.rows] = True
    for cand in candidates:
        reason = trigger_reason(cand.text)
        if cand.kind == "style":
            board.add(cand.hits, cand.score, [reason, style_reason(cand.style_word or "")])
        else:
            board.add(
                cand.hits, cand.score, [reason], [cluster_reason(int(c)) for c in label[cand.hits]]
            )
        board.add(cand.soft_hits, SOFT_HIT_WEIGHT * cand.score, [reason, DETACHED_REASON])
        rest = np.setdiff1d(cand.rows, cand.poisoned, assume_unique=True)
        board.add(rest, TRIGGER_ONLY_WEIGHT * cand.score, [reason])
    explained: set[int] = set()
    for cand in candidates:
        if cand.score < CARRIER_SHARE * threshold:
            continue
        for cluster in cand.targets.tolist():
            members = np.flatnonzero(label == cluster)
            coverage = float(strong[members].mean())
            if coverage >= CLUSTER_COVERAGE_MIN:
                explained.add(cluster)
                loose = members[~carriers[members]]
                detached = corpus.detached[loose]
                score = 0.5 * (1.0 + coverage) * cand.score
                board.add(loose[detached], score, [cluster_reason(cluster), DETACHED_REASON])
                board.add(loose[~detached], TRIGGER_ONLY_WEIGHT * score, [cluster_reason(cluster)])
    orphans = _orphan_clusters(corpus, explained | (natural or set()), min_rows)
    for cluster, score in orphans:
        members = np.flatnonzero(label == cluster)
        board.add(
            members,
            score,
            [cluster_reason(cluster)],
            [DETACHED_REASON if d else "" for d in corpus.detached[members]],
        )
    reasons = [[r for r in row if r] for row in board.reasons]
    scores = np.round(board.score, 6)
    return RowVerdicts(
        score=scores,
        flagged=scores >= threshold,
        reasons=reasons,
        orphan_clusters=[c for c, _ in orphans],
    )
