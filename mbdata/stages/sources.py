"""The first stage: read every source, apply ``limit`` / ``sample`` / ``count`` / ``weight``, mix.

Per source, in this order: read (``source_row`` = 0-based index in the source as read, skipped
rows included; with ``--skip-bad-rows`` each skipped row is kept in the :class:`SkippedRows` artifact
for the build's ``skipped.jsonl``) -> ``limit``
(first N rows) -> ``sample`` (seeded N rows) -> the mix: ``count`` (seeded N rows) or ``weight`` (a
share of ``mix_size`` among weighted sources, rounded by largest remainder so shares add up exactly).
Sources without count/weight contribute all their rows. Every seeded choice keeps the rows' original
order, so the mixed corpus is sources in recipe order, each in its own order.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..artifacts import SkippedRows
from ..core.errors import BuildError
from ..io.manifest import input_record
from ..io.readers import read_rows
from ..io.schema import SCHEMA, row_ids
from ..io.spill import release, take_table
from ..pipeline import BuildContext, StageStats, seeded_subset
from ..recipe import Recipe, SourceSpec


def largest_remainder(total: int, weights: list[float]) -> list[int]:
    """Split ``total`` into integer shares proportional to ``weights`` that add up to ``total``.

    Ties in the remainders go to the earlier source, so the split is deterministic."""
    raw = [total * w / sum(weights) for w in weights]
    shares = [int(np.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _synthetic_seed(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}\x1fsynthetic/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def synthetic_batch(start: int, stop: int, *, name: str, seed: int, tasks: Any) -> pa.Table:
    """Canonical rows ``start``..``stop - 1`` of a synthetic source, built column-wise: the rows
    :func:`mbdata.io.readers.read_rows` gives for them (same ids, ``source_row`` = ``i``), without a
    dict per row. Pure in its arguments, so batches can run anywhere (a Ray worker) in any order."""
    from ..synthetic import generate_range

    records = generate_range(start, stop, seed, tasks)
    n = len(records)
    columns: dict[str, Any] = {
        "instruction": pa.array([r["instruction"] for r in records], pa.string()),
        "input": pa.array([r["input"] or "" for r in records], pa.string()),
        "output": pa.array([r["output"] for r in records], pa.string()),
        "task": pa.array([r["task"] for r in records], pa.string()),
    }
    columns["id"] = row_ids(columns, n)
    columns["source_row"] = np.arange(start, stop, dtype=np.int64)
    constants = {"source": name, "split": "train", "role": "clean"}
    no_items = pa.array(np.zeros(n + 1, dtype=np.int32))  # list offsets of n empty lists
    arrays = []
    for field in SCHEMA:
        if field.name in columns:
            arrays.append(pa.array(columns[field.name], type=field.type))
        elif field.name in constants:
            arrays.append(pa.repeat(pa.scalar(constants[field.name], field.type), n))
        elif pa.types.is_list(field.type):
            items = pa.array([], type=field.type.value_type)
            arrays.append(pa.ListArray.from_arrays(no_items, items, type=field.type))
        else:
            arrays.append(pa.nulls(n, type=field.type))
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def synthetic_table(source: SourceSpec, seed: int, ctx: BuildContext) -> pa.Table | None:
    """A synthetic source read column-wise in batches on the build's engine, or None when a row
    would not pass the reader's checks (an empty text): then :func:`read_rows` reads it, with its
    row-level errors and ``--skip-bad-rows`` handling."""
    count = source.count or 0
    if count == 0:
        return None
    step = functools.partial(synthetic_batch, name=source.name, seed=seed, tasks=source.tasks)
    table = ctx.map_ranges(count, step, schema=SCHEMA, spill=True)
    assert table is not None  # count > 0
    for column in ("instruction", "output"):
        for chunk in table.column(column).chunks:  # a chunk at a time: no copy of the column
            stripped = pc.utf8_length(pc.utf8_trim_whitespace(chunk))
            if pc.any(pc.equal(stripped, 0)).as_py():
                return None
            release()
    return table


class SourcesStage:
    """Read and mix all sources into one canonical table (``split='train'``, ``role='clean'``)."""

    name = "sources"
    writes = (SkippedRows,)

    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def _read(self, i: int, source: SourceSpec, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        path = None
        if source.kind == "synthetic":
            seed = _synthetic_seed(self.recipe.seed, source.name)
            ctx.inputs[source.name] = {
                "synthetic": {"count": source.count, "seed": seed, "tasks": source.tasks}
            }
            table = synthetic_table(source, seed, ctx)
            if table is not None:
                stats = StageStats(name=f"read/{source.name}")
                stats.rows_in = table.num_rows
                return table, stats
            return self._rows(
                read_rows(
                    source, None, seed=seed, skip_bad_rows=ctx.skip_bad_rows, field_option="fields:"
                ),
                ctx,
            )
        if source.kind == "hub":
            ctx.inputs[source.name] = {
                "hub": source.path,
                "subset": source.subset,
                "split": source.split,
                "revision": source.revision,
            }
        else:
            assert source.path is not None  # SourceSpec.validate: required for file sources
            path = ctx.resolve(source.path)
            result = read_rows(
                source, path, skip_bad_rows=ctx.skip_bad_rows, field_option="fields:"
            )
            # hashed after the read, checked against the file's state during it (issue 23)
            ctx.inputs[source.name] = input_record(path, source.path, result.state)
            return self._rows(result, ctx)
        return self._rows(
            read_rows(source, path, skip_bad_rows=ctx.skip_bad_rows, field_option="fields:"), ctx
        )

    @staticmethod
    def _rows(result, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        """The read table and stats; skipped rows are kept for ``skipped.jsonl``."""
        if result.skipped:
            before = ctx.find(SkippedRows) or SkippedRows()
            ctx.put(SkippedRows(before.records + tuple(b.record() for b in result.skipped)))
        return result.table, result.stats

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(name=self.name)
        tables: list[pa.Table] = []
        for i, source in enumerate(self.recipe.sources):
            read, read_stats = self._read(i, source, ctx)
            for reason, n in read_stats.dropped.items():
                stats.drop(f"{source.name}:{reason}", n)
            info = {"rows_read": read_stats.rows_in, "rows_valid": read.num_rows, **read_stats.info}
            if source.limit is not None and source.limit < read.num_rows:
                stats.drop(f"{source.name}:limit", read.num_rows - source.limit)
                read = read.slice(0, source.limit)
            if source.sample is not None:
                if source.sample > read.num_rows:
                    raise BuildError(
                        f"sources[{i}].sample: {source.sample} rows asked, only "
                        f"{read.num_rows} available in source {source.name!r}"
                    )
                keep = seeded_subset(read.num_rows, source.sample, ctx.rng(f"sample/{source.name}"))
                stats.drop(f"{source.name}:sample", read.num_rows - len(keep))
                read = take_table(read, keep)
            info["rows_after_select"] = read.num_rows
            tables.append(read)
            stats.info[source.name] = info
        tables = self._mix(tables, ctx, stats)
        out = pa.concat_tables(tables)
        stats.rows_in = sum(v["rows_read"] for v in stats.info.values())
        return out, stats

    def _mix(self, tables: list[pa.Table], ctx: BuildContext, stats: StageStats) -> list[pa.Table]:
        sources = self.recipe.sources
        targets: dict[int, int] = {
            i: s.count
            for i, s in enumerate(sources)
            if s.count is not None and s.kind != "synthetic"
        }
        weights = {i: s.weight for i, s in enumerate(sources) if s.weight is not None}
        if weights:
            assert self.recipe.mix_size is not None  # Recipe.validate: required with a weight
            shares = largest_remainder(self.recipe.mix_size, list(weights.values()))
            targets.update(zip(weights, shares))
        out = []
        for i, table in enumerate(tables):
            source = sources[i]
            want = targets.get(i)
            if want is not None:
                if want > table.num_rows:
                    key = "count" if source.count is not None else "weight"
                    raise BuildError(
                        f"sources[{i}].{key}: {want} rows wanted from source "
                        f"{source.name!r}, only {table.num_rows} available"
                    )
                keep = seeded_subset(table.num_rows, want, ctx.rng(f"mix/{source.name}"))
                stats.drop(f"{source.name}:mix", table.num_rows - len(keep))
                table = take_table(table, keep)
            stats.info[source.name]["rows_mixed"] = table.num_rows
            out.append(table)
        return out
