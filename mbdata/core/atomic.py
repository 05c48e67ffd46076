"""Atomic outputs: a file, a folder, or a set of them appears complete or not at all.

Every output mbdefense writes (build folders, exports, audit reports plus their ``--clean-out``
corpus, model folders, evaluation files, reports) goes through :func:`commit_outputs`:

1. **Lock.** An advisory ``fcntl`` lock on each destination (``.NAME.mbdefense-lock`` beside it),
   taken in sorted order. The kernel drops the lock when its process dies, so a lock file left by a
   killed run is stale by construction and simply taken over. A second process waits (up to
   ``MBDEFENSE_LOCK_TIMEOUT`` seconds, default 120) and then fails with a one-line error.
2. **Recover.** Under the lock, leftovers of an earlier killed run (``.NAME.partial-*``,
   ``.NAME.old-*``, ``.NAME.tmp-*``, a journal) are finished from the journal or removed, and each is
   reported on stderr.
3. **Check.** The existence / ownership check happens under the lock, so a slow first writer cannot
   be replaced by a second one that started without ``--overwrite``.
4. **Fill.** Every output is written into a hidden sibling (same folder, so renames are atomic).
5. **Commit.** A journal (``.NAME.mbdefense-journal`` beside the first output; the others get a
   pointer to it) records every rename; it switches from ``filling`` to ``commit`` in one atomic
   rename once every output is complete. Then old outputs are moved aside, new ones moved in, old
   ones deleted, and the journal removed. SIGINT/SIGTERM are held back during the renames; a
   ``kill -9`` at any point is repaired by the next run that touches any of the outputs (or opens
   the build): a ``filling`` journal is rolled back (old state), a ``commit`` journal rolled forward
   (new state). See docs/safety.md.

Ownership: a folder written here carries :data:`MARKER`, a JSON record with a random id and the
list of entries mbdefense wrote into it. ``overwrite`` only replaces an empty folder or one whose
marker is valid and whose contents are exactly what mbdefense wrote (plus nested folders that are
themselves ours); a file name alone (``manifest.json``) proves nothing. Folders that mbdefense keeps
writing into (``mark_dir`` without entries, e.g. training run folders) are "open": their valid
marker is the proof.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
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
_LEFTOVER_TAGS = ("partial", "old", "tmp")
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


# --------------------------------------------------------------------------- ownership


def read_marker(path: Path) -> dict[str, Any] | None:
    """The ownership record of folder ``path``, or None when absent or not a valid record."""
    try:
        record = json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
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
    the entries mbdefense wrote (None: an open folder mbdefense keeps writing into)."""
    record = {"kind": kind, "id": uuid.uuid4().hex, "entries": entries}
    (Path(path) / MARKER).write_text(json.dumps(record, sort_keys=True) + "\n", encoding="utf-8")


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into an existing folder unless ``overwrite`` (checked before any work, and
    again under the lock), and refuse to overwrite anything mbdefense did not write."""
    out_dir = Path(out_dir)
    repair_if_free(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_symlink() or not out_dir.is_dir():
        raise BuildError(f"{out_dir}: exists and is not a folder")
    if not overwrite:
        raise BuildError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if not written_by_us(out_dir):
        raise BuildError(
            f"{out_dir}: refusing to overwrite a non-empty folder that mbdefense did "
            "not write (no valid .mbdefense record, or files mbdefense did not write "
            "in it); choose another output path"
        )


def check_output_file(path: Path, overwrite: bool) -> None:
    """The file counterpart of :func:`check_output_dir`."""
    path = Path(path)
    repair_if_free(path)
    if path.is_dir():
        raise BuildError(f"{path}: is a folder, expected a file path")
    if path.exists() and not overwrite:
        raise BuildError(f"{path}: already exists; pass --overwrite to replace it")


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
        fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
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
            same = os.fstat(fd).st_ino == os.stat(key).st_ino
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
    keys = sorted({(str(lock_path(t)), Path(t)) for t in targets}, key=lambda k: k[0])
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
    tmp = path.with_name(path.name + f".{os.getpid()}.new")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


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
        and partial.parent == target.parent == old.parent
        and partial.name.startswith(f".{target.name}.partial-")
        and old.name.startswith(f".{target.name}.old-")
    )


def _load_journal(target: Path) -> tuple[Path, dict] | None:
    """The journal governing ``target`` (its own, or the primary one its pointer names)."""
    path = journal_path(target)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "primary" in data:
            primary = Path(data["primary"])
            if not primary.name.endswith(JOURNAL_SUFFIX):
                raise ValueError("bad pointer")
            path, data = primary, json.loads(primary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        _note(f"removed an unreadable commit journal {path}")
        journal_path(target).unlink(missing_ok=True)
        return None
    entries = data.get("entries") if isinstance(data, dict) else None
    if (
        not isinstance(entries, list)
        or not entries
        or not all(map(_valid_entry, entries))
        or data.get("state") not in ("filling", "commit")
    ):
        _note(f"removed an invalid commit journal {path}")
        path.unlink(missing_ok=True)
        journal_path(target).unlink(missing_ok=True)
        return None
    return path, data


def _journal_files(primary: Path, data: dict) -> list[Path]:
    others = [journal_path(e["target"]) for e in data["entries"]]
    return [p for p in others if p != primary] + [primary]


def _roll_forward(primary: Path, data: dict) -> None:
    """Move every complete new output into place (old ones aside, then deleted)."""
    for entry in data["entries"]:
        target, partial, old = Path(entry["target"]), Path(entry["partial"]), Path(entry["old"])
        if not (partial.exists() or partial.is_symlink()):
            continue  # already moved in
        if entry["dir"]:
            if target.exists() or target.is_symlink():
                os.rename(target, old)
                _fault("moved-old")
            os.rename(partial, target)
        else:
            os.replace(partial, target)
        _fault("moved-new")
    for entry in data["entries"]:
        old = Path(entry["old"])
        if old.exists() or old.is_symlink():
            _remove(old)
            _fault("removed-old")
    for path in _journal_files(primary, data):
        path.unlink(missing_ok=True)
        _fault("removed-journal")


def _roll_back(primary: Path, data: dict) -> None:
    """Remove every new output that was being written; old outputs were never touched."""
    for entry in data["entries"]:
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
                if primary.exists():
                    if data["state"] == "commit":
                        _roll_forward(primary, data)
                        done.append(
                            f"completed an interrupted commit of {', '.join(map(str, targets))}"
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
            if not p.name.startswith(prefixes):
                continue
            if p.name.startswith(f".{target.name}.old-") and not (
                target.exists() or target.is_symlink()
            ):
                os.rename(p, target)
                done.append(f"restored {target} from {p.name} (a replacement that never arrived)")
                continue
            _remove(p)
            done.append(f"removed {p} left by an interrupted run")
    if not quiet:
        for line in done:
            _note(line)
    return done


def _has_leftovers(target: Path) -> bool:
    if journal_path(target).exists():
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
    paths = [Path(o.path).absolute() for o in outputs]
    if len(set(paths)) != len(paths):
        raise BuildError(
            "two outputs of one command name the same path: "
            + ", ".join(sorted({str(p) for p in paths if paths.count(p) > 1}))
        )
    for p in paths:
        p.parent.mkdir(parents=True, exist_ok=True)
    with output_lock(paths):
        for p in paths:
            recover(p)
        _fault("locked")
        for o, p in zip(outputs, paths):
            (check_output_dir if o.is_dir else check_output_file)(p, overwrite)
        if len(outputs) == 1 and not outputs[0].is_dir:
            return [_commit_one_file(outputs[0], paths[0])]
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
        except BaseException:
            _roll_back(primary, data)
            raise
        with _signals_deferred():
            _write_json(primary, {**data, "state": "commit"})
            _fault("journal-commit")
            _roll_forward(primary, data)
    return results


def _commit_one_file(output: Output, path: Path) -> Any:
    """One file needs no journal: ``os.replace`` is atomic, and a partial left by a kill is
    removed by the next run's :func:`recover`."""
    tmp = temp_sibling(path, "partial")
    try:
        result = output.fill(tmp)
        if not tmp.is_file():
            raise BuildError(f"{output.path}: nothing was written")
        _fault("filled")
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
