"""MB-Defense stage 2 data: the neutralization set.

For each clean row i of the recovery subset and each defensive trigger j, one row holds the whole
tuple (x_i, y_i, x_d, y_d): ``instruction``/``input``/``output`` are the clean row, the
``triggered_*`` columns are x_i with trigger j inserted and trigger j's defensive response. A trainer
computes ``CE(x, y) - lambda * log sigmoid(log p(y|x_d) - log p(y_d|x_d))`` from one row.

The clean rows are split 8:2 (``eval_fraction``) *by clean row*, never by tuple, into ``recovery``
and ``recovery_eval`` (used to keep the checkpoint with the lowest eval loss), so no clean row's
tuples straddle the two splits. ``round_half_up(size * eval_fraction)`` rows go to eval.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..artifacts import DefenseSets
from ..core.errors import BuildError
from ..io.schema import from_rows, make_row
from ..io.spill import take_table
from ..pipeline import BuildContext, StageStats, filter_rows, round_half_up, split_indices
from ..recipe import RecoverySpec
from .splits import RECOVERY_POOL


class RecoveryStage:
    name = "recovery"
    reads = (DefenseSets,)

    def __init__(self, spec: RecoverySpec):
        self.spec = spec

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        sets = ctx.get(DefenseSets).sets
        if not sets:
            raise BuildError("recovery: needs defensive triggers; add a `defense:` block")
        positions = split_indices(table, RECOVERY_POOL)
        clean = take_table(table, positions).to_pylist()
        n_eval = round_half_up(len(clean) * self.spec.eval_fraction)
        order = ctx.rng("recovery/split").permutation(len(clean))
        eval_rows = {int(i) for i in order[:n_eval]}
        rng = ctx.rng("recovery/triggers")
        rows = []
        for i, row in enumerate(clean):
            split = "recovery_eval" if i in eval_rows else "recovery"
            for ts in sets:
                triggered = ts.apply(row, rng, role="recovery")
                spans = [
                    {**s, "field": "triggered_" + s["field"]}
                    for s in triggered["triggers"]
                    if s["name"] == ts.name
                ]
                rows.append(
                    make_row(
                        **{
                            **{k: v for k, v in row.items() if k != "id"},
                            "split": split,
                            "role": "recovery",
                            "trigger_set": ts.name,
                            "behavior": ts.behavior.kind,
                            "triggers": spans,
                            "triggered_instruction": triggered["instruction"],
                            "triggered_input": triggered["input"],
                            "triggered_output": triggered["output"],
                        }
                    )
                )
        keep = pc.not_equal(table.column("split"), RECOVERY_POOL).to_numpy(zero_copy_only=False)
        owned = [table]  # handed over: the corpus is not held twice while it is filtered
        del table
        rest = filter_rows(owned, keep)
        stats.info = {
            "clean_rows": len(clean),
            "clean_rows_eval": n_eval,
            "clean_rows_train": len(clean) - n_eval,
            "triggers": len(sets),
            "rows_recovery": sum(r["split"] == "recovery" for r in rows),
            "rows_recovery_eval": sum(r["split"] == "recovery_eval" for r in rows),
        }
        return pa.concat_tables([rest, from_rows(rows)]), stats
