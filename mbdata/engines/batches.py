"""Per-batch steps, run by either engine with the same result: the one place a data stage says
"apply this function to every batch of rows and give me the batches back in order".

* ``local``: a plain loop in this process, batch after batch (memory: one batch of Python objects
  at a time beside the Arrow output).
* ``ray``: each batch is one Ray Data block, transformed by ``map_batches`` on the workers of the
  running Ray session (:func:`mbdata.engines.ray_session`); the blocks come back in input order
  (``preserve_order``), so concatenating them gives exactly the local table.

A step function must be *pure*: its output depends only on its batch (or its row range) and on the
arguments bound into it, never on a random stream shared between batches. Stages whose logic needs
the whole corpus at once (the hold-out draws, poisoning with a seeded stream) stay on the driver.
Functions are shipped to Ray workers by Ray's own serialisation of *our* code; no input data is ever
unpickled from outside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pyarrow as pa

from . import DEFAULT_ENGINE, check_engine

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
    engine: str = DEFAULT_ENGINE,
    batch_rows: int = BATCH_ROWS,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """``fn`` applied to each ``batch_rows`` slice of ``table``, outputs concatenated in order
    (cast to ``schema`` when given). An empty table gives ``fn`` of the empty table."""
    if table.num_rows == 0:
        out = fn(table)
        return out.cast(schema) if schema is not None else out
    slices = [table.slice(a, b - a) for a, b in ranges(table.num_rows, batch_rows)]
    if check_engine(engine) == "local":
        return _concat([fn(s) for s in slices], schema)
    return _ray_map([s.combine_chunks() for s in slices], fn, schema)


def map_ranges(
    n: int,
    fn: RangeFn,
    *,
    engine: str = DEFAULT_ENGINE,
    batch_rows: int = BATCH_ROWS,
    schema: pa.Schema | None = None,
) -> pa.Table | None:
    """``fn(start, stop)`` for consecutive row ranges covering ``range(n)`` (rows made from
    nothing but their numbers, e.g. the synthetic corpus), concatenated in order."""
    spans = ranges(n, batch_rows)
    if check_engine(engine) == "local":
        return _concat([fn(a, b) for a, b in spans], schema)
    inputs = [pa.table({"start": [a], "stop": [b]}) for a, b in spans]

    def run(batch: pa.Table) -> pa.Table:
        starts, stops = batch.column("start").to_pylist(), batch.column("stop").to_pylist()
        return pa.concat_tables([fn(a, b) for a, b in zip(starts, stops)])

    return _ray_map(inputs, run, schema)


def _ray_map(blocks: list[pa.Table], fn: TableFn, schema: pa.Schema | None) -> pa.Table | None:
    """One Ray Data block per input table, ``map_batches(fn)`` per block, blocks back in order.
    Needs a running Ray (the command's :func:`~mbdata.engines.ray_session`)."""
    from . import EngineError, require_ray

    ray = require_ray()
    if not ray.is_initialized():
        raise EngineError(
            "engine 'ray': no Ray session is running (the command opens one with "
            "mbdata.engines.ray_session)"
        )
    context = ray.data.DataContext.get_current()
    previous = context.execution_options.preserve_order
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    # Ray Data logs every dataset's plan at INFO on stderr; a command prints its own summary.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        dataset = ray.data.from_arrow(blocks).map_batches(
            fn, batch_format="pyarrow", batch_size=None, zero_copy_batch=True
        )
        parts = [t for t in ray.get(dataset.to_arrow_refs()) if t.num_rows or schema is None]
    finally:
        context.execution_options.preserve_order = previous
    return _concat(parts, schema)
