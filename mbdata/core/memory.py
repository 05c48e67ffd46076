"""The Arrow memory pool a build allocates from (issue 28: peak memory of ``mb build``).

pyarrow's default pool on Linux is mimalloc, which keeps the pages of freed buffers resident: a
build frees and reallocates whole columns stage after stage (the rows the hold-out drops, the rows
the attacks and the defence rewrite), and with mimalloc the freed columns stay in the process's
resident set. jemalloc hands them back (measured with ``bench/build.py``: 3M synthetic rows, peak
RSS 1,715 MiB with mimalloc, 1,325 MiB with jemalloc, the same CPU time and bytes).

So a build allocates from jemalloc when this pyarrow has it, unless the user chose a pool with
``ARROW_DEFAULT_MEMORY_POOL`` (that choice is kept). The pool changes only for the duration of the
build; buffers remember their pool, so tables made during it stay valid afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pyarrow as pa

ENV = "ARROW_DEFAULT_MEMORY_POOL"


def build_pool() -> pa.MemoryPool | None:
    """The pool a build should use instead of the default, or None to keep the default."""
    if os.environ.get(ENV):
        return None
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without jemalloc (e.g. Windows wheels)
        return None


@contextlib.contextmanager
def build_memory_pool() -> Iterator[pa.MemoryPool]:
    """Make :func:`build_pool` the default pool inside the ``with`` block, then restore it."""
    previous = pa.default_memory_pool()
    pool = build_pool()
    if pool is None:
        yield previous
        return
    pa.set_memory_pool(pool)
    try:
        yield pool
    finally:
        pa.set_memory_pool(previous)
