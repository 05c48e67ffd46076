"""Pipeline steps: each takes a canonical table and returns a canonical table plus statistics.

A build is a straight line of :class:`Stage` objects (like datatrove's pipeline steps). Each stage
reports rows in/out and rows dropped per reason in a :class:`StageStats`; the build records them in
the manifest, so every removal and every rate is explained. Randomness comes only from
:meth:`BuildContext.rng`, which derives an independent, named stream from the recipe seed: adding or
changing one stage never changes the random numbers another stage draws (what a later stage can
choose from may still depend on what an earlier one did, e.g. rows already poisoned).

Stages hand each other *typed artifacts* (small frozen dataclasses such as :class:`PoisonedRows`),
never untyped keys: a stage declares the artifact types it ``reads`` (must exist),
``optional_reads`` (may exist) and ``writes``; :func:`check_wiring` verifies at assembly time that
every required read is written by an earlier stage, and :class:`BuildContext` refuses, at run time, a
``get``/``put`` the running stage did not declare. A stage that exchanges nothing declares nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .core.errors import BuildError
from .io.spill import PIECE_ROWS, release, take_rows
from .io.spill import active as active_spill

A = TypeVar("A")


@dataclasses.dataclass
class StageStats:
    """What one stage did. ``dropped`` maps a reason to a row count; ``info`` holds figures such as
    achieved rates. Everything here is deterministic (it goes into the hashed manifest); wall time
    is kept apart in ``seconds``."""

    name: str
    rows_in: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = dataclasses.field(default_factory=dict)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def as_manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "dropped": dict(sorted(self.dropped.items())),
            "info": self.info,
        }


@dataclasses.dataclass
class BuildContext:
    """Shared state of one build: the seed, the recipe's folder, side tables, file records and the
    typed artifacts stages hand to each other (:meth:`get` / :meth:`find` / :meth:`put`)."""

    seed: int
    base_dir: Path = Path(".")
    side_tables: dict[str, pa.Table] = dataclasses.field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    skip_bad_rows: bool = False
    progress: bool = False
    artifacts: dict[type, Any] = dataclasses.field(default_factory=dict)
    running: Any = None  # the stage being run (its declarations are enforced), None outside
    # Where per-batch steps run (mbdata.executors.ENGINES; the command opens that executor and
    # every step reuses it); the output never depends on it.
    engine: str = "local"
    batch_rows: int | None = None  # rows per batch of those steps (None: the engines' default)

    def map_table(self, table: pa.Table, fn: Any, schema: pa.Schema | None = None) -> pa.Table:
        """``fn`` (pure, one batch of rows -> a table) over ``table`` in batches on this build's
        engine, outputs in row order (see :mod:`mbdata.engines.batches`)."""
        from .engines.batches import map_table

        return map_table(table, fn, engine=self.engine, schema=schema, batch_rows=self._rows())

    def iter_table(self, table: pa.Table, fn: Any) -> Any:
        """:meth:`map_table` as a stream of outputs in row order (none held after use)."""
        from .engines.batches import iter_table

        return iter_table(table, fn, engine=self.engine, batch_rows=self._rows())

    def map_ranges(
        self, n: int, fn: Any, schema: pa.Schema | None = None, spill: bool = False
    ) -> pa.Table | None:
        """``fn(start, stop)`` (pure) over row ranges covering ``range(n)`` on this build's engine,
        concatenated in order (``spill``: written to the build's spill as the batches come)."""
        from .engines.batches import map_ranges

        return map_ranges(
            n, fn, engine=self.engine, schema=schema, batch_rows=self._rows(), spill=spill
        )

    def _rows(self) -> int:
        from .engines.batches import BATCH_ROWS

        return BATCH_ROWS if self.batch_rows is None else self.batch_rows

    def rng(self, name: str) -> np.random.Generator:
        """An independent random stream for the named purpose, fixed by (seed, name)."""
        digest = hashlib.sha256(f"{self.seed}\x1f{name}".encode()).digest()
        return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))

    def add_side_table(self, name: str, table: pa.Table) -> None:
        """Register an extra Arrow table written as ``DIR/{name}.arrow`` (e.g. ``dedup/clusters``)."""
        self.side_tables[name] = table

    def resolve(self, path: str) -> Path:
        """A path from the recipe, relative to the recipe's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def _declared(self, kind: type, attrs: tuple[str, ...], verb: str) -> None:
        stage = self.running
        if stage is not None and not any(kind in getattr(stage, a, ()) for a in attrs):
            raise BuildError(
                f"stage {stage.name!r} {verb} {kind.__name__} without declaring it "
                f"in {' or '.join(attrs)} (a wiring bug in the pipeline)"
            )

    def find(self, kind: type[A]) -> A | None:
        """The artifact of type ``kind`` an earlier stage wrote, or None."""
        self._declared(kind, ("reads", "optional_reads", "writes"), "reads")
        return self.artifacts.get(kind)

    def get(self, kind: type[A]) -> A:
        """The artifact of type ``kind``; :func:`check_wiring` guarantees a declared read exists."""
        found = self.find(kind)
        if found is None:
            who = self.running.name if self.running is not None else "caller"
            raise BuildError(f"{who}: no {kind.__name__} was produced by an earlier stage")
        return found

    def put(self, artifact: Any) -> None:
        """Publish (or replace) the artifact of ``artifact``'s type for later stages."""
        self._declared(type(artifact), ("writes",), "writes")
        self.artifacts[type(artifact)] = artifact


class Stage(Protocol):
    """A pipeline step. ``name`` keys its stats in the manifest. A stage that exchanges artifacts
    also has class attributes ``reads``, ``optional_reads`` and ``writes`` (tuples of artifact
    types); a stage without them exchanges nothing."""

    name: str

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]: ...


def check_wiring(stages: list[Stage]) -> None:
    """Fail at assembly time if a stage reads an artifact no earlier stage writes."""
    written: set[type] = set()
    for stage in stages:
        missing = [t.__name__ for t in getattr(stage, "reads", ()) if t not in written]
        if missing:
            raise BuildError(
                f"stage {stage.name!r} reads {', '.join(missing)}, which no earlier "
                "stage writes (check the stage order)"
            )
        written.update(getattr(stage, "writes", ()))


def run_stage(
    stage: Stage, table: pa.Table | list[pa.Table], ctx: BuildContext
) -> tuple[pa.Table, StageStats]:
    """Run one stage, filling in rows in/out and wall time. Given the table handed over
    (:data:`Owned`), the stage holds the only reference to it (see :func:`filter_rows`)."""
    start = time.perf_counter()
    ctx.running = stage
    if isinstance(table, list):
        table = table.pop()
    rows_in = table.num_rows
    owned = [table]
    del table
    try:
        out, stats = stage.run(owned.pop(), ctx)
    finally:
        ctx.running = None
    stats.rows_in = stats.rows_in or rows_in
    stats.rows_out = out.num_rows
    spill = active_spill()
    if spill is not None:  # every column the stage built in memory goes to the staging folder
        out = spill.table(out)
    stats.seconds = time.perf_counter() - start
    return out, stats


def round_half_up(x: float) -> int:
    """The rounding rule for every count derived from a rate: ``floor(x + 0.5)``.

    (Python's ``round`` rounds half to even, so 2.5 -> 2 but 3.5 -> 4; a rate's count should not
    depend on parity.) A tiny epsilon absorbs float error, e.g. 0.05 * 50 = 2.5000000000000004."""
    import math

    return int(math.floor(x + 0.5 + 1e-9))


# A table handed over to a function: a one-element list the callee empties, so that once the
# caller has dropped its own name for the table (``owned = [table]; del table``) the callee holds
# the only reference and can free each old column as soon as its new one is built. Arrow tables are
# immutable, so a stage that drops or rewrites rows otherwise holds the corpus twice at its peak.
Owned = list


def handed_over(table: pa.Table | list[pa.Table]) -> tuple[list[Any], pa.Schema, int]:
    """The columns, schema and row count of ``table``, taken out of an :data:`Owned` list when
    one is given (only the returned list then holds the columns)."""
    if isinstance(table, list):
        table = table.pop()
    return list(table.columns), table.schema, table.num_rows


def _rebuild(columns: list[Any], schema: pa.Schema, fn: Any) -> pa.Table:
    """``fn(column, i)`` of every column in turn, each old column released once replaced."""
    out = []
    for i in range(len(columns)):
        column, columns[i] = columns[i], None
        out.append(fn(column, i))
        del column
    table = pa.Table.from_arrays(out, schema=schema)
    release()  # the pages validating a spilled table touched (mbdata.io.spill.PIECE_ROWS)
    return table


# Values given to rows of some columns: column name -> [(positions, value), ...], later pairs win.
Assign = dict[str, list[tuple[np.ndarray, str]]]


def _assigned(piece: Any, a: int, pairs: list[tuple[np.ndarray, str]]) -> Any:
    """``piece`` (rows ``a``...) with the rows of ``pairs`` that fall in it set to their value."""
    for positions, value in pairs:
        inside = positions[(positions >= a) & (positions < a + len(piece))] - a
        if len(inside):
            mask = np.zeros(len(piece), dtype=bool)
            mask[inside] = True
            piece = pc.if_else(pa.array(mask), pa.scalar(value, piece.type), piece)
    return piece


def filter_rows(
    table: pa.Table | list[pa.Table], keep: np.ndarray, assign: Assign | None = None
) -> pa.Table:
    """``table.filter(keep)`` column by column (the same table, chunk layout included: the columns
    are first cut at every column's chunk boundaries, as ``Table.filter`` does), so a handed-over
    table (:data:`Owned`) is never held twice. With a spill (:mod:`mbdata.io.spill`) each new
    column is written a piece at a time instead, and the table never leaves the staging folder.
    ``assign`` gives rows of some columns a value first (positions before the filter)."""
    columns, schema, n = handed_over(table)
    keep = np.asarray(keep, dtype=bool)
    assign = {k: v for k, v in (assign or {}).items() if v}
    spill = active_spill()
    if spill is not None:

        def spilled(column: Any, i: int) -> Any:
            writer = spill.writer(schema.field(i))
            pairs = assign.get(schema.field(i).name, [])
            for a in range(0, n, PIECE_ROWS):
                piece = _assigned(column.slice(a, PIECE_ROWS), a, pairs)
                writer.write(piece.filter(pa.array(keep[a : a + PIECE_ROWS])))
                release()
            return writer.finish()

        return _rebuild(columns, schema, spilled)
    for i, name in enumerate(schema.names):
        if name in assign:
            columns[i] = _assigned(columns[i], 0, assign[name])
    edges = [np.cumsum([0] + [len(c) for c in column.chunks]) for column in columns]
    bounds = np.unique(np.concatenate(edges)) if edges else np.zeros(1, dtype=np.int64)
    mask = pa.array(keep)

    def filtered(column: Any, _: int) -> Any:
        pieces = [
            piece
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())
            for piece in column.slice(a, b - a).chunks
        ]
        return pa.chunked_array(pieces, type=column.type).filter(mask)

    return _rebuild(columns, schema, filtered)


def replace_rows(
    table: pa.Table | list[pa.Table], indices: np.ndarray | list[int], new_rows: pa.Table
) -> pa.Table:
    """``table`` with the rows at ``indices`` replaced by ``new_rows`` (same order), positions kept
    (column by column, so a handed-over table, :data:`Owned`, is never held twice; with a spill,
    a piece of each column at a time)."""
    columns, schema, n = handed_over(table)
    indices = np.asarray(indices, dtype=np.int64)
    new_rows = new_rows.cast(schema)
    spill = active_spill()
    if spill is not None:
        # Per piece, from the replaced positions in order (no index of every row).
        by_position = np.argsort(indices, kind="stable")
        where = indices[by_position]

        def spilled(column: Any, i: int) -> Any:
            writer = spill.writer(schema.field(i))
            new = new_rows.column(i)
            for a in range(0, n, PIECE_ROWS):
                piece = column.slice(a, PIECE_ROWS)
                lo, hi = np.searchsorted(where, [a, a + len(piece)])
                if hi > lo:
                    local = np.arange(len(piece), dtype=np.int64)
                    local[where[lo:hi] - a] = len(piece) + np.arange(hi - lo, dtype=np.int64)
                    fresh = take_rows(new, by_position[lo:hi])
                    chunks = piece.chunks + fresh.chunks
                    piece = pa.chunked_array(chunks, type=column.type).take(pa.array(local))
                writer.write(piece)
                release()
            return writer.finish()

        return _rebuild(columns, schema, spilled)
    perm = np.arange(n, dtype=np.int64)
    perm[indices] = n + np.arange(new_rows.num_rows, dtype=np.int64)
    order = pa.array(perm)

    def replaced(column: Any, i: int) -> Any:
        chunks = column.chunks + new_rows.column(i).chunks
        return pa.chunked_array(chunks, type=column.type).take(order)

    return _rebuild(columns, schema, replaced)


def replace_many(
    table: pa.Table | list[pa.Table], parts: list[tuple[np.ndarray, pa.Table]]
) -> pa.Table:
    """:func:`replace_rows` for several (positions, new rows) pairs with disjoint positions, in one
    pass over ``table`` (the same table as replacing them one after the other)."""
    schema = table[0].schema if isinstance(table, list) else table.schema
    indices = np.concatenate([np.asarray(p, dtype=np.int64) for p, _ in parts])
    rows = pa.concat_tables([r.cast(schema) for _, r in parts])
    return replace_rows(table, indices, rows)


def update_tags(table: pa.Table, positions: np.ndarray, new: Any) -> pa.Table:
    """``table`` with the ``tags`` of the rows at ``positions`` (distinct) replaced by
    ``new(position, tags)``, the other rows' tags kept as they are.

    Only the touched rows' tags become Python lists (not one list per row of the corpus); the
    column comes back as one chunk, as when it was rebuilt from a list per row."""
    positions = np.asarray(positions, dtype=np.int64)
    index = table.schema.get_field_index("tags")
    field = table.schema.field("tags")
    column = table.column("tags")
    whole = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    old = whole.take(pa.array(positions)).to_pylist()
    replaced = pa.array([new(int(p), t) for p, t in zip(positions, old)], field.type)
    n = table.num_rows
    perm = np.arange(n, dtype=np.int64)
    perm[positions] = n + np.arange(len(positions), dtype=np.int64)
    return table.set_column(index, field, pa.concat_arrays([whole, replaced]).take(pa.array(perm)))


def split_mask(table: pa.Table, split: str) -> np.ndarray:
    """One bool a row: whether it is in ``split``."""
    mask = pc.equal(table.column("split"), split).to_numpy(zero_copy_only=False)
    release()  # the split column's pages of a spilled corpus
    return mask


def split_indices(table: pa.Table, split: str) -> np.ndarray:
    """Positions of the rows of ``split``."""
    return np.flatnonzero(split_mask(table, split))


def compact_positions(positions: np.ndarray) -> np.ndarray:
    """``positions`` as int32 when every one fits (half the memory of a per-row index; a draw
    over them gives the same rows, as the draws depend on their count, not their type)."""
    if len(positions) and int(positions[-1]) >= 2**31 - 1:
        return positions
    return positions.astype(np.int32)


def seeded_subset(candidates: np.ndarray | int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` of ``candidates`` (positions, or ``range(candidates)`` for an int), drawn without
    replacement from ``rng`` and returned in ascending order, so a subset keeps corpus order.

    The one way every stage draws rows (source samples, mixing, hold-outs, poisoned rows): the same
    (seed, stream name, candidates, k) always gives the same rows."""
    if isinstance(candidates, (int, np.integer)):
        candidates = np.arange(int(candidates), dtype=np.int64)
    if k == 0:
        return candidates[:0]
    return np.sort(rng.choice(candidates, size=k, replace=False))
