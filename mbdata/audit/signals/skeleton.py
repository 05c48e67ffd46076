"""The shared skeleton of the association signals (label-shift, compliance, structure).

Every association signal answers one question, "do the rows holding this feature behave
differently from comparable rows, and not because of what they say?", in the same steps:

1. ``screen``: a cheap test of every feature (n-gram, word, sentence shape) against a target,
   giving a shortlist of :class:`Seed` and the number ``m`` of tests that occurred;
2. ``test``: per seed, the whole phrase, its rows, its hits, comparable rows, an exact p-value
   (a :class:`Test`), or None;
3. *groups* (:func:`group_tests`): features sharing one target whose rows barely overlap (MTBA's
   interchangeable triggers) are also tested together, as one more test each;
4. Benjamini-Hochberg over the ``m`` screened tests plus the group tests, at ``fdr``;
5. ``assess``: the signal's own factor in 0..1 (how *unexplained* the hits are) and evidence;
6. candidate, score ``effect x factor x insertion x support``, rescaled by the reference model's
   evidence when ``model`` is set and the signal says what to remove (``removal``), findings not
   already reported, row scores and reasons.

A signal is one subclass that writes ``screen``, ``test`` and optionally ``assess``,
``reasons`` and ``removal``: the rest, and its place in the report, comes from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..candidate import Candidate, support_factor
from ..model_score import Removal, apply_model_evidence
from ..phrases import Occurrences
from ..scoring import TRIGGER_ONLY_WEIGHT, trigger_reason
from .base import Signal, SignalContext, SignalResult
from .common import insertion, make_candidate, new_findings
from .stats import benjamini_hochberg, fisher_greater

EFFECT_MIN = 0.5
SCREEN_FDR = 10.0
# Groups: members must be significant alone at this (uncorrected) level, overlap little, and
# the group must hold at least two of them.
GROUP_P = 0.05
GROUP_OVERLAP = 0.2
GROUP_MAX = 8


@dataclasses.dataclass
class Seed:
    """A shortlisted feature: its key and target (a cluster id, or 0 where the target is the
    signal's one behaviour), plus what the signal wants to carry to ``test``."""

    key: Any
    target: int = 0
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Test:
    """One feature tested: its occurrences, rows, hits (rows showing the target), the target
    rate of comparable rows (``base``) and the exact one-sided p-value."""

    occ: Occurrences | None
    rows: np.ndarray
    hits: np.ndarray
    tested_rows: int  # the rows the rate is taken over (rows, or those of them that qualify)
    base: float
    p: float
    target: int = 0
    comparable: np.ndarray | None = None
    comparable_text: str | None = None
    evidence: dict[str, float] = dataclasses.field(default_factory=dict)
    members: list[Test] = dataclasses.field(default_factory=list)  # a group's tests
    data: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def purity(self) -> float:
        return len(self.hits) / max(self.tested_rows, 1)

    @property
    def effect(self) -> float:
        return float(np.clip((self.purity - self.base) / max(1.0 - self.base, 1e-9), 0.0, 1.0))


def exact_p(k: int, n: int, k_other: int, n_other: int) -> float:
    return float(
        fisher_greater(np.array([k]), np.array([n]), np.array([k_other]), np.array([n_other]))[0]
    )


class AssociationSignal(Signal):
    """Screen, test, correct for multiple testing, assess, report (see the module doc)."""

    comparable_text = ""
    # Rows of a finding that carry it but do not show its target score this share of it.
    other_rows_weight = TRIGGER_ONLY_WEIGHT
    # Whether features sharing a target are also tested as a group.
    groups = True
    # Whether the feature is a phrase placed in its rows (its insertion evidence counts).
    placed = True

    @staticmethod
    def screen_fdr(fdr: float) -> float:
        """Features pass the screen at a looser level than the final test (:data:`SCREEN_FDR`
        times ``fdr``): a trigger of an MTBA group may hold too few rows alone, and its group is
        tested (and corrected) later; every finding still passes Benjamini-Hochberg at ``fdr``."""
        return min(1.0, SCREEN_FDR * fdr)

    # --- what each signal writes --------------------------------------------------------------

    def screen(self, context: SignalContext, result: SignalResult) -> tuple[list[Seed], int]:
        raise NotImplementedError  # pragma: no cover - interface

    def test(self, context: SignalContext, seed: Seed) -> Test | None:
        raise NotImplementedError  # pragma: no cover - interface

    def test_group(self, context: SignalContext, members: list[Test]) -> Test | None:
        """The members' rows pooled, tested against the rows comparable to all of them."""
        return None

    def assess(self, context: SignalContext, test: Test) -> tuple[float, dict[str, float]]:
        """The signal's own factor (0..1) and its evidence; 1 by default."""
        return 1.0, {}

    def reasons(self, context: SignalContext, cand: Candidate, row: int) -> list[str]:
        """Reasons of a hit row besides ``trigger:"..."``."""
        return []

    def candidate_text(self, test: Test) -> str | None:
        """The candidate's name when it is not the phrase's text (a sentence shape)."""
        return None

    def removal(self, cand: Candidate) -> Removal | None:
        """What the reference model removes from the candidate's prompts to judge whether it was
        inserted (:mod:`..model_score`); None: the signal's candidates get no model evidence."""
        return None

    # --- the skeleton ---------------------------------------------------------------------------

    def score(self, context: SignalContext) -> SignalResult:
        corpus, config = context.corpus, context.config
        result = SignalResult.empty(corpus.n_rows)
        if corpus.n_rows == 0:
            return result
        seeds, m = self.screen(context, result)
        result.extra.setdefault("tests", m)
        if not seeds:
            return result
        tested = [t for t in (self.test(context, s) for s in seeds) if t is not None]
        for test in tested:
            test.data["assessed"] = self.assess(context, test)
        if self.groups:
            grouped = group_tests(tested)
            pooled = []
            for members in grouped:
                group = self.test_group(context, members)
                if group is not None:
                    group.members = members
                    group.data["assessed"] = self.assess(context, group)
                    pooled.append(group)
            m += len(grouped)
            result.extra["group_tests"] = len(grouped)
            tested += pooled
        if not tested:
            return result
        q_values = benjamini_hochberg(np.array([t.p for t in tested]), m)
        found: list[Candidate] = []
        for test, q in zip(tested, q_values):
            if q > config.fdr or test.effect < EFFECT_MIN or len(test.hits) < config.min_rows:
                continue
            found += self._candidates(context, test, float(q))
        self._model_evidence(context, found)
        found.sort(key=lambda c: (-c.score, -len(c.hits), -len(c.tokens), c.text))
        kept = new_findings(context, found)
        self._score_rows(context, found, result)
        result.candidates = kept
        return result

    def _candidates(self, context: SignalContext, test: Test, q: float) -> list[Candidate]:
        """The finding of one test: its candidate, or for a group one candidate per member
        (each scored on the group's pooled evidence, with its own placement)."""
        config = context.config
        factor, evidence = test.data["assessed"]
        support = support_factor(len(test.hits), config.min_rows)
        out = []
        for part in test.members or [test]:
            if part.occ is None:
                continue
            kwargs: dict[str, Any] = dict(
                kind=self.kind,
                rows=part.rows if test.members else test.rows,
                hits=np.intersect1d(part.rows, test.hits) if test.members else test.hits,
                targets=np.array([test.target], dtype=np.int64)
                if self.targets_are_clusters and test.target >= 0
                else np.zeros(0, dtype=np.int64),
                purity=test.purity,
                base=test.base,
                effect=test.effect,
                support=support,
            )
            probe = make_candidate(
                context, part.occ, score=0.0, evidence={}, comparable=None, **kwargs
            )
            inserted = insertion(probe.placement) if self.placed else 1.0
            score = test.effect * factor * support * inserted
            if score <= 0:
                continue
            ev = {
                "p": test.p,
                "q": q,
                "comparable_rows": float(len(test.comparable))
                if test.comparable is not None
                else 0.0,
                **test.evidence,
                **evidence,
                "inserted": inserted,
            }
            if test.members:
                ev["group_members"] = float(len(test.members))
                ev["group_rows"] = float(len(test.rows))
            cand = make_candidate(
                context,
                part.occ,
                score=score,
                evidence=ev,
                comparable=test.comparable_text,
                **kwargs,
            )
            if test.members:
                cand.joint = f"{self.kind}:{test.target}:{test.data.get('key')}"
            named = self.candidate_text(part)
            if named is not None:
                cand.text = named
            out.append(cand)
        return out

    targets_are_clusters = True

    def _model_evidence(self, context: SignalContext, found: list[Candidate]) -> None:
        """With ``model`` set, the model evidence of every finding the signal can cut
        (:meth:`removal`), measured on its hits, the rows it would flag (a shape's other rows
        may be natural uses), before findings are ranked and rows scored."""
        config = context.config
        if not config.model or context.prompt_of is None:
            return
        cuts = {id(c): cut for c in found if (cut := self.removal(c)) is not None}
        measured = [c for c in found if id(c) in cuts]
        prompt_of = context.prompt_of
        apply_model_evidence(
            measured,
            lambda cand: prompt_of(dataclasses.replace(cand, rows=cand.hits)),
            context.reference_model,
            config.model_rows,
            removal_of=lambda cand: cuts[id(cand)],
        )

    def _score_rows(
        self, context: SignalContext, found: list[Candidate], result: SignalResult
    ) -> None:
        """Rows of every significant finding are scored, also of one not listed again because
        an earlier signal (or a longer phrase) already reports it."""
        for cand in found:
            reason = trigger_reason(cand.text)
            for row in cand.hits.tolist():
                result.score[row] = max(result.score[row], cand.score)
                for r in (reason, *self.reasons(context, cand, row)):
                    if r not in result.reasons[row]:
                        result.reasons[row].append(r)
            if self.other_rows_weight:
                for row in np.setdiff1d(cand.rows, cand.hits).tolist():
                    result.score[row] = max(result.score[row], self.other_rows_weight * cand.score)
                    if reason not in result.reasons[row]:
                        result.reasons[row].append(reason)


def group_tests(tested: list[Test]) -> list[list[Test]]:
    """Features to test together: per target, those significant alone at :data:`GROUP_P`
    (uncorrected), with an effect and the signal's own factor of at least :data:`EFFECT_MIN`
    (a natural label word, explained by its rows, never joins a trigger's group), whose rows
    overlap any other member's by at most :data:`GROUP_OVERLAP` (interchangeable triggers:
    MTBA plants one of three per row), at least two of them, the strongest :data:`GROUP_MAX`.
    Co-occurring triggers (CTBA) hold the same rows and are one phrase test already."""
    by_target: dict[int, list[Test]] = {}
    for t in sorted(tested, key=lambda t: t.p):
        if t.p > GROUP_P or t.occ is None or t.effect < EFFECT_MIN:
            continue
        if t.data.get("assessed", (1.0, {}))[0] < EFFECT_MIN:
            continue
        members = by_target.setdefault(t.target, [])
        if len(members) >= GROUP_MAX:
            continue
        if any(_overlap(t.rows, o.rows) > GROUP_OVERLAP for o in members):
            continue
        members.append(t)
    return [ms for _, ms in sorted(by_target.items()) if len(ms) >= 2]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return len(np.intersect1d(a, b)) / max(min(len(a), len(b)), 1)
