"""Hold-out: carve the evaluation prompts, the recovery clean subset and the pretrain split out of
the corpus, and guarantee that no held-out prompt reaches a training split.

Order (each draw seeded by its own named stream, each keeping corpus order):

1. ``eval_clean``: ``eval.size`` rows with distinct prompts (instruction + input + system,
   normalised). Every other row whose prompt equals a held-out prompt is then dropped
   (``heldout_prompt``), so the model can never have seen an evaluation prompt, even as a duplicate;
   with ``dedup.decontaminate`` near-matches are dropped too (:mod:`mbdata.dedup`), before any
   later draw, so recovery and pretrain sizes hold.
2. the recovery clean subset (``recovery.size`` rows): from the trusted source named in
   ``recovery.source`` (whose rows never enter training), else from the remaining corpus. These rows
   leave the corpus before any poisoning, so they are never touched by an attack or the defence.
3. ``pretrain`` (``pretrain.size`` rows) for building tiny base models.
4. everything left is ``train``.

:class:`LeakCheckStage` re-checks the guarantee on the final tables and fails the build otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from ..core.errors import BuildError
from ..io.schema import TRAINING_SPLITS, prompt_keys_of, prompt_texts_of
from ..io.spill import take_table
from ..pipeline import (
    BuildContext,
    StageStats,
    filter_rows,
    seeded_subset,
    split_indices,
    split_mask,
)
from ..recipe import Recipe
from .prompt_groups import PromptGroups

RECOVERY_POOL = "_recovery_clean"  # internal split of the clean recovery rows (never written)


def prompt_keys(table: pa.Table, prefix: str = "", ctx: BuildContext | None = None) -> list[str]:
    """Normalised prompt hashes of every row (``prefix='triggered_'`` for x_d of recovery rows),
    computed per batch on the build's engine when ``ctx`` is given."""
    columns = [f"{prefix}instruction", f"{prefix}input", "system"]
    step = functools.partial(prompt_key_batch, prefix=prefix)
    if ctx is None:
        return step(table.select(columns)).column("key").to_pylist()
    return ctx.map_table(table.select(columns), step).column("key").to_pylist()


def prompt_key_batch(batch: pa.Table, prefix: str = "") -> pa.Table:
    """One batch's prompt keys as a one-column table (a pure per-batch step)."""
    keys = prompt_keys_of(
        batch.column(f"{prefix}instruction"),
        batch.column(f"{prefix}input"),
        batch.column("system"),
    )
    return pa.table({"key": pa.array(keys, pa.string())})


def prompt_texts(table: pa.Table, prefix: str = "", ctx: BuildContext | None = None) -> pa.Array:
    """The normalised prompt text of every row, the bytes its prompt key hashes (one
    ``large_binary`` array): equal texts are equal keys, so the leak check compares the held-out
    prompts' texts with ``is_in`` instead of hashing every row (the hold-out itself groups the
    corpus by digests, :func:`prompt_digests`)."""
    columns = [f"{prefix}instruction", f"{prefix}input", "system"]
    step = functools.partial(prompt_text_batch, prefix=prefix)
    selected = table.select(columns)
    texts = step(selected) if ctx is None else ctx.map_table(selected, step)
    return texts.column("text").combine_chunks()


def prompt_text_batch(batch: pa.Table, prefix: str = "") -> pa.Table:
    """One batch's prompt texts as a one-column table (a pure per-batch step; ``large_binary`` so
    that the whole corpus's texts fit one array)."""
    texts = prompt_texts_of(
        batch.column(f"{prefix}instruction"),
        batch.column(f"{prefix}input"),
        batch.column("system"),
    )
    return pa.table({"text": texts.cast(pa.large_binary())})


def prompt_digests(table: pa.Table, ctx: BuildContext | None = None) -> Iterator[pa.Array]:
    """Every row's prompt key as 16 bytes (the xxh3-128 digest :func:`prompt_key` writes in hex),
    a batch at a time in row order, computed on the build's engine when ``ctx`` is given: equal
    digests are equal prompt keys. The hold-out compares the whole corpus's prompts through
    these, 16 bytes a row, instead of the prompt texts (about 55 bytes a row for the synthetic
    corpus), and never holds them as one table (:class:`PromptGroups` copies each batch)."""
    selected = _prompt_columns(table)
    if ctx is None:
        yield prompt_digest_batch(selected).column("key").combine_chunks()
        return
    for batch in ctx.iter_table(selected, prompt_digest_batch):
        yield batch.column("key").combine_chunks()


def _prompt_columns(table: pa.Table) -> pa.Table:
    return table.select(["instruction", "input", "system"])


def prompt_digest_batch(batch: pa.Table) -> pa.Table:
    """One batch's prompt-key digests as a one-column table (a pure per-batch step)."""
    texts = prompt_texts_of(
        batch.column("instruction"), batch.column("input"), batch.column("system")
    )
    digest = xxhash.xxh3_128_digest
    return pa.table({"key": pa.array([digest(t) for t in texts.to_pylist()], pa.binary(16))})


class Assignments:
    """The split (and role) the hold-out gives to drawn rows, kept as positions until the corpus
    is rebuilt once at the end (:func:`mbdata.pipeline.filter_rows` ``assign``), instead of a new
    ``split`` and ``role`` column per draw (two string columns of the whole corpus each time)."""

    def __init__(self, train: np.ndarray):
        self.is_train = train  # one bool a row: still in the train split
        self.values: dict[str, list[tuple[np.ndarray, str]]] = {"split": [], "role": []}

    def set(self, positions: np.ndarray, split: str, role: str | None = None) -> None:
        self.values["split"].append((positions, split))
        if role is not None:
            self.values["role"].append((positions, role))
        self.is_train[positions] = split == "train"


class HoldoutStage:
    name = "holdout"

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        recipe = self.recipe
        trusted = recipe.recovery.source if recipe.recovery else None
        n = table.num_rows
        is_trusted = np.zeros(n, dtype=bool)
        if trusted:
            is_trusted = pc.equal(table.column("source"), trusted).to_numpy(zero_copy_only=False)
        # Rows grouped by prompt key (their digests sorted, see prompt_groups).
        groups = PromptGroups(n, prompt_digests(table, ctx=ctx))

        # 1. eval prompts: distinct prompts from the (untrusted) corpus.
        distinct = groups.first_rows(~is_trusted if trusted else None)
        size = recipe.eval.size
        if size > len(distinct):
            raise BuildError(
                f"eval.size: {size} held-out prompts asked, the corpus has only "
                f"{len(distinct)} distinct prompts"
            )
        eval_pos = seeded_subset(distinct, size, ctx.rng("holdout/eval"))
        held = prompt_digest_batch(_prompt_columns(take_table(table, eval_pos)))
        leaked = groups.sharing(held.column("key").combine_chunks())
        del groups, distinct
        leaked[eval_pos] = False
        stats.drop("heldout_prompt", int(leaked.sum()))
        assigned = Assignments(split_mask(table, "train"))
        assigned.set(eval_pos, "eval_clean", "eval")
        keep = ~leaked
        if recipe.dedup is not None and getattr(recipe.dedup, "decontaminate", False):
            keep &= self._near_decontaminate(table, keep, eval_pos, ctx, stats)

        # 2. recovery clean subset.
        available = keep & assigned.is_train
        if recipe.recovery:
            pool = np.flatnonzero(available & (is_trusted if trusted else True))
            if recipe.recovery.size > len(pool):
                where = f"trusted source {trusted!r}" if trusted else "the corpus"
                raise BuildError(
                    f"recovery.size: {recipe.recovery.size} clean rows asked, "
                    f"{where} has only {len(pool)} left after the hold-out"
                )
            rec_pos = seeded_subset(pool, recipe.recovery.size, ctx.rng("holdout/recovery"))
            assigned.set(rec_pos, RECOVERY_POOL, "recovery")
            available[rec_pos] = False
        if trusted:
            unused = available & is_trusted
            stats.drop("trusted_unused", int(unused.sum()))
            keep &= ~unused
            available &= ~is_trusted

        # 3. pretrain split.
        if recipe.pretrain:
            pool = np.flatnonzero(available)
            if recipe.pretrain.size >= len(pool):
                raise BuildError(
                    f"pretrain.size: {recipe.pretrain.size} rows asked, only "
                    f"{len(pool)} left after eval/recovery (train would be empty)"
                )
            pre_pos = seeded_subset(pool, recipe.pretrain.size, ctx.rng("holdout/pretrain"))
            assigned.set(pre_pos, "pretrain")
            available[pre_pos] = False

        owned = [table]  # handed over: the corpus is not held twice while it is filtered
        del table
        table = filter_rows(owned, keep, assign=assigned.values)
        counts = pc.value_counts(table.column("split")).to_pylist()
        stats.info["splits"] = {
            c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])
        }
        return table, stats

    def _near_decontaminate(
        self,
        table: pa.Table,
        keep: np.ndarray,
        eval_pos: np.ndarray,
        ctx: BuildContext,
        stats: StageStats,
    ) -> np.ndarray:
        """Keep-mask over all rows: False for a row whose prompt nearly matches a held-out prompt.
        Runs before the recovery and pretrain draws, so those get exactly the sizes asked for."""
        from ..dedup import contamination_mask

        rest = keep.copy()
        rest[eval_pos] = False
        rest_pos = np.flatnonzero(rest)
        clean, sub = contamination_mask(
            take_table(table, rest_pos), take_table(table, eval_pos), self.recipe.dedup, ctx
        )
        for reason, count in sub.dropped.items():
            stats.drop(reason, count)
        if sub.info:
            stats.info["decontaminate"] = sub.info
        mask = np.ones(table.num_rows, dtype=bool)
        mask[rest_pos[~clean]] = False
        return mask


def leak_flags_batch(batch: pa.Table, eval_texts: pa.Array) -> pa.Table:
    """One batch's leak flags (a pure per-batch step): ``plain``, whether a training row's prompt
    is a held-out prompt; ``triggered``, whether a recovery row's x_d prompt is one."""
    split = batch.column("split")
    training = pc.is_in(split, value_set=pa.array(TRAINING_SPLITS))
    texts = prompt_text_batch(batch).column("text")
    plain = pc.and_(training, pc.is_in(texts, value_set=eval_texts))
    recovery = pc.starts_with(split, "recovery")
    triggered = np.zeros(batch.num_rows, dtype=bool)
    if pc.any(recovery).as_py():
        rows = batch.filter(recovery)
        hits = pc.is_in(prompt_text_batch(rows, "triggered_").column("text"), value_set=eval_texts)
        mask = recovery.to_numpy(zero_copy_only=False)
        triggered[np.flatnonzero(mask)] = hits.to_numpy(zero_copy_only=False)
    return pa.table({"plain": plain, "triggered": pa.array(triggered)})


_LEAK_COLUMNS = [
    "split",
    "instruction",
    "input",
    "system",
    "triggered_instruction",
    "triggered_input",
]


class LeakCheckStage:
    """Fail the build if any held-out prompt appears in a training split (the guarantee, checked).

    The corpus is checked per batch on the build's executor (:func:`leak_flags_batch`: two flags
    a row), not split by split on filtered copies of the corpus; the first leak is reported in the
    same order as before (training splits in order, then x before x_d, then row order)."""

    name = "leak_check"

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        eval_rows = take_table(table, split_indices(table, "eval_clean"))
        eval_texts = pc.unique(prompt_texts(eval_rows, ctx=ctx))
        step = functools.partial(leak_flags_batch, eval_texts=eval_texts)
        flags = ctx.map_table(table.select(_LEAK_COLUMNS), step)
        plain = flags.column("plain").to_numpy()
        triggered = flags.column("triggered").to_numpy()
        checked = 0
        for split in TRAINING_SPLITS:
            positions = split_indices(table, split)
            prefixes = (plain, triggered) if split.startswith("recovery") else (plain,)
            for hits in prefixes:
                found = np.flatnonzero(hits[positions])
                if len(found):
                    row = table.slice(int(positions[found[0]]), 1).to_pylist()[0]
                    raise BuildError(
                        f"held-out prompt leaked into split {split!r} (source "
                        f"{row['source']!r} row {row['source_row']}): "
                        f"{row['instruction'][:60]!r}"
                    )
            checked += len(positions)
        stats.info["rows_checked"] = checked
        stats.info["heldout_prompts"] = len(eval_texts)
        return table, stats
