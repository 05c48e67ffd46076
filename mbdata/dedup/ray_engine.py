"""``mb dedup --engine ray``: the sketch and the duplicate search as Ray Data operations.

The same decisions as the local engine, reached in steps that spread over a Ray cluster:

1. the driver streams the input (:func:`mbdata.io.readers.iter_input_batches`), spills it for the
   write pass and puts each batch (text fields, global row number, split code) in the object store
   (with ``--reference``, the batches arrive decontaminated on the driver:
   :mod:`.decontaminate_stream`; the reference index is small);
2. **signatures** in ``map_batches``: normalisation, shingles, MinHash and one 64-bit key per LSH
   band (:mod:`.minhash`, :mod:`.lsh`: the very functions of the local engine, so the keys are equal);
3. **exact duplicates** on the driver from the 16-byte keys (the per-row index, as locally);
4. **band buckets** via ``groupby`` on a hash of (band, key) (whole buckets per group, grouped by
   a sort inside): each bucket of two or more eligible rows emits edges from its rows to its
   smallest row;
5. **connected components** of those edges by iterative label propagation (every row takes the
   smallest label among its neighbours, with pointer jumping, until nothing changes); the edge list
   is small (rows in shared buckets only) and is propagated on the driver in numpy;
6. the **keep rule** per component via ``groupby`` on a hash of the component label, then
   ``map_groups`` over its components: a component holds every
   bucket of its rows, so first-occurrence-wins matching (:func:`.cluster.greedy_near`, with exact
   Jaccard verification from the shingle hashes carried along) gives, component by component,
   exactly the matches of the local engine's single walk.

The write pass is the local engine's (streaming, byte-identical shards). Connect to an existing
cluster with ``RAY_ADDRESS`` (see :func:`mbdata.engines.ray_session`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .cluster import exact_first, greedy_near
from .config import DedupConfig
from .lsh import band_keys, group_buckets
from .minhash import hash_sets, signatures_from_hashes
from .normalize import ID_FIELDS, normalize_rows
from .shingle import shingler
from .sketch import NearParams, gc_paused, sorted_jaccard
from .stage import Duplicates, _NearResult, scope_salt
from .stream import Progress, RowSpill, StreamIndex

#: Shuffle partitions of the two groupbys (Ray's default of 200 costs seconds on small inputs).
GROUP_PARTITIONS = 8
#: Groups of the two groupbys: buckets and components are grouped by a hash of their key into this
#: many groups, each handled by one vectorised call (a Python call per bucket is far too slow:
#: most of the millions of buckets hold one row).
GROUP_PARTS = 64


class _Sketch:
    """``map_batches`` function: one batch of rows -> its per-row index columns."""

    def __init__(self, config: DedupConfig, params: NearParams | None):
        self.config, self.params = config, params

    def __call__(self, table: pa.Table) -> pa.Table:
        config, params = self.config, self.params
        rows = table.column("row").to_numpy()
        code = table.column("code").to_numpy()
        canonical = table.select([f for f in ID_FIELDS])
        normalized = normalize_rows(canonical, config.fields)
        columns = {
            "row": pa.array(rows, pa.int64()),
            "code": pa.array(code, pa.int64()),
            "k0": pa.array(normalized.keys[:, 0], pa.uint64()),
            "k1": pa.array(normalized.keys[:, 1], pa.uint64()),
        }
        if params is None:
            columns["count"] = pa.array(np.zeros(len(rows), dtype=np.int64))
            return pa.table(columns)
        make = shingler(params.shingle)
        with gc_paused():
            shingles = [make(text, params.ngram) for text in normalized.texts]
            hashed = hash_sets(shingles, params.hash, params.scheme)
            del shingles
        sig = signatures_from_hashes(hashed, params.num_perm, params.seed, params.scheme)
        keys = band_keys(sig, params.bands, params.rows, scope_salt(code))
        columns["count"] = pa.array(hashed.sizes(), pa.int64())
        columns["bands"] = _fixed_binary(keys)
        if params.verify:
            columns["shingles"] = pa.LargeListArray.from_arrays(
                pa.array(hashed.offsets, pa.int64()), pa.array(hashed.values)
            )
        return pa.table(columns)


def _fixed_binary(matrix: np.ndarray) -> pa.Array:
    """Each row of a 2-D array as one fixed-size binary value."""
    matrix = np.ascontiguousarray(matrix)
    width = matrix.shape[1] * matrix.itemsize
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(matrix), [None, pa.py_buffer(matrix.tobytes())]
    )


def _band_matrix(column: pa.ChunkedArray | pa.Array, bands: int) -> np.ndarray:
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, bands), dtype=np.uint64)
    data = column.buffers()[1]
    start = column.offset * bands * 8
    flat = np.frombuffer(data, dtype=np.uint64, count=len(column) * bands, offset=start)
    return flat.reshape(len(column), bands)


class _BandEdges:
    """``map_batches``: eligible rows -> one (part, band, key, row) record per band; ``part`` (a
    hash of band and key) is the groupby key, so one group holds many whole buckets."""

    def __init__(self, eligible_ref, bands: int):
        self.eligible_ref, self.bands = eligible_ref, bands

    def __call__(self, table: pa.Table) -> pa.Table:
        import ray

        eligible = ray.get(self.eligible_ref)
        rows = table.column("row").to_numpy()
        at = np.minimum(np.searchsorted(eligible, rows), max(len(eligible) - 1, 0))
        mask = eligible[at] == rows if len(eligible) else np.zeros(len(rows), dtype=bool)
        keys = _band_matrix(table.column("bands"), self.bands)[mask].ravel()
        rows = rows[mask]
        band = np.tile(np.arange(self.bands, dtype=np.int64), len(rows))
        return pa.table(
            {
                "part": pa.array((keys % np.uint64(GROUP_PARTS)).astype(np.int64)),
                "band": pa.array(band),
                "key": pa.array(keys, pa.uint64()),
                "row": pa.array(np.repeat(rows, self.bands), pa.int64()),
            }
        )


def _bucket_edges(group: pa.Table) -> pa.Table:
    """``map_groups``: whole buckets (rows sharing band and key) -> for each bucket of 2+ rows,
    edges from its rows to its smallest row (vectorised over the group)."""
    band = group.column("band").to_numpy()
    key = group.column("key").to_numpy()
    rows = group.column("row").to_numpy()
    order = np.lexsort((rows, key, band))
    band, key, rows = band[order], key[order], rows[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (band[1:] != band[:-1]) | (key[1:] != key[:-1])
    start = np.flatnonzero(new)
    run = np.cumsum(new) - 1
    size = np.diff(np.append(start, len(rows)))
    member = ~new & (size[run] > 1)
    return pa.table(
        {"row": pa.array(rows[member], pa.int64()), "root": pa.array(rows[start[run]][member])}
    )


def label_components(rows: np.ndarray, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the edges ``rows[k] - roots[k]`` by iterative label propagation:
    every node takes the smallest label among itself and its neighbours (then labels of labels,
    pointer jumping) until a fixed point. Returns ``(nodes, label)``, the label being the smallest
    node of the component."""
    nodes = np.unique(np.concatenate([rows, roots]))
    u = np.searchsorted(nodes, rows)
    v = np.searchsorted(nodes, roots)
    label = np.arange(nodes.size)
    while True:
        before = label.copy()
        np.minimum.at(label, u, label[v])
        np.minimum.at(label, v, label[u])
        label = label[label]
        if np.array_equal(label, before):
            break
    return nodes, nodes[label]


class _AttachComponent:
    """``map_batches``: rows in play -> their per-row index with the component label."""

    def __init__(self, nodes_ref, labels_ref):
        self.nodes_ref, self.labels_ref = nodes_ref, labels_ref

    def __call__(self, table: pa.Table) -> pa.Table:
        import ray

        nodes, labels = ray.get(self.nodes_ref), ray.get(self.labels_ref)
        rows = table.column("row").to_numpy()
        at = np.minimum(np.searchsorted(nodes, rows), max(nodes.size - 1, 0))
        mask = nodes[at] == rows if nodes.size else np.zeros(len(rows), dtype=bool)
        keep = [c for c in ("row", "bands", "shingles") if c in table.column_names]
        out = table.select(keep).filter(pa.array(mask))
        component = labels[at][mask]
        out = out.append_column("component", pa.array(component, pa.int64()))
        return out.append_column("part", pa.array(component % GROUP_PARTS, pa.int64()))


def _greedy(params: NearParams, threshold: float, max_targets: int, group: pa.Table) -> pa.Table:
    """``map_groups``: whole components -> their near matches, component by component (first
    occurrence wins, as locally)."""
    group = group.sort_by([("component", "ascending"), ("row", "ascending")])
    components = group.column("component").to_numpy()
    starts = np.flatnonzero(np.r_[True, components[1:] != components[:-1]])
    stops = np.r_[starts[1:], len(components)]
    keys_all = _band_matrix(group.column("bands"), params.bands)
    rows_all = group.column("row").to_numpy()
    shingles = group.column("shingles") if params.verify else None
    member, matched, sims = [], [], []
    checked = rejected = capped = 0
    for lo, hi in zip(starts.tolist(), stops.tolist()):
        rows = rows_all[lo:hi]
        buckets = group_buckets(keys_all[lo:hi])
        similarity = (
            _Shingles(shingles.slice(lo, hi - lo)).jaccard if shingles is not None else None
        )
        m = greedy_near(buckets, similarity, threshold, max_targets)
        member += rows[m.member].tolist()
        matched += rows[m.matched].tolist()
        sims += m.similarity.tolist()
        checked, rejected, capped = checked + m.checked, rejected + m.rejected, capped + m.capped
    return pa.table(
        {
            "member": pa.array([member], pa.list_(pa.int64())),
            "matched": pa.array([matched], pa.list_(pa.int64())),
            "similarity": pa.array([sims], pa.list_(pa.float64())),
            "checked": pa.array([checked], pa.int64()),
            "rejected": pa.array([rejected], pa.int64()),
            "capped": pa.array([capped], pa.int64()),
        }
    )


class _Shingles:
    """Exact Jaccard of two rows of a component, as :meth:`.sketch.ShingleStore.jaccard`."""

    def __init__(self, column: pa.ChunkedArray):
        self.values = [np.asarray(v) for v in column.to_numpy(zero_copy_only=False)]
        self._unique: dict[int, np.ndarray] = {}

    def jaccard(self, i: int, j: int) -> float:
        a = self._unique.get(i)
        if a is None:
            a = self._unique[i] = np.unique(self.values[i])
        return sorted_jaccard(a, np.unique(self.values[j]))


def _columns(ds, names: list[str]) -> dict[str, np.ndarray]:
    """Columns of a dataset gathered on the driver (one execution)."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for batch in ds.select_columns(names).iter_batches(batch_format="numpy"):
        for name in names:
            parts[name].append(np.asarray(batch[name]))
    return {
        name: np.concatenate(p) if p else np.zeros(0, dtype=np.int64) for name, p in parts.items()
    }


@contextlib.contextmanager
def _task_shuffle():
    """Groupbys on Ray tasks (sort-based pull shuffle) rather than Ray's default aggregator
    actors, whose start-up dominates on inputs of this size; the previous strategy is restored."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    before = ctx.shuffle_strategy
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        ctx.shuffle_strategy = before


def ray_dedup(
    batches: Iterable[pa.RecordBatch],
    config: DedupConfig,
    spill_dir: Path,
    progress: Progress,
    num_cpus: int | None = None,
) -> tuple[StreamIndex, Duplicates]:
    """Pass 1 and the decisions of :func:`.stream.dedup_stream` on Ray (see the module doc)."""
    from ..engines import ray_session

    with ray_session(num_cpus) as ray, _task_shuffle():
        refs: list[Any] = []
        spill = RowSpill(spill_dir)
        rows = 0
        try:
            for batch in batches:
                table, code = spill.add(batch)
                part = table.select(list(ID_FIELDS))
                part = part.append_column("row", pa.array(np.arange(rows, rows + len(code))))
                part = part.append_column("code", pa.array(code))
                refs.append(ray.put(part))
                rows += table.num_rows
                progress.update(rows)
        finally:
            spill.close()
        progress.update(rows, final=True)
        params = NearParams.from_config(config, rows) if config.near else None
        index = StreamIndex(
            rows=rows,
            keys=np.zeros((0, 2), dtype=np.uint64),
            codes=np.zeros(0, dtype=np.int64),
            counts=np.zeros(0, dtype=np.int64),
            split_names=spill.split_names,
            params=params,
            band_keys=None,
            shingles=None,
        )
        if not refs:
            none = np.zeros(0, dtype=np.int64)
            empty = _NearResult(none, none, np.zeros(0))
            return index, Duplicates(none, none, empty, 0)
        import ray.data

        sketched = (
            ray.data.from_arrow_refs(refs)
            .map_batches(_Sketch(config, params), batch_format="pyarrow", zero_copy_batch=True)
            .materialize()
        )
        small = _columns(sketched, ["row", "code", "k0", "k1", "count"])
        order = np.argsort(small["row"], kind="stable")
        if not np.array_equal(small["row"][order], np.arange(rows)):
            raise RuntimeError("ray engine: row numbers lost in the sketch step")
        index.codes = small["code"][order].astype(np.int64)
        index.counts = small["count"][order].astype(np.int64)
        index.keys = np.stack([small["k0"][order], small["k1"][order]], axis=1).astype(np.uint64)
        positions = np.arange(rows, dtype=np.int64)
        first = exact_first(index.keys, index.codes) if config.exact else positions
        exact_members = np.flatnonzero(first != positions)
        kept = first == positions
        if params is None:
            none = np.zeros(0, dtype=np.int64)
            return index, Duplicates(first, exact_members, _NearResult(none, none, np.zeros(0)), 0)
        skipped = int(np.count_nonzero(kept & (index.counts == 0)))
        eligible = np.flatnonzero(kept & (index.counts > 0))
        near = _near_on_ray(ray, sketched, eligible, config, params)
        return index, Duplicates(first, exact_members, near, skipped)


def _near_on_ray(ray, sketched, eligible: np.ndarray, config: DedupConfig, params: NearParams):
    none = np.zeros(0, dtype=np.int64)
    eligible_ref = ray.put(eligible)
    edges = (
        sketched.select_columns(["row", "bands"])
        .map_batches(_BandEdges(eligible_ref, params.bands), batch_format="pyarrow")
        .groupby("part", num_partitions=GROUP_PARTITIONS)
        .map_groups(_bucket_edges, batch_format="pyarrow")
    )
    found = _columns(edges, ["row", "root"])
    edge_rows, edge_roots = found["row"].astype(np.int64), found["root"].astype(np.int64)
    if edge_rows.size == 0:
        return _NearResult(none, none, np.zeros(0), rows=int(eligible.size))
    nodes, labels = label_components(edge_rows, edge_roots)
    columns = ["row", "bands"] + (["shingles"] if params.verify else [])
    matches = (
        sketched.select_columns(columns)
        .map_batches(
            _AttachComponent(ray.put(nodes), ray.put(labels)),
            batch_format="pyarrow",
        )
        .groupby("part", num_partitions=GROUP_PARTITIONS)
        .map_groups(
            functools.partial(_greedy, params, config.threshold, config.max_bucket_targets),
            batch_format="pyarrow",
        )
    )
    member, matched, sims = [], [], []
    checked = rejected = capped = 0
    for batch in matches.iter_batches(batch_format="pyarrow"):
        for rec in batch.to_pylist():
            member += rec["member"]
            matched += rec["matched"]
            sims += rec["similarity"]
            checked += rec["checked"]
            rejected += rec["rejected"]
            capped += rec["capped"]
    return _NearResult(
        np.array(member, dtype=np.int64),
        np.array(matched, dtype=np.int64),
        np.array(sims, dtype=np.float64),
        rows=int(eligible.size),
        checked=checked,
        rejected=rejected,
        capped=capped,
    )
