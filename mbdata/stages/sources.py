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

import hashlib

import numpy as np
import pyarrow as pa

from ..artifacts import SkippedRows
from ..core.errors import BuildError
from ..io.manifest import input_record
from ..io.readers import read_rows
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
            path = ctx.resolve(source.path)
            ctx.inputs[source.name] = input_record(path, source.path)
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
                read = read.take(pa.array(keep))
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
        weighted = [i for i, s in enumerate(sources) if s.weight is not None]
        if weighted:
            shares = largest_remainder(self.recipe.mix_size, [sources[i].weight for i in weighted])
            targets.update(zip(weighted, shares))
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
                table = table.take(pa.array(keep))
            stats.info[source.name]["rows_mixed"] = table.num_rows
            out.append(table)
        return out
