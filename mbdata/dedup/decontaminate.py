"""One-sided dedup: remove rows whose prompt matches a reference set, never touching the reference.

The reference is what must not leak into training: held-out eval prompts, a benchmark, a blocklist.
The reference may be prompts only (benchmarks usually ship no answers): only prompts are compared.
A row of the corpus is removed when its prompt (``system`` + ``instruction`` + ``input``)

* exactly equals a reference prompt after normalisation (``contaminated_exact``; the key is
  :func:`mbdata.io.schema.prompt_key`), or
* has shingle Jaccard similarity >= ``decontaminate_threshold`` with a reference prompt
  (``contaminated_near``; MinHash LSH candidates, verified like dedup's near matches).

Rows are never compared with each other and the reference is only read. Removal happens even with
``keep_all`` (a build must not train on its eval prompts); every removal is listed in the
``dedup/decontamination`` side table with the reference row it matched (the earliest one). As in
dedup, an LSH bucket offers at most ``max_bucket_targets`` reference rows (its earliest).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from ..pipeline import BuildContext, StageStats
from .config import DedupConfig
from .sketch import NearParams, TableSketch, estimate_pairs, sketch_table

EXACT = "contaminated_exact"
NEAR = "contaminated_near"
DECONTAMINATION_TABLE = "dedup/decontamination"

DECONTAMINATION_SCHEMA = pa.schema(
    [
        pa.field("row_id", pa.string(), nullable=False),
        pa.field("row", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("reference_id", pa.string(), nullable=False),
        pa.field("reference_row", pa.int64(), nullable=False),
        pa.field("similarity", pa.float64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
    ]
)


def _exact_matches(keys: np.ndarray, ref_keys: np.ndarray) -> np.ndarray:
    """For each corpus key, the first reference row with the same key, or -1."""
    first_ref: dict[tuple[int, int], int] = {}
    for pos, key in enumerate(map(tuple, ref_keys.tolist())):
        first_ref.setdefault(key, pos)
    return np.fromiter(
        (first_ref.get(key, -1) for key in map(tuple, keys.tolist())),
        dtype=np.int64,
        count=len(keys),
    )


def _band_lookup(ref_band_keys: np.ndarray, ref_rows: np.ndarray):
    """Per band: reference keys sorted, with the reference row of each sorted position."""
    lookups = []
    for band in range(ref_band_keys.shape[1]):
        column = ref_band_keys[:, band]
        order = np.argsort(column, kind="stable")
        lookups.append((column[order], ref_rows[order]))
    return lookups


@dataclasses.dataclass(frozen=True)
class _NearMatches:
    rows: np.ndarray  # corpus positions that nearly match a reference prompt
    matched: np.ndarray  # the earliest matching reference row of each
    similarity: np.ndarray  # exact Jaccard (NaN without verification)
    checked: int
    rejected: int
    capped: int


def _near_matches(
    sketch: TableSketch,
    ref: TableSketch,
    open_rows: np.ndarray,
    params: NearParams,
    max_targets: int,
) -> _NearMatches:
    """For each corpus row in ``open_rows``, the earliest reference row it nearly matches."""
    rows, matched, sims = [], [], []
    checked = rejected = capped = 0
    ref_rows = np.flatnonzero(ref.shingle_counts > 0)
    assert ref.band_keys is not None and sketch.band_keys is not None  # sketched with near params
    if ref_rows.size and open_rows.size:
        lookups = _band_lookup(ref.band_keys[ref_rows], ref_rows)
        hits = np.zeros(open_rows.size, dtype=bool)
        for band, (keys, _) in enumerate(lookups):
            probe = sketch.band_keys[open_rows, band]
            at = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
            hits |= keys[at] == probe
        for j in open_rows[hits].tolist():
            candidates: set[int] = set()
            for band, (keys, band_rows) in enumerate(lookups):
                key = sketch.band_keys[j, band]
                lo = int(np.searchsorted(keys, key, side="left"))
                hi = int(np.searchsorted(keys, key, side="right"))
                capped += max(0, hi - lo - max_targets)
                candidates.update(band_rows[lo : min(hi, lo + max_targets)].tolist())
            for i in sorted(candidates):
                sim = float("nan")
                if params.verify:
                    sim = ref.jaccard(i, sketch, j)
                    checked += 1
                    if sim < params.threshold:
                        rejected += 1
                        continue
                rows.append(j)
                matched.append(i)
                sims.append(sim)
                break
    return _NearMatches(
        np.array(rows, dtype=np.int64),
        np.array(matched, dtype=np.int64),
        np.array(sims, dtype=np.float64),
        checked,
        rejected,
        capped,
    )


def decontaminate(
    table: pa.Table,
    reference: pa.Table,
    config: DedupConfig | None,
    ctx: BuildContext,
    *,
    reference_rows: np.ndarray | None = None,
) -> tuple[pa.Table, StageStats]:
    """Remove rows of ``table`` whose prompt exactly or nearly matches a ``reference`` prompt.

    ``reference_rows`` numbers the reference rows in the side table's ``reference_row`` (``mb
    dedup --reference FILE``: the 0-based index in the file as read); default: positions."""
    keep, stats = contamination_mask(table, reference, config, ctx, reference_rows=reference_rows)
    return table.filter(pa.array(keep)), stats


def contamination_mask(
    table: pa.Table,
    reference: pa.Table,
    config: DedupConfig | None,
    ctx: BuildContext,
    *,
    reference_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, StageStats]:
    """The keep-mask of :func:`decontaminate` (False: the row's prompt matches a reference prompt),
    for callers that must decide before they filter (the hold-out draws its recovery and pretrain
    rows only from rows that survive)."""
    config = config or DedupConfig()
    n = table.num_rows
    stats = StageStats(name="decontaminate", rows_in=n)
    params = NearParams.from_config(
        config, n + reference.num_rows, threshold=config.decontaminate_threshold
    )
    verify = params.verify
    ref = sketch_table(reference, "prompt", params, keep_shingles=verify)
    sketch = sketch_table(table, "prompt", params, keep_shingles=verify)

    matched = _exact_matches(sketch.keys, ref.keys)
    similarity = np.where(matched >= 0, 1.0, np.nan)
    reason = np.where(matched >= 0, 1, 0)  # 1 exact, 2 near

    open_rows = np.flatnonzero((matched < 0) & (sketch.shingle_counts > 0))
    near = _near_matches(sketch, ref, open_rows, params, config.max_bucket_targets)
    matched[near.rows], reason[near.rows] = near.matched, 2
    similarity[near.rows] = (
        near.similarity
        if verify
        else estimate_pairs(table, near.rows, reference, near.matched, "prompt", params)
    )

    removed = np.flatnonzero(matched >= 0)
    side = _side_table(
        table,
        reference,
        removed,
        matched[removed],
        similarity[removed],
        reason[removed],
        reference_rows,
    )
    ctx.add_side_table(DECONTAMINATION_TABLE, side)
    n_exact = int(np.count_nonzero(reason == 1))
    n_near = int(np.count_nonzero(reason == 2))
    stats.drop(EXACT, n_exact)
    stats.drop(NEAR, n_near)
    stats.info.update(params.info())
    stats.info.update(
        {
            "fields": "prompt",
            "reference_rows": reference.num_rows,
            "candidates_checked": near.checked,
            "candidates_rejected": near.rejected,
            "bucket_targets_capped": near.capped,
            EXACT: n_exact,
            NEAR: n_near,
        }
    )
    keep = np.ones(n, dtype=bool)
    keep[removed] = False
    return keep, stats


def _side_table(
    table: pa.Table,
    reference: pa.Table,
    rows: np.ndarray,
    ref_rows: np.ndarray,
    similarity: np.ndarray,
    reason: np.ndarray,
    reference_rows: np.ndarray | None = None,
) -> pa.Table:
    def take(t: pa.Table, column: str, idx: np.ndarray) -> pa.Array:
        return t.column(column).take(pa.array(idx, type=pa.int64())).combine_chunks()

    columns = {
        "row_id": take(table, "id", rows),
        "row": pa.array(rows, pa.int64()),
        "split": take(table, "split", rows),
        "source": take(table, "source", rows),
        "source_row": take(table, "source_row", rows),
        "reference_id": take(reference, "id", ref_rows),
        "reference_row": pa.array(
            ref_rows
            if reference_rows is None
            else np.asarray(reference_rows, dtype=np.int64)[ref_rows],
            pa.int64(),
        ),
        "similarity": pa.array(similarity, pa.float64()),
        "reason": pa.array([EXACT if r == 1 else NEAR for r in reason.tolist()], pa.string()),
    }
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in DECONTAMINATION_SCHEMA],
        schema=DECONTAMINATION_SCHEMA,
    )
