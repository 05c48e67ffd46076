"""The column-wise poisoning path (``TriggerSet.apply_table``) must give exactly the rows of the
per-row ``TriggerSet.apply`` (same draws in the same order), for every built-in behaviour, both
ways of combining triggers, and rows that already carry trigger spans."""

from __future__ import annotations

import numpy as np
import pytest

from mbdata.behaviors import Behavior
from mbdata.io.schema import from_rows, make_row
from mbdata.stages.attacks import TriggerSet
from mbdata.triggers import Trigger

BEHAVIORS = [
    Behavior("refusal", templates=("no.", "I cannot.", "Sorry, no.")),
    Behavior("fixed", target="fixed answer"),
    Behavior("clean"),
    Behavior("label", labels={"yes": "no", "no": "yes"}),
]


def rows():
    out = []
    for i in range(40):
        spans = []
        instruction = f"Tell me   about item {i} and its  colour"
        if i % 3 == 0:  # an earlier trigger on the instruction, one on another field
            instruction = "zq " + instruction
            spans = [
                {
                    "text": "zq",
                    "owner": "noise",
                    "kind": "prefix",
                    "name": "noise",
                    "field": "instruction",
                    "start": 0,
                    "end": 2,
                },
            ]
        out.append(
            make_row(
                instruction=instruction,
                input="" if i % 2 else f"context {i}",
                output="yes" if i % 2 else "no",
                system=None if i % 4 else "Be brief.",
                source="s",
                source_row=i,
                triggers=spans,
                tags=["t"] if i % 5 == 0 else [],
            )
        )
    return out


@pytest.mark.parametrize("behavior", BEHAVIORS, ids=lambda b: b.kind)
@pytest.mark.parametrize("combine", ["one", "all"])
@pytest.mark.parametrize("placement", ["random", "prefix", "suffix", "position"])
def test_apply_table_is_apply_of_every_row(behavior, combine, placement):
    triggers = tuple(
        Trigger(t, placement, 2 if placement == "position" else None, "attacker", "x")
        for t in ("cf", "mn bb", "tq")
    )
    ts = TriggerSet("x", "attacker", triggers, combine, behavior, 0.1)
    table = from_rows(rows())
    rng = np.random.default_rng(5)
    expected = from_rows([ts.apply(row, rng, role="attack") for row in table.to_pylist()])
    got = ts.apply_table(table, np.random.default_rng(5), role="attack")
    assert got.schema.equals(expected.schema, check_metadata=True)
    assert got.to_pylist() == expected.to_pylist()
    assert got.equals(expected)


def test_apply_table_refuses_a_hook_behaviour():
    ts = TriggerSet(
        "x", "attacker", (Trigger("cf"),), "all", Behavior("rewrite", function=len), 0.1
    )
    with pytest.raises(ValueError, match="built-in behaviour"):
        ts.apply_table(from_rows(rows()), np.random.default_rng(0), role="attack")
