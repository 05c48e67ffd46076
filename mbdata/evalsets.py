"""Evaluation splits: ``eval_clean`` (held out by :mod:`mbdata.splits`) and ``eval_triggered``.

For every attack and every defensive trigger, each held-out prompt gets that trigger set inserted
(same placement rules as in training) and is tagged with the expected behaviour: ``output`` is the
backdoor's response (for refusals, one template), ``clean_output`` the reference answer. ASR, CACC,
AACC and the defensive-trigger response rate are thus computable from the shards alone. Rows a
behaviour cannot apply to (a label flip of an unknown label) are skipped and counted.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .artifacts import TriggerSets
from .pipeline import BuildContext, StageStats
from .recipe import EvalSpec
from .schema import from_rows


class EvalStage:
    name = "eval"
    optional_reads = (TriggerSets,)

    def __init__(self, spec: EvalSpec):
        self.spec = spec

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        prompts = table.filter(pc.equal(table.column("split"), "eval_clean")).to_pylist()
        planted = ctx.find(TriggerSets) or TriggerSets()
        sets = [ts for ts in planted.sets
                if (ts.owner == "attacker" and self.spec.attack_triggers)
                or (ts.owner == "defender" and self.spec.defense_triggers)]
        rows = []
        stats.info["eval_clean"] = len(prompts)
        for ts in sets:
            rng = ctx.rng(f"eval/{ts.name}")
            made = [ts.apply(row, rng, role="eval", split="eval_triggered")
                    for row in prompts if ts.behavior.applies_to(row)]
            rows.extend(made)
            stats.info[ts.name] = {"rows": len(made), "skipped": len(prompts) - len(made)}
        if not rows:
            return table, stats
        return pa.concat_tables([table, from_rows(rows)]), stats
