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


class ReferenceIndex:
    """A reference set sketched once for prompt matching (exact keys, LSH band lookups, shingle
    hashes when verifying), probed by any number of corpus tables or batches: the reference is
    small (benchmarks, eval sets), the corpus may be streamed."""

    def __init__(self, reference: pa.Table, params: NearParams):
        self.reference, self.params = reference, params
        self.sketch = sketch_table(reference, "prompt", params, keep_shingles=params.verify)
        self._first: dict[tuple[int, int], int] | None = None
        self._lookups: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.rows = np.flatnonzero(self.sketch.shingle_counts > 0)

    def exact(self, keys: np.ndarray) -> np.ndarray:
        """For each corpus key, the first reference row with the same key, or -1."""
        if self._first is None:
            self._first = {}
            for pos, key in enumerate(map(tuple, self.sketch.keys.tolist())):
                self._first.setdefault(key, pos)
        first = self._first
        return np.fromiter(
            (first.get(key, -1) for key in map(tuple, keys.tolist())),
            dtype=np.int64,
            count=len(keys),
        )

    def lookups(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per band: reference keys sorted, with the reference row of each sorted position."""
        if self._lookups is None:
            assert self.sketch.band_keys is not None  # sketched with near params
            self._lookups = _band_lookup(self.sketch.band_keys[self.rows], self.rows)
        return self._lookups


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
    index: ReferenceIndex,
    open_rows: np.ndarray,
    max_targets: int,
) -> _NearMatches:
    """For each corpus row in ``open_rows``, the earliest reference row it nearly matches."""
    rows, matched, sims = [], [], []
    checked = rejected = capped = 0
    params, ref = index.params, index.sketch
    assert sketch.band_keys is not None  # sketched with near params
    if index.rows.size and open_rows.size:
        lookups = index.lookups()
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


@dataclasses.dataclass(frozen=True)
class Contamination:
    """What one table (or one batch of a stream) matched in the reference: ``rows`` (positions in
    that table, ascending), the reference row each matched, the similarity, the reason (1 exact,
    2 near), and the near search's counters."""

    rows: np.ndarray
    matched: np.ndarray
    similarity: np.ndarray
    reason: np.ndarray
    checked: int
    rejected: int
    capped: int


def match_reference(
    table: pa.Table, sketch: TableSketch, index: ReferenceIndex, max_targets: int
) -> Contamination:
    """The rows of ``table`` (sketched as ``sketch`` with ``index.params``, field group
    ``prompt``) whose prompt exactly or nearly matches a reference prompt: exact matches first,
    near matching on the rest (rows with shingles)."""
    params = index.params
    matched = index.exact(sketch.keys)
    similarity = np.where(matched >= 0, 1.0, np.nan)
    reason = np.where(matched >= 0, 1, 0)  # 1 exact, 2 near

    open_rows = np.flatnonzero((matched < 0) & (sketch.shingle_counts > 0))
    near = _near_matches(sketch, index, open_rows, max_targets)
    matched[near.rows], reason[near.rows] = near.matched, 2
    similarity[near.rows] = (
        near.similarity
        if params.verify
        else estimate_pairs(table, near.rows, index.reference, near.matched, "prompt", params)
    )
    removed = np.flatnonzero(matched >= 0)
    return Contamination(
        removed,
        matched[removed],
        similarity[removed],
        reason[removed],
        near.checked,
        near.rejected,
        near.capped,
    )


def decontamination_stats(
    n: int,
    reference_rows: int,
    params: NearParams,
    reason: np.ndarray,
    checked: int,
    rejected: int,
    capped: int,
) -> StageStats:
    """The ``decontaminate`` stage's manifest figures (the same for a table and a stream)."""
    stats = StageStats(name="decontaminate", rows_in=n)
    n_exact = int(np.count_nonzero(reason == 1))
    n_near = int(np.count_nonzero(reason == 2))
    stats.drop(EXACT, n_exact)
    stats.drop(NEAR, n_near)
    stats.info.update(params.info())
    stats.info.update(
        {
            "fields": "prompt",
            "reference_rows": reference_rows,
            "candidates_checked": checked,
            "candidates_rejected": rejected,
            "bucket_targets_capped": capped,
            EXACT: n_exact,
            NEAR: n_near,
        }
    )
    return stats


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
    params = NearParams.from_config(
        config, n + reference.num_rows, threshold=config.decontaminate_threshold
    )
    index = ReferenceIndex(reference, params)
    sketch = sketch_table(table, "prompt", params, keep_shingles=params.verify)
    found = match_reference(table, sketch, index, config.max_bucket_targets)
    side = _side_table(
        table,
        reference,
        found.rows,
        found.matched,
        found.similarity,
        found.reason,
        reference_rows,
    )
    ctx.add_side_table(DECONTAMINATION_TABLE, side)
    stats = decontamination_stats(
        n,
        reference.num_rows,
        params,
        found.reason,
        found.checked,
        found.rejected,
        found.capped,
    )
    keep = np.ones(n, dtype=bool)
    keep[found.rows] = False
    return keep, stats


def _side_table(
    table: pa.Table,
    reference: pa.Table,
    rows: np.ndarray,
    ref_rows: np.ndarray,
    similarity: np.ndarray,
    reason: np.ndarray,
    reference_rows: np.ndarray | None = None,
    offset: int = 0,
) -> pa.Table:
    """The ``dedup/decontamination`` rows of ``rows`` (positions in ``table``; ``offset`` is added
    to the ``row`` column when ``table`` is one batch of a stream)."""

    def take(t: pa.Table, column: str, idx: np.ndarray) -> pa.Array:
        return t.column(column).take(pa.array(idx, type=pa.int64())).combine_chunks()

    columns = {
        "row_id": take(table, "id", rows),
        "row": pa.array(rows + offset, pa.int64()),
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
