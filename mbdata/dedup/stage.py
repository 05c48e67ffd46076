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

from ..executors import executor_for
from ..io.schema import SCHEMA
from ..io.spill import take_rows
from ..pipeline import BuildContext, StageStats, filter_rows, update_tags
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
        with executor_for(ctx.engine) as executor:
            sketch = sketch_table(
                table,
                config.fields,
                params,
                keep_shingles=params is not None and params.verify,
                salt=scope_salt(codes) if params is not None else None,
                executor=executor,
            )
        found = find_duplicates(sketch, codes, config, params, table)
        layout = cluster_layout(n, found.first, found.exact_members, found.near)
        clusters = clusters_table(layout, table_take(table), dropped=not config.keep_all)
        ctx.add_side_table(CLUSTERS_TABLE, clusters)
        found.record(stats, config, params, layout)
        if config.keep_all:
            return _tag(table, clusters), stats
        keep = found.keep(n)
        owned = [table]  # handed over: the corpus is not held twice while it is filtered
        del table
        return filter_rows(owned, keep), stats


@dataclasses.dataclass(frozen=True)
class Duplicates:
    """What dedup decided, in positions: ``first`` (exact), the exact members and the near result."""

    first: np.ndarray
    exact_members: np.ndarray
    near: _NearResult
    near_skipped_empty: int

    def keep(self, n: int) -> np.ndarray:
        """The keep-mask (drop mode)."""
        keep = np.ones(n, dtype=bool)
        keep[self.exact_members] = False
        keep[self.near.member] = False
        return keep

    def record(
        self,
        stats: StageStats,
        config: DedupConfig,
        params: NearParams | None,
        layout: ClusterLayout,
    ) -> None:
        """The stage's manifest figures (identical for every engine)."""
        stats.info.update(
            {
                "fields": config.fields,
                "exact": config.exact,
                "near": config.near,
                "keep_all": config.keep_all,
                "keep": "first",
                "scope": "split",
                "clusters": int(np.unique(layout.cluster).size),
                EXACT: int(self.exact_members.size),
                NEAR: int(self.near.member.size),
            }
        )
        if params is not None:
            stats.info.update(params.info())
            stats.info.update(
                {
                    "near_rows": self.near.rows,
                    "near_skipped_empty": self.near_skipped_empty,
                    "candidates_checked": self.near.checked,
                    "candidates_rejected": self.near.rejected,
                    "bucket_targets_capped": self.near.capped,
                }
            )
        if not config.keep_all:
            stats.drop(EXACT, int(self.exact_members.size))
            stats.drop(NEAR, int(self.near.member.size))


def find_duplicates(
    sketch: TableSketch,
    codes: np.ndarray,
    config: DedupConfig,
    params: NearParams | None,
    table: pa.Table | None,
) -> Duplicates:
    """Exact then near duplicates from a sketch (keys, counts, band keys, shingles).

    ``table`` is needed only to estimate similarities without verification; with None they stay
    NaN for the caller to fill in (the streaming path looks the few rows up later)."""
    n = len(sketch.keys)
    positions = np.arange(n, dtype=np.int64)
    first = exact_first(sketch.keys, codes) if config.exact else positions
    exact_members = np.flatnonzero(first != positions)
    near = _near(table, sketch, first == positions, config, params)
    skipped = 0
    if params is not None:
        skipped = int(np.count_nonzero((first == positions) & (sketch.shingle_counts == 0)))
    return Duplicates(first, exact_members, near, skipped)


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
    table: pa.Table | None,
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
    assert sketch.band_keys is not None  # sketched with near params
    buckets = group_buckets(sketch.band_keys[eligible])
    similarity = (
        (lambda i, j: sketch.jaccard(int(eligible[i]), sketch, int(eligible[j])))
        if params.verify
        else None
    )
    matches = greedy_near(buckets, similarity, config.threshold, config.max_bucket_targets)
    member, matched = eligible[matches.member], eligible[matches.matched]
    sims = matches.similarity
    if not params.verify and table is not None:
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


@dataclasses.dataclass(frozen=True)
class ClusterLayout:
    """The ``dedup/clusters`` rows as positions, before any row text is looked up (the streaming
    path computes it from its per-row index, then looks up only these rows)."""

    cluster: np.ndarray
    member: np.ndarray
    matched: np.ndarray
    representative: np.ndarray
    similarity: np.ndarray
    near: np.ndarray  # bool: reason is near_duplicate (else exact_duplicate)

    def rows(self) -> np.ndarray:
        """Every position the side table names (sorted, unique)."""
        return np.unique(np.concatenate([self.member, self.matched, self.representative]))

    def tags(self) -> dict[int, list[str]]:
        """Keep-all tags per position: ``dup_cluster=<id>`` and ``dup_role=...``."""
        extra: dict[int, list[str]] = {}
        for cluster, rep, member, near in zip(
            self.cluster.tolist(),
            self.representative.tolist(),
            self.member.tolist(),
            self.near.tolist(),
        ):
            extra.setdefault(rep, [f"dup_cluster={cluster}", "dup_role=representative"])
            extra[member] = [f"dup_cluster={cluster}", f"dup_role={NEAR if near else EXACT}"]
        return extra


def cluster_layout(
    n: int, first: np.ndarray, exact_members: np.ndarray, near: _NearResult
) -> ClusterLayout:
    """One entry per duplicate, sorted by (cluster, member_row); clusters numbered in order of
    their representative's position."""
    near_member, near_matched, near_sim = near.member, near.matched, near.similarity
    near_rep = np.arange(n, dtype=np.int64)  # a near-dropped row -> its kept row
    near_rep[near_member] = near_matched

    member = np.concatenate([exact_members, near_member])
    matched = np.concatenate([first[exact_members], near_matched])
    similarity = np.concatenate([np.ones(exact_members.size), near_sim])
    is_near = np.concatenate(
        [np.zeros(exact_members.size, dtype=bool), np.ones(near_member.size, dtype=bool)]
    )
    # An exact copy of a row that was itself dropped as a near duplicate belongs to that row's
    # kept representative; its similarity (to the row it copies) stays 1.0.
    representative = near_rep[matched]
    reps = np.unique(representative)
    cluster = np.searchsorted(reps, representative)
    order = np.lexsort((member, cluster))
    return ClusterLayout(
        cluster=cluster[order].astype(np.int64),
        member=member[order].astype(np.int64),
        matched=matched[order].astype(np.int64),
        representative=representative[order].astype(np.int64),
        similarity=similarity[order].astype(np.float64),
        near=is_near[order],
    )


def clusters_table(layout: ClusterLayout, take, dropped: bool) -> pa.Table:
    """The ``dedup/clusters`` side table; ``take(column, positions)`` looks row values up."""
    columns = {
        "cluster": pa.array(layout.cluster, pa.int64()),
        "split": take("split", layout.member),
        "representative_id": take("id", layout.representative),
        "representative_row": pa.array(layout.representative, pa.int64()),
        "member_id": take("id", layout.member),
        "member_row": pa.array(layout.member, pa.int64()),
        "member_source": take("source", layout.member),
        "member_source_row": take("source_row", layout.member),
        "matched_id": take("id", layout.matched),
        "matched_row": pa.array(layout.matched, pa.int64()),
        "similarity": pa.array(layout.similarity, pa.float64()),
        "reason": pa.array(np.where(layout.near, NEAR, EXACT).tolist(), pa.string()),
        "dropped": pa.array(np.full(layout.member.size, dropped), pa.bool_()),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in CLUSTERS_SCHEMA], schema=CLUSTERS_SCHEMA
    )


def table_take(table: pa.Table):
    """``take`` for :func:`clusters_table` over a whole table (positions are table rows)."""

    def take(column: str, rows: np.ndarray) -> pa.Array:
        return take_rows(table.column(column), rows).combine_chunks()

    return take


def append_tags(tags: list, extra: dict[int, list[str]], offset: int = 0) -> list:
    """``tags`` (one list per row, rows ``offset``...) with the keep-all tags appended."""
    for row, new in extra.items():
        local = row - offset
        if 0 <= local < len(tags):
            tags[local] = list(tags[local]) + new
    return tags


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
    rows = np.array(sorted(extra), dtype=np.int64)
    return update_tags(table, rows, lambda row, tags: [*tags, *extra[row]])


def set_tags(table: pa.Table, tags: list) -> pa.Table:
    index = table.schema.get_field_index("tags")
    tags_type = SCHEMA.field("tags").type
    return table.set_column(index, SCHEMA.field("tags"), pa.array(tags, type=tags_type))
