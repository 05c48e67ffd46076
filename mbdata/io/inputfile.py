"""Opening an input file: regular files only, bounded reads, and a check that it did not change.

Why (issue 23): a FIFO, ``/dev/zero`` or ``/dev/urandom`` given a ``.jsonl`` name hung ``mb`` or
grew its memory until the OOM killer came; a corpus rewritten in place while ``mb dedup`` read it
gave a manifest whose sha256 named bytes the run had not read. So every file a reader, a recipe
load or an input record opens is refused unless it is a regular file (symlinks to one are fine),
opened without blocking (a FIFO cannot hold the open), read in bounded pieces (the caps are in
:mod:`mbdata.core.limits`), and its :func:`file_state` is taken when the read starts and compared
when it ends and when it is hashed: a difference is a one-line error, never a manifest that
describes other data.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..core.atomic import file_kind
from ..core.errors import InputError
from ..core.limits import MAX_INPUT_BYTES, MAX_LINE_BYTES, MAX_RECIPE_BYTES, limit, too_big

# (device, inode, size, mtime_ns, ctime_ns): any write, truncation, replacement by rename or
# metadata change moves at least one of them.
FileState = tuple[int, int, int, int, int]


def _state(st: os.stat_result) -> FileState:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _refuse(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, expected a file")
    if not stat.S_ISREG(st.st_mode):
        what = file_kind(st.st_mode)
        raise InputError(
            f"{path}: is {what}, not a regular file; mb reads inputs from regular files only "
            "(copy the data into a file first)"
        )


def check_regular(path: str | Path) -> os.stat_result:
    """The stat of ``path`` (symlinks followed), or a one-line error if it is missing or is not a
    regular file."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    _refuse(path, st)
    return st


@contextlib.contextmanager
def open_regular(path: str | Path) -> Iterator[io.BufferedReader]:
    """Open ``path`` for binary reading if it is a regular file. The open does not block (a FIFO
    with no writer would hold a plain ``open`` forever) and the type is checked on the opened
    file, so a file swapped for a FIFO after a check is still refused."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        _refuse(path, os.fstat(fd))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        yield fh


def file_state(path: str | Path) -> FileState | None:
    """The state of a regular file (None for a folder or anything else: no check is made)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return _state(st) if stat.S_ISREG(st.st_mode) else None


def check_unchanged(path: str | Path, before: FileState | None, when: str = "read") -> None:
    """Refuse an input whose state differs from ``before`` (taken when its read started)."""
    if before is None:
        return
    if file_state(path) != before:
        raise InputError(
            f"{path}: the file changed while it was {when} (its size, modification time or "
            "inode differs from when the read started); nothing was written: run again once "
            "nothing is writing it"
        )


def read_capped(fh: BinaryIO, path: str | Path, var: str = MAX_INPUT_BYTES) -> bytes:
    """All of ``fh``, refused past the ``var`` cap (a whole-file read: JSON, a recipe)."""
    cap = limit(var)
    data = fh.read(cap + 1)
    if len(data) > cap:
        raise InputError(f"{path}: {too_big('the file', var, cap)}")
    return data


def check_size(path: str | Path, var: str = MAX_INPUT_BYTES) -> None:
    """Refuse a file that a reader loads whole (CSV, Parquet) when it is larger than the cap."""
    cap = limit(var)
    size = check_regular(path).st_size
    if size > cap:
        raise InputError(f"{path}: {too_big('the file', var, cap)}")


def bounded_lines(fh: BinaryIO, path: str | Path) -> Iterator[bytes]:
    """The lines of ``fh`` (newline kept), each at most ``MBDEFENSE_MAX_LINE_BYTES`` bytes before
    its newline: a longer line is a one-line error, read no further than the cap (a file of
    zeros without a newline costs one cap of memory, not the file)."""
    cap = limit(MAX_LINE_BYTES)
    readline, size = fh.readline, cap + 1
    lineno = 0
    while raw := readline(size):
        lineno += 1
        if len(raw) == size and raw[-1] != 10:  # cap bytes and no newline yet
            raise InputError(
                f"{path}:{lineno}: {too_big('the line', MAX_LINE_BYTES, cap)} (is this JSON "
                "Lines? one row per line)"
            )
        yield raw


def read_yaml_text(path: str | Path) -> str:
    """The text of a recipe or ``--config`` file: a regular file of at most
    ``MBDEFENSE_MAX_RECIPE_BYTES`` bytes (raises ``UnicodeDecodeError`` if it is not UTF-8)."""
    with open_regular(path) as fh:
        return read_capped(fh, path, MAX_RECIPE_BYTES).decode("utf-8")
