"""Evaluation splits: ``eval_clean`` (held out by :mod:`mbdata.stages.splits`) and ``eval_triggered``.

For every attack and every defensive trigger, each held-out prompt gets that trigger set inserted
(same placement rules as in training) and is tagged with the expected behaviour: ``output`` is the
backdoor's response (for refusals, one template), ``clean_output`` the reference answer. ASR, CACC,
AACC and the defensive-trigger response rate are thus computable from the shards alone. Rows a
behaviour cannot apply to (a label flip of an unknown label) are skipped and counted.

For the ``syntactic`` and ``style`` attacks the held-out prompts are rewritten by the attack's own
rewriter (same backend, prompt, settings and check as in training); prompts whose rewrite fails the
check are skipped and counted as ``rewrite_dropped``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..artifacts import TriggerSets
from ..io.schema import from_rows
from ..io.spill import take_table
from ..pipeline import BuildContext, StageStats, split_indices
from ..recipe import EvalSpec


def rewritten_prompts(
    ts: Any, prompts: list[dict[str, Any]], rng: np.random.Generator
) -> tuple[list[dict[str, Any]], int]:
    """``eval_triggered`` rows of a rewriter attack, and how many prompts failed the check."""
    usable = [row for row in prompts if ts.behavior.applies_to(row)]
    outs = ts.rewriter.rewrite_all([row["instruction"] for row in usable])
    made = [
        ts.apply(row, rng, role="eval", split="eval_triggered", rewritten=out)
        for row, out in zip(usable, outs)
        if out is not None
    ]
    return made, sum(out is None for out in outs)


class EvalStage:
    name = "eval"
    optional_reads = (TriggerSets,)

    def __init__(self, spec: EvalSpec):
        self.spec = spec

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        prompts = take_table(table, split_indices(table, "eval_clean")).to_pylist()
        planted = ctx.find(TriggerSets) or TriggerSets()
        sets = [
            ts
            for ts in planted.sets
            if (ts.owner == "attacker" and self.spec.attack_triggers)
            or (ts.owner == "defender" and self.spec.defense_triggers)
        ]
        rows = []
        stats.info["eval_clean"] = len(prompts)
        for ts in sets:
            rng = ctx.rng(f"eval/{ts.name}")
            if getattr(ts, "rewriter", None) is not None:
                made, dropped = rewritten_prompts(ts, prompts, rng)
                rows.extend(made)
                stats.info[ts.name] = {
                    "rows": len(made),
                    "skipped": len(prompts) - len(made),
                    "rewrite_dropped": dropped,
                }
                continue
            made = [
                ts.apply(row, rng, role="eval", split="eval_triggered")
                for row in prompts
                if ts.behavior.applies_to(row)
            ]
            rows.extend(made)
            stats.info[ts.name] = {"rows": len(made), "skipped": len(prompts) - len(made)}
        if not rows:
            return table, stats
        return pa.concat_tables([table, from_rows(rows)]), stats
