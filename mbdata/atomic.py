"""Atomic outputs: a file or a folder appears complete or not at all.

Every output mbdefense writes (build folders, exports, audit reports, model folders, evaluation
files, reports) goes through these helpers: write to a hidden temporary sibling, then rename into
place. A folder written by :func:`atomic_dir` carries a :data:`MARKER` file, and ``overwrite`` only
ever replaces an empty folder or one mbdefense wrote (marker or ``manifest.json``), never an
arbitrary directory such as ``.`` or ``~/Documents``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from .errors import BuildError

MARKER = ".mbdefense"


def temp_sibling(path: Path, tag: str) -> Path:
    """A hidden, unique sibling of ``path`` (same folder, so the final rename is atomic)."""
    return path.parent / f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def written_by_us(path: Path) -> bool:
    """Whether ``path`` is an empty folder or one that mbdefense wrote."""
    return path.is_dir() and (not any(path.iterdir()) or (path / MARKER).exists()
                              or (path / "manifest.json").is_file())


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into an existing folder unless ``overwrite`` (checked before any work), and
    refuse to overwrite anything mbdefense did not write."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BuildError(f"{out_dir}: exists and is not a folder")
    if not overwrite:
        raise BuildError(f"{out_dir}: already exists; pass --overwrite to replace it")
    if not written_by_us(out_dir):
        raise BuildError(f"{out_dir}: refusing to overwrite a non-empty folder that mbdefense did "
                         "not write; choose another output path")


def remove_output_dir(out_dir: Path) -> None:
    """Delete an output folder for ``--overwrite`` (only one that :func:`written_by_us`)."""
    check_output_dir(out_dir, overwrite=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)


def mark_dir(path: Path, kind: str) -> None:
    (Path(path) / MARKER).write_text(kind + "\n", encoding="utf-8")


def atomic_dir(out_dir: str | Path, fill: Callable[[Path], Any], overwrite: bool = False,
               kind: str = "output") -> Any:
    """Create ``out_dir`` atomically: ``fill(tmp)`` writes into a hidden temp folder that is then
    renamed into place. On any failure or interrupt the temp folder is removed and an existing
    ``out_dir`` is left as it was."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(out_dir, "partial")
    tmp.mkdir()
    old = None
    try:
        result = fill(tmp)
        mark_dir(tmp, kind)
        if out_dir.exists():
            old = temp_sibling(out_dir, "old")
            out_dir.rename(old)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not out_dir.exists():
            old.rename(out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return result


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Any:
    """Write one file atomically: ``write(tmp_path)`` fills a temporary sibling, then it replaces
    ``path`` (an existing file is replaced only once the new one is complete)."""
    return atomic_write_all([(path, write)])[0]


def atomic_write_all(writes: list[tuple[str | Path, Callable[[Path], Any]]]) -> list[Any]:
    """Write several files that belong together: every ``write(tmp_path)`` fills its temporary
    sibling first, and the renames happen only once all are complete, so an interrupted run never
    leaves one file of a new set beside another of an old one. Returns the writers' results."""
    temps = []
    for path, _ in writes:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temps.append((temp_sibling(path, "tmp"), path))
    try:
        results = [write(tmp) for (tmp, _), (_, write) in zip(temps, writes)]
        for tmp, path in temps:
            os.replace(tmp, path)
        return results
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
