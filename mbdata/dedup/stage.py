"""The ``dedup`` pipeline stage: exact then near deduplication of a canonical table.

Rows are only ever compared within the same ``split`` (across splits, keeping eval prompts out of
training is :func:`mbdata.dedup.decontaminate`'s one-sided job). Exact dedup runs first; near dedup
then runs on the rows exact dedup kept. The keep rule is *first occurrence wins* (see
:mod:`.cluster`). Every duplicate is listed in the ``dedup/clusters`` side table with its kept
representative, the row it directly matched and the similarity; with ``keep_all`` nothing is
dropped and cluster members are tagged ``dup_cluster=<id>`` plus ``dup_role=representative``,
``dup_role=exact_duplicate`` or ``dup_role=near_duplicate``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..io.schema import SCHEMA
from ..pipeline import BuildContext, StageStats
from .cluster import exact_first, greedy_near
from .config import DedupConfig
from .lsh import group_buckets
from .sketch import NearParams, TableSketch, estimate_pairs, sketch_table

EXACT = "exact_duplicate"
NEAR = "near_duplicate"
CLUSTERS_TABLE = "dedup/clusters"

CLUSTERS_SCHEMA = pa.schema(
    [
        pa.field("cluster", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("representative_id", pa.string(), nullable=False),
        pa.field("representative_row", pa.int64(), nullable=False),
        pa.field("member_id", pa.string(), nullable=False),
        pa.field("member_row", pa.int64(), nullable=False),
        pa.field("member_source", pa.string(), nullable=False),
        pa.field("member_source_row", pa.int64(), nullable=False),
        pa.field("matched_id", pa.string(), nullable=False),
        pa.field("matched_row", pa.int64(), nullable=False),
        pa.field("similarity", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("dropped", pa.bool_(), nullable=False),
    ]
)


def scope_codes(table: pa.Table) -> np.ndarray:
    """An int64 code per row for its split (rows of different splits are never compared)."""
    if table.num_rows == 0:
        return np.zeros(0, dtype=np.int64)
    encoded = pc.dictionary_encode(table.column("split")).combine_chunks()
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def scope_salt(codes: np.ndarray) -> np.ndarray:
    salt = codes.astype(np.uint64) + np.uint64(1)
    salt *= np.uint64(0x9E3779B97F4A7C15)  # array arithmetic wraps mod 2^64 (intended)
    return salt


class DedupStage:
    """Exact + near deduplication (``dedup:`` recipe block)."""

    name = "dedup"

    def __init__(self, config: DedupConfig | None = None):
        self.config = config or DedupConfig()

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        config = self.config
        n = table.num_rows
        stats = StageStats(name=self.name, rows_in=n)
        params = NearParams.from_config(config, n) if config.near else None
        codes = scope_codes(table)
        sketch = sketch_table(
            table,
            config.fields,
            params,
            keep_shingles=params is not None and params.verify,
            salt=scope_salt(codes) if params is not None else None,
        )
        positions = np.arange(n, dtype=np.int64)
        first = exact_first(sketch.keys, codes) if config.exact else positions
        exact_members = np.flatnonzero(first != positions)
        near = _near(table, sketch, first == positions, config, params)

        clusters = _cluster_table(table, first, exact_members, near, dropped=not config.keep_all)
        ctx.add_side_table(CLUSTERS_TABLE, clusters)
        stats.info.update(
            {
                "fields": config.fields,
                "exact": config.exact,
                "near": config.near,
                "keep_all": config.keep_all,
                "keep": "first",
                "scope": "split",
                "clusters": len(set(clusters.column("cluster").to_pylist())),
                EXACT: int(exact_members.size),
                NEAR: int(near.member.size),
            }
        )
        if params is not None:
            stats.info.update(params.info())
            stats.info.update(
                {
                    "near_rows": near.rows,
                    "near_skipped_empty": int(
                        np.count_nonzero((first == positions) & (sketch.shingle_counts == 0))
                    ),
                    "candidates_checked": near.checked,
                    "candidates_rejected": near.rejected,
                    "bucket_targets_capped": near.capped,
                }
            )
        if config.keep_all:
            return _tag(table, clusters), stats
        stats.drop(EXACT, int(exact_members.size))
        stats.drop(NEAR, int(near.member.size))
        keep = np.ones(n, dtype=bool)
        keep[exact_members] = False
        keep[near.member] = False
        return table.filter(pa.array(keep)), stats


@dataclasses.dataclass(frozen=True)
class _NearResult:
    """Near duplicates in table positions: ``member[k]`` matched kept row ``matched[k]``."""

    member: np.ndarray
    matched: np.ndarray
    similarity: np.ndarray
    rows: int = 0
    checked: int = 0
    rejected: int = 0
    capped: int = 0


def _near(
    table: pa.Table,
    sketch: TableSketch,
    exact_kept: np.ndarray,
    config: DedupConfig,
    params: NearParams | None,
) -> _NearResult:
    """Near dedup among the rows exact dedup kept (and that have shingles)."""
    if params is None:
        none = np.zeros(0, dtype=np.int64)
        return _NearResult(none, none, np.zeros(0, dtype=np.float64))
    eligible = np.flatnonzero(exact_kept & (sketch.shingle_counts > 0))
    buckets = group_buckets(sketch.band_keys[eligible])
    similarity = (
        (lambda i, j: sketch.jaccard(eligible[i], sketch, eligible[j])) if params.verify else None
    )
    matches = greedy_near(buckets, similarity, config.threshold, config.max_bucket_targets)
    member, matched = eligible[matches.member], eligible[matches.matched]
    sims = matches.similarity
    if not params.verify:
        sims = estimate_pairs(table, member, table, matched, config.fields, params)
    return _NearResult(
        member,
        matched,
        sims,
        rows=int(eligible.size),
        checked=matches.checked,
        rejected=matches.rejected,
        capped=matches.capped,
    )


def _cluster_table(
    table: pa.Table, first: np.ndarray, exact_members: np.ndarray, near: _NearResult, dropped: bool
) -> pa.Table:
    """The ``dedup/clusters`` side table: one row per duplicate, sorted by (cluster, member_row)."""
    n = table.num_rows
    near_member, near_matched, near_sim = near.member, near.matched, near.similarity
    near_rep = np.arange(n, dtype=np.int64)  # a near-dropped row -> its kept row
    near_rep[near_member] = near_matched

    member = np.concatenate([exact_members, near_member])
    matched = np.concatenate([first[exact_members], near_matched])
    similarity = np.concatenate([np.ones(exact_members.size), near_sim])
    reason = [EXACT] * exact_members.size + [NEAR] * near_member.size
    # An exact copy of a row that was itself dropped as a near duplicate belongs to that row's
    # kept representative; its similarity (to the row it copies) stays 1.0.
    representative = near_rep[matched]
    reps = np.unique(representative)
    cluster = np.searchsorted(reps, representative)
    order = np.lexsort((member, cluster))
    member, matched, representative = member[order], matched[order], representative[order]

    def take(column: str, rows: np.ndarray) -> pa.Array:
        return table.column(column).take(pa.array(rows, type=pa.int64())).combine_chunks()

    columns = {
        "cluster": pa.array(cluster[order], pa.int64()),
        "split": take("split", member),
        "representative_id": take("id", representative),
        "representative_row": pa.array(representative, pa.int64()),
        "member_id": take("id", member),
        "member_row": pa.array(member, pa.int64()),
        "member_source": take("source", member),
        "member_source_row": take("source_row", member),
        "matched_id": take("id", matched),
        "matched_row": pa.array(matched, pa.int64()),
        "similarity": pa.array(similarity[order], pa.float64()),
        "reason": pa.array([reason[k] for k in order.tolist()], pa.string()),
        "dropped": pa.array(np.full(member.size, dropped), pa.bool_()),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in CLUSTERS_SCHEMA], schema=CLUSTERS_SCHEMA
    )


def _tag(table: pa.Table, clusters: pa.Table) -> pa.Table:
    """``table`` with cluster tags appended to the ``tags`` of every cluster row (keep-all mode)."""
    if clusters.num_rows == 0:
        return table
    extra: dict[int, list[str]] = {}
    for cluster, rep, member, reason in zip(
        clusters.column("cluster").to_pylist(),
        clusters.column("representative_row").to_pylist(),
        clusters.column("member_row").to_pylist(),
        clusters.column("reason").to_pylist(),
    ):
        extra.setdefault(rep, [f"dup_cluster={cluster}", "dup_role=representative"])
        extra[member] = [f"dup_cluster={cluster}", f"dup_role={reason}"]
    tags = table.column("tags").to_pylist()
    for row, new in extra.items():
        tags[row] = list(tags[row]) + new
    index = table.schema.get_field_index("tags")
    tags_type = SCHEMA.field("tags").type
    return table.set_column(index, SCHEMA.field("tags"), pa.array(tags, type=tags_type))
