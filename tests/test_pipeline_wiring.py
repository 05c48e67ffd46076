"""Stages exchange typed artifacts; the wiring is checked at assembly and enforced at run time."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import small_recipe

from mbdata.artifacts import DefenseSets, PoisonedRows, TriggerSets
from mbdata.build import pipeline
from mbdata.core.errors import BuildError
from mbdata.io.schema import empty_table
from mbdata.pipeline import BuildContext, StageStats, check_wiring, run_stage
from mbdata.recipe import parse_recipe
from mbdata.stages.recovery import RecoveryStage


class _Writer:
    name = "writer"
    writes = (PoisonedRows,)

    def run(self, table, ctx):
        ctx.put(PoisonedRows(train_rows=3, positions=frozenset({1})))
        return table, StageStats(name=self.name)


class _Reader:
    name = "reader"
    reads = (PoisonedRows,)

    def run(self, table, ctx):
        self.seen = ctx.get(PoisonedRows)
        return table, StageStats(name=self.name)


class _Sneaky:
    """Reads an artifact it never declared."""

    name = "sneaky"

    def run(self, table, ctx):
        ctx.find(PoisonedRows)
        return table, StageStats(name=self.name)


def test_check_wiring_rejects_a_read_no_earlier_stage_writes():
    with pytest.raises(BuildError, match="'reader' reads PoisonedRows"):
        check_wiring([_Reader(), _Writer()])
    check_wiring([_Writer(), _Reader()])


def test_recovery_without_defense_is_a_wiring_error():
    with pytest.raises(BuildError, match="'recovery' reads DefenseSets"):
        check_wiring([RecoveryStage(spec=None)])


def test_artifacts_flow_between_stages_and_undeclared_access_fails():
    ctx = BuildContext(seed=0)
    table = empty_table()
    reader = _Reader()
    for stage in (_Writer(), reader):
        table, _ = run_stage(stage, table, ctx)
    assert reader.seen.positions.tolist() == [1]
    with pytest.raises(BuildError, match="without declaring it"):
        run_stage(_Sneaky(), table, ctx)


def test_artifacts_are_frozen_and_plus_returns_a_new_value():
    rows = PoisonedRows(train_rows=10)
    more = rows.plus([3, 4])
    assert rows.positions.tolist() == [] and more.positions.tolist() == [3, 4]
    assert more.plus(np.array([4, 1])).positions.tolist() == [1, 3, 4]  # ascending, no repeats
    with pytest.raises(ValueError):
        more.positions[0] = 9  # read-only
    with pytest.raises(AttributeError):
        rows.train_rows = 5  # type: ignore[misc]
    assert TriggerSets().manifest_records() == []
    assert DefenseSets(()).sets == ()


def test_a_full_recipe_assembles_in_order():
    # pipeline() runs check_wiring; a recipe with attacks, defense and recovery assembles.
    stages = pipeline(parse_recipe(small_recipe()))
    names = [s.name for s in stages]
    assert names.index("attacks") < names.index("defense") < names.index("recovery")
