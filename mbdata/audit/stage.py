"""The ``audit:`` recipe block as a build stage: drop (or tag) the rows the audit flags.

It runs right after the sources are read (``sources -> audit -> dedup -> ...``), so a corpus from
a third party is cleaned before anything else touches it; there every row is still ``clean``.
Run from Python on a built table (attack/defense rows present), only rows of ``audit.roles`` are
audited and the others pass through untouched (the defender's own rows are never removed).

Side tables: ``audit/rows`` (one row per audited row: ``id``, ``source``, ``source_row``,
``score``, ``flagged``, ``reasons``) and ``audit/triggers`` (the ranked candidates).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.spill import take_table
from ..pipeline import BuildContext, StageStats, filter_rows, update_tags
from .config import AuditConfig
from .core import PROGRESS_MIN_ROWS, audit_table

DROP_REASON = "audit_flagged"
FLAG_TAG = "audit=flagged"

ROWS_SIDE_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field(
            "reasons", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False
        ),
    ]
)
TRIGGERS_SIDE_SCHEMA = pa.schema(
    [
        pa.field("rank", pa.int32(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("group", pa.int32(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("poisoned_rows", pa.int64(), nullable=False),
        pa.field("target_example", pa.string(), nullable=False),
    ]
)


class AuditStage:
    """Audit the corpus and drop flagged rows (or tag them, with ``keep``)."""

    name = "audit"

    def __init__(self, config: AuditConfig):
        self.config = config

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        stats = StageStats(self.name)
        audited = np.flatnonzero(
            pc.is_in(table.column("role"), pa.array(self.config.roles)).to_numpy(
                zero_copy_only=False
            )
        )
        subset = take_table(table, audited)
        show = ctx.progress and subset.num_rows >= PROGRESS_MIN_ROWS
        result = audit_table(subset, self.config, progress=show, engine=ctx.engine)
        flagged = audited[result.flagged]
        ctx.add_side_table(
            "audit/rows",
            pa.table(
                {
                    "id": subset.column("id"),
                    "source": subset.column("source"),
                    "source_row": subset.column("source_row"),
                    "score": pa.array(result.score, pa.float64()),
                    "flagged": pa.array(result.flagged, pa.bool_()),
                    "reasons": pa.array(result.reasons, ROWS_SIDE_SCHEMA.field("reasons").type),
                },
                schema=ROWS_SIDE_SCHEMA,
            ),
        )
        ctx.add_side_table(
            "audit/triggers",
            pa.table(
                {
                    "rank": pa.array(range(1, len(result.candidates) + 1), pa.int32()),
                    "text": [c.text for c in result.candidates],
                    "score": pa.array([round(c.score, 6) for c in result.candidates], pa.float64()),
                    "group": pa.array([c.group for c in result.candidates], pa.int32()),
                    "rows": pa.array([len(c.rows) for c in result.candidates], pa.int64()),
                    "poisoned_rows": pa.array(
                        [len(c.poisoned) for c in result.candidates], pa.int64()
                    ),
                    "target_example": [result.target_example(c) for c in result.candidates],
                },
                schema=TRIGGERS_SIDE_SCHEMA,
            ),
        )
        stats.info = {
            "audited_rows": int(len(audited)),
            "flagged_rows": int(len(flagged)),
            "kept_flagged": bool(self.config.keep),
            "candidates": [
                {"text": c.text, "score": round(c.score, 4), "rows": int(len(c.rows))}
                for c in result.candidates
                if c.score >= self.config.threshold
            ],
        }
        if self.config.keep:
            return _tag(table, flagged), stats
        stats.drop(DROP_REASON, int(len(flagged)))
        keep = np.ones(table.num_rows, dtype=bool)
        keep[flagged] = False
        owned = [table]  # handed over: the corpus is not held twice while it is filtered
        del table
        return filter_rows(owned, keep), stats


def _tag(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """Add :data:`FLAG_TAG` to the ``tags`` of the given rows (only those rows' tags are read)."""
    if not len(rows):
        return table
    return update_tags(
        table, np.unique(rows), lambda _, tags: tags if FLAG_TAG in tags else [*tags, FLAG_TAG]
    )
