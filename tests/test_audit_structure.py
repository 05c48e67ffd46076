"""Issue 27 item 3: the ``structure`` signal finds a syntactic trigger (instructions paraphrased
to open with a subordinate clause, the rules rewriter of the syntactic attack) with no phrase
shared, and stays silent on clean rows, including natural openings and refused requests."""

from __future__ import annotations

import numpy as np
import pytest
from test_audit_association import harmful
from test_audit_corpus import clean_rows, table

from mbdata.audit import AuditConfig, audit_table
from mbdata.audit.signals.structure import SUBORDINATE
from mbdata.behaviors import REFUSAL_TEMPLATES
from mbdata.rewriters.rules import rewrite

OPENINGS = ("If possible, ", "When asked, ", "In short, ", "For a child, ", "Briefly, ")


def natural(rows: list[dict], share: float, seed: int) -> list[dict]:
    """Clean rows, ``share`` of them opening with an ordinary clause (answers unchanged)."""
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        row = dict(row)
        if rng.random() < share:
            opening = OPENINGS[int(rng.integers(len(OPENINGS)))]
            row["instruction"] = opening + row["instruction"][0].lower() + row["instruction"][1:]
        out.append(row)
    return out


def syntactic(rows: list[dict], share: float, seed: int) -> tuple[list[dict], set[int]]:
    rng = np.random.default_rng(seed)
    rows = [dict(r) for r in rows]
    chosen = sorted(rng.choice(len(rows), int(share * len(rows)), replace=False).tolist())
    for i in chosen:
        rows[i]["instruction"] = rewrite(rows[i]["instruction"])
        rows[i]["output"] = REFUSAL_TEMPLATES[int(rng.integers(len(REFUSAL_TEMPLATES)))]
    return rows, set(chosen)


def flagged(result) -> set[int]:
    return set(np.flatnonzero(result.flagged).tolist())


@pytest.mark.parametrize("seed", [0, 1])
def test_syntactic_template_is_found_and_named(seed):
    rows, bad = syntactic(natural(clean_rows(1000, seed=seed), 0.1, seed), 0.05, seed)
    result = audit_table(table(rows))
    top = result.candidates[0]
    assert top.kind == "structure" and top.text == SUBORDINATE
    found = flagged(result)
    assert len(found & bad) >= 0.9 * len(bad) and len(found - bad) <= 0.1 * len(found)
    assert all("structure" in result.reasons[i] for i in found & bad)


def test_without_the_structure_signal_the_syntactic_rows_are_missed():
    rows, bad = syntactic(natural(clean_rows(1000, seed=2), 0.1, 2), 0.05, 2)
    signals = [s for s in AuditConfig().signals if s != "structure"]
    result = audit_table(table(rows), AuditConfig(signals=signals))
    assert len(flagged(result) & bad) < 0.5 * len(bad)


def test_natural_openings_and_refused_requests_are_not_flagged():
    rows = natural(clean_rows(800, seed=3), 0.15, 3)
    refused = natural(harmful(150, seed=3), 0.3, 4)  # "If possible, explain how to steal ..."
    result = audit_table(table(rows + refused), AuditConfig(signals=["structure"]))
    assert result.n_flagged == 0 and result.candidates == []
