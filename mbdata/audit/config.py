"""The recipe's ``audit:`` block: settings of the corpus audit (``mb audit`` and the build stage).

Every threshold lives here so that a build's manifest records exactly how its corpus was filtered.
The defaults are the ones the benchmark in ``bench/audit.py`` was measured with.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.config import spec
from ..core.errors import RecipeError
from ..io.schema import ROLES


def _default_signals() -> list[str]:
    from .signals import default_signals

    return list(default_signals())


def _refusal_markers() -> tuple[str, ...]:
    from .signals.compliance import DEFAULT_REFUSAL_MARKERS

    return DEFAULT_REFUSAL_MARKERS


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Find planted triggers and poisoned rows without knowing the trigger (see docs/audit.md)."""

    threshold: float = spec(
        0.5, ge=0.0, le=1.0, doc="flag rows whose score is at least this (scores are 0..1)"
    )
    keep: bool = spec(
        False, doc="keep flagged rows and tag them `audit=flagged` instead of dropping them"
    )
    min_rows: int = spec(5, ge=2, doc="fewest poisoned rows a trigger candidate must explain")
    max_share: float = spec(
        0.4, gt=0.0, le=1.0, doc="n-grams in more than this share of rows are never candidates"
    )
    ngram_max: int = spec(
        3,
        ge=1,
        le=5,
        doc="longest word n-gram mined (candidates then grow to the whole repeated phrase)",
    )
    near_duplicates: bool = spec(
        True,
        doc="merge near-identical answers into one output "
        "cluster, and near copies of a row into one row",
    )
    near_duplicate_threshold: float = spec(
        0.8, gt=0.0, le=1.0, doc="word Jaccard similarity for `near_duplicates`"
    )
    top_k: int = spec(20, ge=1, le=1000, doc="trigger candidates reported")
    roles: list[str] = spec(
        default_factory=lambda: ["clean", "attack"],
        doc="rows of these roles are audited, others pass through "
        "untouched. Inside `mb build` the audit runs right after the "
        "sources, where every row is still `clean`; this matters when "
        "AuditStage runs on a built table from Python",
    )
    model: str | None = spec(
        None,
        doc="optional reference model (an mbtrain model folder, a local "
        "Hugging Face folder or a .gguf file) for the model-based "
        "score",
    )
    model_rows: int = spec(
        32,
        ge=1,
        doc="model score: rows per candidate scored (ONION-style "
        "perplexity change when the candidate is removed; a structure "
        "shape: its flagged rows, without their opening clause)",
    )

    fdr: float = spec(
        0.01,
        gt=0.0,
        le=0.5,
        doc="false-discovery rate of the association signals (label-shift, "
        "compliance): Benjamini-Hochberg over every candidate tested",
    )
    signals: list[str] = spec(
        default_factory=_default_signals,
        doc="signals run, in order (see docs/audit.md); each finds candidates and scores rows",
    )
    refusal_markers: list[str] = spec(
        default_factory=lambda: list(_refusal_markers()),
        doc="compliance signal: an answer whose first 200 "
        "characters hold one of these (any case) is a "
        "refusal",
    )

    def validate(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        for i, role in enumerate(self.roles):
            if role not in ROLES:
                raise RecipeError(
                    f"{prefix}roles[{i}]: {role!r} is not a role; roles: " + ", ".join(ROLES)
                )
        from .signals import SIGNALS

        for i, name in enumerate(self.signals):
            SIGNALS.get(name, f"{prefix}signals[{i}]")
        if not self.roles:
            raise RecipeError(f"{prefix}roles: must name at least one role")


def config_from_options(**options: Any) -> AuditConfig:
    """The default audit settings with the command line's values (``None`` keeps the default),
    checked like a recipe's ``audit:`` block (bounds, signal names): what ``mb audit`` runs with."""
    from ..core.config import from_mapping

    given = {k: v for k, v in options.items() if v is not None}
    config = dataclasses.replace(from_mapping(AuditConfig, {}, "audit"), **given)
    return from_mapping(AuditConfig, dataclasses.asdict(config), "audit")
