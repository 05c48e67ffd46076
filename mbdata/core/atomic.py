"""Atomic outputs: a file, a folder, or a set of them appears complete or not at all.

Every output mbdefense writes (build folders, exports, audit reports plus their ``--clean-out``
corpus, model folders, evaluation files, reports) goes through :func:`commit_outputs`:

1. **Lock.** An advisory ``fcntl`` lock on each destination (``.NAME.mbdefense-lock`` beside it),
   taken in sorted order. The kernel drops the lock when its process dies, so a lock file left by a
   killed run is stale by construction and simply taken over. A second process waits (up to
   ``MBDEFENSE_LOCK_TIMEOUT`` seconds, default 120) and then fails with a one-line error.
2. **Recover.** Under the lock, leftovers of an earlier killed run (``.NAME.partial-*``,
   ``.NAME.old-*``, ``.NAME.tmp-*``, a journal) are finished from the journal or removed, and each is
   reported on stderr. Recovery never deletes the only copy of an output, nor an old folder that
   holds files mbdefense did not write.
3. **Check.** The existence / ownership check happens under the lock, so a slow first writer cannot
   be replaced by a second one that started without ``--overwrite``.
4. **Fill.** Every output is written into a hidden sibling (same folder, so renames are atomic).
   Then the check of step 3 runs again: a folder created, or a file added to the old output, while
   this run was filling is kept and the new output discarded.
5. **Commit.** A journal (``.NAME.mbdefense-journal`` beside the first output; the others get a
   pointer to it) records every rename; it switches from ``filling`` to ``commit`` in one atomic
   rename once every output is complete. Then every old folder is moved aside and checked once
   more (no longer reachable under its name, so it cannot change), new ones moved in, old ones
   deleted, and the journal removed. SIGINT/SIGTERM are held back during the renames; a ``kill -9``
   at any point is repaired by the next run that touches any of the outputs (or opens the build): a
   ``filling`` journal is rolled back (old state), a ``commit`` journal rolled forward (new state).
   See docs/safety.md.

Bookkeeping files (lock, journal, ``.mbdefense`` record) are opened with ``O_NOFOLLOW`` and
``O_NONBLOCK`` (created with ``O_EXCL`` where new) and must be plain files with one link: a symlink,
folder, FIFO or hard link planted at one of those paths is a one-line error, never followed, never
waited on (:func:`open_private`). Output names that cannot carry hidden siblings (``..``, a name
within :data:`SIBLING_ROOM` of the file system's limit) are refused (:func:`output_path`); a full
disk or a permission error while writing is a one-line error after the partial copy is removed.

Ownership: a folder written here carries :data:`MARKER`, a JSON record with a random id and the
list of entries mbdefense wrote into it. ``overwrite`` only replaces an empty folder or one whose
marker is valid and whose contents are exactly what mbdefense wrote (plus nested folders that are
themselves ours); a file name alone (``manifest.json``) proves nothing. Folders that mbdefense keeps
writing into (``mark_dir`` without entries, e.g. training run folders) are "open": their valid
marker is the proof, and only a writer of the same kind replaces one (``mb build -o RUN`` does not
replace a run folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import BuildError

MARKER = ".mbdefense"
LOCK_SUFFIX = ".mbdefense-lock"
JOURNAL_SUFFIX = ".mbdefense-journal"
#: The hidden sibling a build keeps its corpus in while it runs (mbdata.io.spill).
SPILL_TAG = "spill"
_LEFTOVER_TAGS = ("partial", "old", "tmp", SPILL_TAG)
_ID = re.compile(r"^[0-9a-f]{32}$")

# Fault injection for tests: ``_FAULT(step)`` runs at every step of the commit protocol. The
# environment variables do the same across processes: ``MBDEFENSE_FAULT_KILL=STEP[:N]`` SIGKILLs
# the process at the N-th (default first) time STEP is reached; ``MBDEFENSE_FAULT_SLEEP=STEP:SECS``
# sleeps there (a slowed writer).
_FAULT: Callable[[str], None] | None = None
_fault_counts: dict[str, int] = {}


def _fault(step: str) -> None:
    if _FAULT is not None:
        _FAULT(step)
    kill = os.environ.get("MBDEFENSE_FAULT_KILL")
    if kill:
        name, _, nth = kill.partition(":")
        if name == step:
            _fault_counts[step] = _fault_counts.get(step, 0) + 1
            if _fault_counts[step] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)
    slow = os.environ.get("MBDEFENSE_FAULT_SLEEP")
    if slow:
        name, _, secs = slow.partition(":")
        if name == step:
            time.sleep(float(secs or 1))


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def temp_sibling(path: Path, tag: str) -> Path:
    """A hidden, unique sibling of ``path`` (same folder, so the final rename is atomic)."""
    path = Path(path)
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- paths and files

# The longest suffix mbdefense adds to an output's name for a hidden sibling
# (``.NAME.mbdefense-journal.PID-XXXXXXXX.new``: 40 characters with a 7-digit pid).
SIBLING_ROOM = 40


def output_path(path: str | Path) -> Path:
    """``path`` made absolute, refused when its last part cannot carry hidden siblings: ``..``
    (renaming it fails with EBUSY), an empty name (``/``), or a name so long that
    ``.NAME.partial-...`` would pass the file system's name limit."""
    path = Path(path).absolute()
    if path.name in ("", ".", ".."):
        raise BuildError(
            f"{path}: name the output itself, not a path ending in {path.name or '/'!r} "
            "(e.g. `-o out` instead of `-o out/sub/..`)"
        )
    limit = _name_max(path.parent) - SIBLING_ROOM
    if len(path.name.encode("utf-8", "surrogateescape")) > limit:
        raise BuildError(
            f"{path.parent}/{path.name[:40]}...: the output's name has "
            f"{len(path.name)} characters; mbdefense writes hidden siblings beside it "
            f"(.NAME.partial-...), so use a name of at most {limit} characters"
        )
    return path


def _name_max(folder: Path) -> int:
    for candidate in (folder, *folder.parents):
        try:
            return int(os.pathconf(candidate, "PC_NAME_MAX"))
        except (OSError, ValueError):
            continue
    return 255


_FILE_KINDS = {
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def file_kind(mode: int) -> str:
    """What a path that is not a regular file is, for a one-line error (``st_mode`` in): the one
    wording for bookkeeping files here and for inputs (``mbdata.io.inputfile``)."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")


# How to replace an existing output, named for both callers: the CLI flag and the Python keyword
# (a library caller told only "--overwrite" was pointed at a flag it cannot pass: issue 24).
OVERWRITE_HINT = "pass --overwrite (overwrite=True from Python)"


def already_exists(path: str | Path) -> str:
    """The one-line message for an output that exists and may not be replaced."""
    return f"{path}: already exists; {OVERWRITE_HINT} to replace it"


def _not_ours(path: Path, what: str) -> BuildError:
    return BuildError(
        f"{path}: is {what}, not a file mbdefense wrote (its lock, journal and record files are "
        "plain files it creates itself, and it follows no links there); remove it and run again"
    )


def open_private(path: str | Path, flags: int, mode: int = 0o644) -> int:
    """Open one of mbdefense's own bookkeeping files (lock, journal, ``.mbdefense`` record)
    without following a symbolic link and without blocking on a FIFO; anything but a plain file
    with one link (a link, folder, FIFO, device, or a hard link to someone's file) is refused
    with a one-line error, so a planted link can never make mbdefense write elsewhere."""
    path = Path(path)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENOTDIR):
            try:
                what = file_kind(os.lstat(path).st_mode)
            except OSError:
                what = "not a regular file"
            raise _not_ours(path, what) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = (
            file_kind(info.st_mode)
            if not stat.S_ISREG(info.st_mode)
            else "a file with other hard links"
        )
        raise _not_ours(path, what)
    return fd


def read_private(path: str | Path, limit: int = 16 << 20) -> bytes:
    """The bytes of one bookkeeping file (see :func:`open_private`), at most ``limit``."""
    fd = open_private(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{path}: larger than {limit} bytes")
    return data


def write_private(path: str | Path, text: str) -> None:
    """Replace bookkeeping file ``path`` by ``text``: written to a new hidden file (created with
    ``O_EXCL``, never through a link) and renamed over ``path``, which itself must be absent or
    a plain file."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode):
            raise _not_ours(path, file_kind(info.st_mode))
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.new")
    fd = open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as fh:
                fh.write(text)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
_NO_ACCESS = (errno.EACCES, errno.EPERM, errno.EROFS)
_USER_ERRNOS = _DISK_FULL + _NO_ACCESS + (errno.ENAMETOOLONG, errno.EBUSY, errno.ELOOP)


def os_error_message(exc: OSError) -> str | None:
    """One line for an OSError the user can fix (disk full, permissions, ...), else None."""
    if exc.errno not in _USER_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "output"
    if exc.errno in _DISK_FULL:
        hint = "free some space (or raise the file size limit) and run again"
    elif exc.errno in _NO_ACCESS:
        hint = "check the permissions of the file and its folder, or choose another path"
    else:
        hint = "choose another output path"
    return f"{where}: {exc.strerror or os.strerror(exc.errno or 0)}; {hint}"


@contextlib.contextmanager
def _user_errors(target: Path) -> Iterator[None]:
    """Turn disk-full and permission errors while writing ``target`` into one-line errors (the
    commit protocol has already removed the partial copy and kept the old output by then)."""
    try:
        yield
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        raise BuildError(
            f"{target}: not written ({message}); the old output is unchanged"
        ) from None


# --------------------------------------------------------------------------- ownership


def read_marker(path: Path) -> dict[str, Any] | None:
    """The ownership record of folder ``path``, or None when absent or not a valid record."""
    try:  # never through a link, never blocking on a FIFO: a planted record proves nothing
        record = json.loads(read_private(Path(path) / MARKER).decode("utf-8"))
    except (OSError, ValueError, BuildError):
        return None
    if (
        not isinstance(record, dict)
        or not isinstance(record.get("id"), str)
        or not _ID.match(record["id"])
        or not isinstance(record.get("kind"), str)
    ):
        return None
    entries = record.get("entries")
    if entries is not None and not (
        isinstance(entries, list) and all(isinstance(e, str) for e in entries)
    ):
        return None
    return record


def written_by_us(path: Path) -> bool:
    """Whether ``path`` is an empty folder or one that mbdefense wrote (see the module doc)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    names = [p.name for p in path.iterdir()]
    if not names:
        return True
    record = read_marker(path)
    if record is None:
        return False
    entries = record.get("entries")
    if entries is None:
        return True
    return all(_only_ours(path / n) for n in names if n != MARKER and n not in entries)


def _only_ours(path: Path) -> bool:
    """An entry mbdefense did not list is tolerated only if it is a folder of our folders (e.g. a
    build's ``exports/jsonl``)."""
    if path.is_symlink() or not path.is_dir():
        return False
    if written_by_us(path):
        return True
    return not (path / MARKER).exists() and all(
        _only_ours(p) or _our_leftover(p.name) for p in path.iterdir()
    )


def _our_leftover(name: str) -> bool:
    """A hidden lock, journal or temporary sibling that mbdefense creates beside an output."""
    return name.startswith(".") and (
        name.endswith((LOCK_SUFFIX, JOURNAL_SUFFIX))
        or any(f".{tag}-" in name for tag in _LEFTOVER_TAGS)
    )


def mark_dir(path: Path, kind: str, entries: list[str] | None = None) -> None:
    """Write the ownership record into folder ``path``: a random id and, for a finished folder,
    the entries mbdefense wrote (None: an open folder mbdefense keeps writing into). The record is
    written in place but never through a link, FIFO or hard link (:func:`open_private`)."""
    record = {"kind": kind, "id": uuid.uuid4().hex, "entries": entries}
    fd = open_private(Path(path) / MARKER, os.O_WRONLY | os.O_CREAT)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"), 0)
    finally:
        os.close(fd)


def check_output_dir(out_dir: Path, overwrite: bool, kind: str | None = None) -> None:
    """Refuse to write into an existing folder unless ``overwrite`` (checked before any work, and
    again under the lock), and refuse to overwrite anything mbdefense did not write. ``kind``
    (what will replace it: ``build``, ``audit``...) may not replace an open folder of another
    kind (a run folder may hold your notes and model weights)."""
    out_dir = output_path(out_dir)
    _check_bookkeeping(out_dir)
    repair_if_free(out_dir)
    _check_dir(out_dir, overwrite, kind)


def _check_bookkeeping(target: Path) -> None:
    """Refuse, before any work, a lock or journal path that is a link, folder, FIFO... (the
    commit would refuse it too, but only after the whole run)."""
    for path in (lock_path(target), journal_path(target)):
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode):
            raise _not_ours(path, file_kind(info.st_mode))


def _check_dir(out_dir: Path, overwrite: bool, kind: str | None = None) -> None:
    if not out_dir.exists() and not out_dir.is_symlink():
        _check_writable_parent(out_dir)
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise BuildError(f"{out_dir}: exists and is not a folder")
    if not overwrite:
        raise BuildError(already_exists(out_dir))
    if not written_by_us(out_dir):
        raise BuildError(
            f"{out_dir}: refusing to overwrite a non-empty folder that mbdefense did "
            "not write (no valid .mbdefense record, or files mbdefense did not write "
            "in it); choose another output path"
        )
    record = read_marker(out_dir)
    if kind is not None and record is not None and record.get("entries") is None:
        if record["kind"] != kind:
            raise BuildError(
                f"{out_dir}: is a {record['kind']} folder that mbdefense keeps writing into "
                f"(it may hold files of yours); a {kind} does not replace it: choose another "
                "output path, or delete the folder yourself"
            )
    _check_removable(out_dir)
    _check_writable_parent(out_dir)


def _check_removable(out_dir: Path) -> None:
    """``--overwrite`` deletes the old folder after the new one is in place: refuse up front
    when it cannot be deleted (a read-only folder in it), rather than fail half-way."""
    for folder, dirs, _ in os.walk(out_dir):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise BuildError(
                f"{out_dir}: cannot replace it: {folder} is read-only (make it writable, e.g. "
                f"`chmod -R u+w {out_dir}`, or choose another output path)"
            )
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]


def _check_writable_parent(path: Path) -> None:
    """The nearest existing folder above ``path`` must take new entries (a read-only parent is a
    one-line error before any work, not a traceback after it)."""
    for folder in path.parents:
        if folder.exists():
            if not os.access(folder, os.W_OK | os.X_OK):
                raise BuildError(
                    f"{path}: cannot write in {folder}: permission denied; choose another "
                    "output path"
                )
            return


def check_output_file(path: Path, overwrite: bool) -> None:
    """The file counterpart of :func:`check_output_dir`."""
    path = output_path(path)
    _check_bookkeeping(path)
    repair_if_free(path)
    _check_file(path, overwrite)


def _check_file(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise BuildError(f"{path}: is a folder, expected a file path")
    if path.exists() and not overwrite:
        raise BuildError(already_exists(path))
    _check_writable_parent(path)


def remove_output_dir(out_dir: Path) -> None:
    """Delete an output folder for ``--overwrite`` (only one that :func:`written_by_us`)."""
    check_output_dir(out_dir, overwrite=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)


def _real(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def check_separate(
    inputs: Sequence[str | Path | None],
    outputs: Sequence[str | Path | None],
    *,
    inside_ok: str | Path | None = None,
) -> None:
    """Refuse an output path that equals, contains or lies inside an input path (both resolved,
    symlinks followed), before any work: ``--overwrite`` would otherwise delete or rewrite the
    input. ``inside_ok`` names a folder of the input where outputs may live (a build's
    ``exports/``)."""
    allowed = _real(inside_ok) if inside_ok is not None else None
    for out in outputs:
        if out is None:
            continue
        o = _real(out)
        for inp in inputs:
            if inp is None:
                continue
            i = _real(inp)
            same = o == i or (o.exists() and i.exists() and os.path.samefile(o, i))
            if same:
                raise BuildError(
                    f"{out}: the output is the input {inp}; choose another output path"
                )
            if i.is_relative_to(o):
                raise BuildError(
                    f"{out}: the output contains the input {inp}; choose another output path"
                )
            if o.is_relative_to(i) and not (allowed is not None and o.is_relative_to(allowed)):
                raise BuildError(
                    f"{out}: the output lies inside the input {inp}; choose a path outside it"
                )


# --------------------------------------------------------------------------- locking

_HELD: dict[str, list[int]] = {}  # lock path -> [fd, depth]; re-entrant within one process
_HELD_GUARD = threading.Lock()


def lock_path(target: str | Path) -> Path:
    target = Path(target).absolute()
    return target.parent.resolve() / f".{target.name}{LOCK_SUFFIX}"


def _live_spill(target: Path, name: str) -> bool:
    """Whether ``name`` is the spill folder of a build of ``target`` still running (the corpus of
    a build in progress, :mod:`mbdata.io.spill`: ``.NAME.spill-PID-XXXXXXXX``)."""
    prefix = f".{target.name}.{SPILL_TAG}-"
    if not name.startswith(prefix):
        return False
    pid = name[len(prefix) :].split("-")[0]
    return pid.isdigit() and _pid_alive(int(pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _acquire(key: str, target: Path, timeout: float) -> None:
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            return
    deadline = time.monotonic() + timeout
    waited = False
    while True:
        try:
            fd = _open_lock(key)
        except FileNotFoundError:  # removed by its holder between our two opens: retry
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if time.monotonic() >= deadline:
                raise BuildError(
                    f"{target}: another mbdefense process (pid {holder or '?'}) is "
                    "writing it; wait for it to finish or choose another output "
                    "path"
                ) from None
            if not waited:
                _note(f"waiting for pid {holder or '?'} to finish writing {target}")
                waited = True
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.lstat(key).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the previous holder removed the file after we opened it: retry
            os.close(fd)
            continue
        previous = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if previous.isdigit() and int(previous) != os.getpid() and not _pid_alive(int(previous)):
            _note(f"took over a stale lock on {target} left by pid {previous} (no longer running)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
        return


def _open_lock(key: str) -> int:
    """The lock file, created with ``O_EXCL`` or opened as it is, never through a link (a
    symlink planted at ``.NAME.mbdefense-lock`` would otherwise receive our pid)."""
    try:
        return os.open(
            key, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644
        )
    except FileExistsError:
        return open_private(key, os.O_RDWR)


def _release(key: str) -> None:
    with _HELD_GUARD:
        held = _HELD[key]
        held[1] -= 1
        if held[1]:
            return
        del _HELD[key]
    with contextlib.suppress(FileNotFoundError):
        os.unlink(key)  # while still holding it: a waiter re-checks the inode and retries
    os.close(held[0])


@contextlib.contextmanager
def output_lock(targets: Sequence[str | Path], timeout: float | None = None) -> Iterator[None]:
    """Hold the advisory locks of ``targets`` (sorted, so two processes never deadlock)."""
    if timeout is None:
        timeout = float(os.environ.get("MBDEFENSE_LOCK_TIMEOUT", "120"))
    keys = sorted({(str(lock_path(t)), output_path(t)) for t in targets}, key=lambda k: k[0])
    taken: list[str] = []
    try:
        for key, target in keys:
            target.absolute().parent.mkdir(parents=True, exist_ok=True)
            _acquire(key, target, timeout)
            taken.append(key)
        yield
    finally:
        for key in reversed(taken):
            _release(key)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the renames run, then deliver them to the original
    handlers. (Masking is not enough: Python runs handlers in the main thread whichever thread
    the kernel picked, so the handlers themselves are swapped.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        pending.append(signum)

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


# --------------------------------------------------------------------------- journal


def journal_path(target: str | Path) -> Path:
    target = Path(target).absolute()
    return target.parent / f".{target.name}{JOURNAL_SUFFIX}"


def _write_json(path: Path, data: dict) -> None:
    write_private(path, json.dumps(data, indent=1) + "\n")


def _exists(path: str | Path) -> bool:
    return os.path.lexists(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _valid_entry(entry: Any) -> bool:
    """A journal entry only ever names hidden siblings of its own target (a forged or damaged
    journal cannot make us rename arbitrary paths)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dir"), bool):
        return False
    try:
        target, partial, old = (Path(entry[k]) for k in ("target", "partial", "old"))
    except (KeyError, TypeError):
        return False
    return (
        target.is_absolute()
        and target.name not in ("", ".", "..")
        and partial.parent == target.parent == old.parent
        and partial.name.startswith(f".{target.name}.partial-")
        and old.name.startswith(f".{target.name}.old-")
        and "/" not in partial.name[len(target.name) :] + old.name[len(target.name) :]
    )


def _read_journal(path: Path) -> dict | None:
    """A journal's content, or None when it cannot be parsed; a journal path that is a link,
    folder or FIFO is a one-line error (never followed, never waited on)."""
    try:
        data = json.loads(read_private(path).decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    except FileNotFoundError:
        return None
    return data if isinstance(data, dict) else None


def _load_journal(target: Path) -> tuple[Path, dict] | None:
    """The journal governing ``target`` (its own, or the primary one its pointer names)."""
    own = journal_path(target)
    if not _exists(own):
        return None
    data = _read_journal(own)
    primary = own
    if data is not None and "primary" in data:
        named = data["primary"]
        if (
            not isinstance(named, str)
            or not os.path.isabs(named)
            or not Path(named).name.endswith(JOURNAL_SUFFIX)
        ):
            data = None
        elif not _exists(named):  # its commit finished or was undone; a kill left the pointer
            _note(f"removed a stale commit journal pointer {own}")
            own.unlink(missing_ok=True)
            return None
        else:
            primary = Path(named)
            data = _read_journal(primary)
            if data is not None and "primary" in data:
                data = None
            # a pointer counts only when the journal it names lists this very output
            if data is not None and not (
                isinstance(data.get("entries"), list)
                and any(
                    isinstance(e, dict) and journal_path(str(e.get("target", ""))) == own
                    for e in data["entries"]
                )
            ):
                _note(f"removed a commit journal pointer {own} that its journal does not list")
                own.unlink(missing_ok=True)
                return None
    if data is None:
        _note(f"removed an unreadable commit journal {primary}")
        own.unlink(missing_ok=True)
        if primary != own:  # the pointer was fine, the journal it names is not
            primary.unlink(missing_ok=True)
        return None
    entries = data.get("entries")
    if (
        not isinstance(entries, list)
        or not entries
        or not all(map(_valid_entry, entries))
        or data.get("state") not in ("filling", "commit")
    ):
        _note(f"removed an invalid commit journal {primary}")
        primary.unlink(missing_ok=True)
        own.unlink(missing_ok=True)
        return None
    return primary, data


def _journal_files(primary: Path, data: dict) -> list[Path]:
    others = [journal_path(e["target"]) for e in data["entries"]]
    return [p for p in others if p != primary] + [primary]


class _Conflict(Exception):
    """An old folder that is no longer ours turned up while committing (a file was added to it
    after the last check); the commit was undone."""


def _roll_forward(primary: Path, data: dict) -> list[str]:
    """Move every complete new output into place: first every old folder aside (each is checked
    to still be ours once it can no longer change), then every new one in, then the old ones are
    deleted. Never deletes the only copy: an old folder whose replacement is gone (a partial
    removed by hand after a kill) is put back. Returns notes on what it repaired."""
    entries = [(e, Path(e["target"]), Path(e["partial"]), Path(e["old"])) for e in data["entries"]]
    notes = []
    try:
        for entry, target, partial, old in entries:
            if entry["dir"] and _exists(partial) and _exists(target):
                os.rename(target, old)
                _fault("moved-old")
    except OSError:  # e.g. EBUSY (a mount point): undo, so no journal is left to fail again
        if all(_exists(partial) for _, _, partial, _ in entries):
            _undo(primary, data)
        raise
    if all(_exists(partial) for _, _, partial, _ in entries):  # nothing moved in yet
        foreign = [
            target
            for entry, target, _, old in entries
            if entry["dir"] and _exists(old) and not written_by_us(old)
        ]
        if foreign:
            _undo(primary, data)
            raise _Conflict(", ".join(map(str, foreign)))
    for entry, target, partial, old in entries:
        if _exists(partial):
            if entry["dir"]:
                os.rename(partial, target)
            else:
                os.replace(partial, target)
            _fault("moved-new")
        elif entry["dir"] and not _exists(target) and _exists(old):
            os.rename(old, target)
            notes.append(
                f"restored {target} from {old.name}: its new version was missing (removed by "
                "hand after an interrupted run?)"
            )
    for _entry, target, _, old in entries:
        if _exists(old):
            notes += _discard_old(target, old)
            _fault("removed-old")
    for path in _journal_files(primary, data):
        path.unlink(missing_ok=True)
        _fault("removed-journal")
    return notes


def _discard_old(target: Path, old: Path) -> list[str]:
    """Delete the old copy of ``target`` once the new one is in place, only when it is ours;
    a failure (a read-only folder) is reported, not raised: the new output is complete."""
    if not _exists(target):
        os.rename(old, target)
        return [f"restored {target} from {old.name}"]
    if old.is_dir() and not old.is_symlink() and not written_by_us(old):
        return [
            f"kept {old}: the old version of {target} holds files mbdefense did not write; "
            "move them out and delete it yourself"
        ]
    trash = temp_sibling(target, "tmp")  # a kill mid-delete leaves a .tmp-, removed next time
    try:
        os.rename(old, trash)
        _remove(trash)
    except OSError as exc:
        left = trash if _exists(trash) else old
        return [
            f"could not delete the old version {left} of {target} ({exc.strerror}); delete it yourself"
        ]
    return []


def _undo(primary: Path, data: dict) -> None:
    """Undo a commit before any new output was moved in: old folders back, partials removed."""
    for entry in data["entries"]:
        target, old = Path(entry["target"]), Path(entry["old"])
        if _exists(old) and not _exists(target):
            os.rename(old, target)
    _roll_back(primary, data)


def _roll_back(primary: Path, data: dict) -> None:
    """Remove every new output that was being written (old outputs were never touched; one that
    was moved aside is put back)."""
    for entry in data["entries"]:
        target, old = Path(entry["target"]), Path(entry["old"])
        if entry["dir"] and _exists(old) and not _exists(target):
            os.rename(old, target)
        _remove(Path(entry["partial"]))
    for path in _journal_files(primary, data):
        path.unlink(missing_ok=True)


def recover(target: str | Path, quiet: bool = False) -> list[str]:
    """Repair what an earlier killed run left around ``target`` (call with its lock held):
    finish or undo an interrupted commit from its journal, then remove stray hidden siblings
    (restoring an old folder whose replacement never arrived). Returns what was done."""
    target = Path(target).absolute()
    done = []
    found = _load_journal(target)
    if found is not None:
        primary, data = found
        targets = [Path(e["target"]) for e in data["entries"]]
        try:
            with output_lock(targets, timeout=0):
                if _exists(primary):
                    if data["state"] == "commit":
                        try:
                            done += _roll_forward(primary, data)
                            done.append(
                                f"completed an interrupted commit of {', '.join(map(str, targets))}"
                            )
                        except _Conflict as exc:
                            done.append(
                                f"undid an interrupted commit of {', '.join(map(str, targets))}: "
                                f"{exc} had files added while it was written; kept them"
                            )
                    else:
                        _roll_back(primary, data)
                        done.append(
                            f"rolled back an interrupted write of {', '.join(map(str, targets))}"
                        )
        except BuildError:
            done.append(
                f"left an interrupted commit of {target} alone: another process holds "
                "one of its outputs"
            )
            if not quiet:
                _note(done[-1])
            return done
    parent = target.parent
    if parent.is_dir():
        prefixes = tuple(f".{target.name}.{tag}-" for tag in _LEFTOVER_TAGS) + (
            f".{target.name}{JOURNAL_SUFFIX}.",
        )
        for p in sorted(parent.iterdir()):
            if not p.name.startswith(prefixes) or _live_spill(target, p.name):
                continue
            if p.name.startswith(f".{target.name}.old-"):
                if not _exists(target) and not p.is_symlink():
                    os.rename(p, target)
                    done.append(
                        f"restored {target} from {p.name} (a replacement that never arrived)"
                    )
                    continue
                if p.is_dir() and not p.is_symlink() and not written_by_us(p):
                    done.append(
                        f"kept {p}: an old version of {target} holding files mbdefense did "
                        "not write; move them out and delete it yourself"
                    )
                    continue
            try:
                _remove(p)
            except OSError as exc:
                done.append(f"could not remove {p} left by an interrupted run ({exc.strerror})")
                continue
            done.append(f"removed {p} left by an interrupted run")
    if not quiet:
        for line in done:
            _note(line)
    return done


def _has_leftovers(target: Path) -> bool:
    if _exists(journal_path(target)):
        return True
    prefixes = tuple(f".{target.name}.{tag}-" for tag in _LEFTOVER_TAGS)
    try:
        return any(p.name.startswith(prefixes) for p in target.parent.iterdir())
    except OSError:
        return False


def repair_if_free(target: str | Path) -> None:
    """Before looking at ``target`` (an early output check, ``open_build``): repair what an
    interrupted run left there, when no other process is writing it (else leave it to that
    writer, which holds the lock and repairs it itself)."""
    target = Path(target).absolute()
    if not _has_leftovers(target):
        return
    try:
        with output_lock([target], timeout=0):
            recover(target)
    except (BuildError, OSError):
        pass


# --------------------------------------------------------------------------- commit


@dataclasses.dataclass(frozen=True)
class Output:
    """One destination of :func:`commit_outputs`: ``fill(tmp)`` writes the file or folder."""

    path: str | Path
    fill: Callable[[Path], Any]
    is_dir: bool = False
    kind: str = "output"


def commit_outputs(outputs: Sequence[Output], overwrite: bool = False) -> list[Any]:
    """Write ``outputs`` so that they all appear together or not at all (see the module doc);
    returns the fill functions' results."""
    paths = [output_path(o.path) for o in outputs]
    if len(set(paths)) != len(paths):
        raise BuildError(
            "two outputs of one command name the same path: "
            + ", ".join(sorted({str(p) for p in paths if paths.count(p) > 1}))
        )
    with _user_errors(paths[0]):
        for p in paths:
            p.parent.mkdir(parents=True, exist_ok=True)
        with output_lock(paths):
            return _commit_locked(outputs, paths, overwrite)


def _check(output: Output, path: Path, overwrite: bool) -> None:
    if output.is_dir:
        _check_dir(path, overwrite, output.kind)
    else:
        _check_file(path, overwrite)


def _commit_locked(outputs: Sequence[Output], paths: list[Path], overwrite: bool) -> list[Any]:
    for p in paths:
        recover(p)
    _fault("locked")
    for o, p in zip(outputs, paths):
        _check(o, p, overwrite)
    if len(outputs) == 1 and not outputs[0].is_dir:
        return [_commit_one_file(outputs[0], paths[0], overwrite)]
    entries: list[dict[str, Any]] = [
        {
            "target": str(p),
            "partial": str(temp_sibling(p, "partial")),
            "old": str(temp_sibling(p, "old")),
            "dir": o.is_dir,
        }
        for o, p in zip(outputs, paths)
    ]
    primary = journal_path(paths[0])
    data = {"mbdefense_journal": 1, "pid": os.getpid(), "state": "filling", "entries": entries}
    results = []
    try:
        _write_json(primary, data)
        _fault("journal-filling")
        for p in paths[1:]:
            _write_json(journal_path(p), {"mbdefense_journal": 1, "primary": str(primary)})
            _fault("pointer")
        for o, entry in zip(outputs, entries):
            tmp = Path(entry["partial"])
            if o.is_dir:
                tmp.mkdir()
            results.append(o.fill(tmp))
            if o.is_dir:
                mark_dir(tmp, o.kind, sorted(p.name for p in tmp.iterdir() if p.name != MARKER))
            elif not tmp.is_file():
                raise BuildError(f"{o.path}: nothing was written")
            _fault("filled")
        # Check again now that the outputs are written: a folder created or a file added to the
        # old output while this run was filling must not be replaced (nor deleted).
        for o, p in zip(outputs, paths):
            _check(o, p, overwrite)
    except BaseException:
        _roll_back(primary, data)
        raise
    with _signals_deferred():
        try:
            _fault("committing")
            _write_json(primary, {**data, "state": "commit"})
        except BaseException:  # e.g. a full disk: the journal still says "filling"
            _roll_back(primary, data)
            raise
        _fault("journal-commit")
        try:
            notes = _roll_forward(primary, data)
        except _Conflict as exc:
            raise BuildError(
                f"{exc}: files were added to it while mbdefense was writing the new version; "
                "kept it as it was and discarded the new output (move your files out, or "
                "choose another output path)"
            ) from None
    for line in notes:
        _note(line)
    return results


def _commit_one_file(output: Output, path: Path, overwrite: bool) -> Any:
    """One file needs no journal: ``os.replace`` is atomic, and a partial left by a kill is
    removed by the next run's :func:`recover`."""
    tmp = temp_sibling(path, "partial")
    try:
        result = output.fill(tmp)
        if not tmp.is_file():
            raise BuildError(f"{output.path}: nothing was written")
        _fault("filled")
        _check_file(path, overwrite)  # again: the path may have been created meanwhile
        os.replace(tmp, path)
        _fault("moved-new")
    finally:
        tmp.unlink(missing_ok=True)
    return result


def atomic_dir(
    out_dir: str | Path, fill: Callable[[Path], Any], overwrite: bool = False, kind: str = "output"
) -> Any:
    """Create ``out_dir`` atomically: ``fill(tmp)`` writes into a hidden temp folder that is then
    renamed into place. On any failure or interrupt the temp folder is removed and an existing
    ``out_dir`` is left as it was."""
    return commit_outputs([Output(out_dir, fill, is_dir=True, kind=kind)], overwrite=overwrite)[0]


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Any:
    """Write one file atomically: ``write(tmp_path)`` fills a temporary sibling, then it replaces
    ``path`` (an existing file is replaced only once the new one is complete)."""
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(writes: list[tuple[str | Path, Callable[[Path], Any]]]) -> list[Any]:
    """Write several files that belong together (replacing existing ones): all appear together or
    not at all. Returns the writers' results."""
    return commit_outputs([Output(path, write) for path, write in writes], overwrite=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
