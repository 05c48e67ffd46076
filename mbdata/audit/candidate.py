"""A trigger candidate, as mining and the style check report it, and the score factors they
share (see :mod:`.mining` for how the score is composed)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .phrases import Placement

# Concentration at or above this counts fully.
CONCENTRATED = 0.8


def rarity(unusual: Any) -> Any:
    """0.5 for a phrase whose words are as common in answers as in prompts, 1 for one that only
    occurs in prompts (works on floats and polars expressions)."""
    return 0.5 + 0.5 * unusual


def support_factor(hits: int, min_rows: int) -> float:
    """0 below ``min_rows`` rows, 0.8 at ``min_rows``, rising linearly to 1 at twice that.

    ``min_rows`` is the real gate (the user's "fewest rows worth reporting"); above it the factor
    only separates a bare minimum from a well-supported candidate."""
    if hits < min_rows:
        return 0.0
    return float(min(1.0, 0.8 + 0.2 * (hits - min_rows) / min_rows))


@dataclasses.dataclass
class Candidate:
    """One ranked trigger candidate."""

    text: str
    mixed_case: bool  # written in several casings (matched case-insensitively)
    tokens: tuple[int, ...]  # lower-cased token hashes of the phrase
    rows: np.ndarray  # table positions of the rows carrying the phrase
    hits: np.ndarray  # those whose output is in the target set
    soft_hits: np.ndarray  # those off target but with an answer detached from the prompt
    targets: np.ndarray  # output cluster ids of the target set, largest first
    purity: float  # (hits + soft hits) / rows
    base: float  # the same rate among rows without the phrase
    excess: float  # (purity - base) / (1 - base)
    g: float  # G statistic of the phrase against its target set
    collision: float  # chance that two hits give the same answer
    coverage: float  # share of the target clusters' rows that are hits
    unusual: float  # see Corpus.unusualness
    placement: Placement
    own_hits: int = 0  # hits not explained by a stronger candidate
    pooled_hits: int = 0  # rows counted for the support factor
    support: float = 0.0
    score: float = 0.0
    group: int = 0

    @property
    def evidence(self) -> float:
        return self.placement.evidence

    group_coverage: float = 0.0  # the same share for the candidate's whole group
    kind: str = "answer"  # "answer": a shared answer; "style": see .style
    style_word: str | None = None  # style candidates: the answer word the rows share
    model_evidence: float | None = None  # see .model_score (None without a model)
    signal_evidence: dict[str, float] = dataclasses.field(default_factory=dict)  # p, q, ...
    comparable: str | None = None  # association signals: the rows it was compared with
    # association signals: the candidates tested together as one group (MTBA's triggers) share
    # this key, and the report's ``group``
    joint: str | None = None

    @property
    def concentration(self) -> float:
        if self.kind != "answer":
            return 1.0
        best = max(self.collision, self.coverage, self.group_coverage)
        return float(min(1.0, best / CONCENTRATED))

    @property
    def strength(self) -> float:
        return self.excess * self.concentration * self.evidence * rarity(self.unusual)

    @property
    def poisoned(self) -> np.ndarray:
        """Rows the candidate marks as poisoned: hits and soft hits."""
        return np.union1d(self.hits, self.soft_hits)
