"""The Arrow memory pool a build allocates from (issue 28: peak memory of ``mb build``).

pyarrow's default pool on Linux is mimalloc, which keeps the pages of freed buffers resident: a
build frees and reallocates whole columns stage after stage (the rows the hold-out drops, the rows
the attacks and the defence rewrite), and with mimalloc the freed columns stay in the process's
resident set. jemalloc hands them back (measured with ``bench/build.py``: 3M synthetic rows, peak
RSS 1,715 MiB with mimalloc, 1,325 MiB with jemalloc, the same CPU time and bytes).

So a build allocates from jemalloc when this pyarrow has it, unless the user chose a pool with
``ARROW_DEFAULT_MEMORY_POOL`` (that choice is kept). The pool changes only for the duration of the
build; buffers remember their pool, so tables made during it stay valid afterwards.

The per-row indexes a build sorts and draws from (numpy arrays of a few to tens of MB, see
:mod:`mbdata.io.spill`) come from the C allocator. glibc raises its mmap threshold each time such
a block is freed, so the next ones land in its heap, where a freed block stays resident: at 3M
rows that kept about 60 MiB more between stages than at 1M. :func:`release_large_blocks` fixes the
threshold at 256 KiB (``mallopt(M_MMAP_THRESHOLD)``: blocks above it are mapped and handed back
when freed; measured: 3M-row peak 359 -> 326 MiB, about 6 % more CPU). It is set once per process
(glibc has no way back to its sliding threshold), only on glibc, and not when the user set
``MALLOC_MMAP_THRESHOLD_``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import platform
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


_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
LARGE_BLOCK = 256 << 10


def release_large_blocks() -> bool:
    """Fix glibc's mmap threshold at :data:`LARGE_BLOCK` (see the module); whether it was set."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not platform.libc_ver()[0] == "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def build_memory_pool() -> Iterator[pa.MemoryPool]:
    """Make :func:`build_pool` the default pool inside the ``with`` block, then restore it (and
    :func:`release_large_blocks`, for good)."""
    release_large_blocks()
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
