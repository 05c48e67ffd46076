"""Per-batch steps over a table or over row ranges, on any executor, outputs in row order: the one
place a data stage says "apply this function to every batch of rows and give me the batches back".

A step function must be *pure* (see :mod:`mbdata.executors`): its output depends only on its batch
(or its row range) and on the arguments bound into it. Stages whose logic needs the whole corpus
(the hold-out draws, poisoning with a seeded stream) decide on the driver from compact per-row
indexes the steps return.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from ..executors import Executor, executor_for
from ..io.spill import active as active_spill
from ..io.spill import release, spill_batches

#: Rows per batch: large enough that per-batch Arrow/numpy calls amortise, small enough that one
#: batch's Python objects stay a few tens of MB.
BATCH_ROWS = 16_384

TableFn = Callable[[pa.Table], pa.Table]
RangeFn = Callable[[int, int], pa.Table]


def ranges(n: int, batch_rows: int = BATCH_ROWS) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of at most ``batch_rows`` rows covering ``range(n)``."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    return [(a, min(a + batch_rows, n)) for a in range(0, n, batch_rows)]


def _released(outputs: Iterable[pa.Table]) -> Iterator[pa.Table]:
    """``outputs`` with the pages a batch read from a spilled corpus released after each one
    (:mod:`mbdata.io.spill`: otherwise a pass over the corpus keeps all of it resident)."""
    for out in outputs:
        release()
        yield out


def _concat(parts: list[pa.Table], schema: pa.Schema | None) -> pa.Table | None:
    if not parts:
        return None if schema is None else pa.Table.from_batches([], schema=schema)
    if schema is not None:
        parts = [p.cast(schema) for p in parts]
    return pa.concat_tables(parts)


def map_table(
    table: pa.Table,
    fn: TableFn,
    *,
    engine: str | None = None,
    executor: Executor | None = None,
    batch_rows: int = BATCH_ROWS,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """``fn`` applied to each ``batch_rows`` slice of ``table``, outputs concatenated in order
    (cast to ``schema`` when given), on ``executor`` (else the executor named ``engine``, else the
    command's). An empty table gives ``fn`` of the empty table."""
    outputs = iter_table(table, fn, engine=engine, executor=executor, batch_rows=batch_rows)
    out = _concat(list(outputs), schema)
    assert out is not None  # at least one output (fn of the empty table when there are no rows)
    return out


def iter_table(
    table: pa.Table,
    fn: TableFn,
    *,
    engine: str | None = None,
    executor: Executor | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.Table]:
    """:func:`map_table` as a stream: ``fn`` of each batch, yielded in row order as it comes,
    so a caller that folds the outputs into something smaller never holds them all."""
    if table.num_rows == 0:
        yield fn(table)
        return
    slices = (table.slice(a, b - a) for a, b in ranges(table.num_rows, batch_rows))
    with contextlib.ExitStack() as stack:
        found = executor or stack.enter_context(executor_for(engine))
        yield from _released(found.map(fn, slices))


class _Range:
    """A range step as a batch step (picklable when ``fn`` is)."""

    def __init__(self, fn: RangeFn):
        self.fn = fn

    def __call__(self, span: tuple[int, int]) -> pa.Table:
        return self.fn(*span)


def map_ranges(
    n: int,
    fn: RangeFn,
    *,
    engine: str | None = None,
    executor: Executor | None = None,
    batch_rows: int = BATCH_ROWS,
    schema: pa.Schema | None = None,
    spill: bool = False,
) -> pa.Table | None:
    """``fn(start, stop)`` for consecutive row ranges covering ``range(n)`` (rows made from
    nothing but their numbers, e.g. the synthetic corpus), concatenated in order. ``spill``
    (with ``schema``, and a current spill): each batch goes to the staging folder as it comes
    (:mod:`mbdata.io.spill`), so the table is never whole in memory."""
    spans = ranges(n, batch_rows)
    with contextlib.ExitStack() as stack:
        found = executor or stack.enter_context(executor_for(engine))
        outputs = found.map(_Range(fn), spans)
        if spill and schema is not None and spans and active_spill() is not None:
            return spill_batches(outputs, schema)
        return _concat(list(outputs), schema)
