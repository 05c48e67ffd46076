"""The build manifest: what was built, from what, with which code, and how to check it.

``manifest.json`` holds the resolved recipe and its fingerprint, the seed, tool and library
versions, sha256 and size of every input file, per-stage statistics, the triggers in play, and
per-shard sha256/row counts. ``content_hash`` is the sha256 of the canonical JSON of everything
except the volatile keys (:data:`VOLATILE`: the wall-clock ``created_at``), so two builds of the
same recipe, inputs and seed have the same ``content_hash`` (and byte-identical shards). Set
``SOURCE_DATE_EPOCH`` to fix ``created_at`` too, for a byte-identical manifest file. Stage timings
live in ``timings.json`` beside it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from ..core.config import canonical_json
from .inputfile import FileState, check_unchanged, open_regular

# 1.1: shards are written from fresh buffers, their bytes a function of their rows alone (the
# corpus is spilled, issue 28); the rows, the schema and every field are those of 1.0, and 1.0
# builds read as before.
MANIFEST_VERSION = "1.1"
VOLATILE = ("content_hash", "created_at")
_LIBRARIES = (
    "mbdefense",
    "pyarrow",
    "polars",
    "numpy",
    "xxhash",
    "datasets",
    "datasketch",
    "pyyaml",
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks (shards, side tables, inputs)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# Every name a manifest gives that ends up in a path (a split name becomes ``{split}.jsonl`` in an
# export, a side table ``NAME.arrow``, a shard path a file of the build) must match one of these,
# checked when a manifest is read (:func:`mbdata.io.buildio.check_manifest`) and when one is written
# (:func:`mbdata.io.shards.write_build`): a forged build naming ``../../x`` or ``/home/you/x`` is
# refused, never written to. One part: a letter or digit, then letters, digits, ``_ . -``.
NAME_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
SPLIT_NAME = re.compile(NAME_PART)
SIDE_TABLE_NAME = re.compile(rf"{NAME_PART}(?:/{NAME_PART}){{0,3}}")
FILE_PATH = re.compile(rf"{NAME_PART}(?:/{NAME_PART}){{0,3}}")


def bad_name(pattern: re.Pattern[str], value: object) -> bool:
    """Whether ``value`` is not a string matching ``pattern`` in full (``..`` never does)."""
    return (
        not isinstance(value, str)
        or not pattern.fullmatch(value)
        or any(part in ("", ".", "..") for part in value.split("/"))
    )


def content_hash(manifest: dict[str, Any]) -> str:
    stable = {k: v for k, v in manifest.items() if k not in VOLATILE}
    return hashlib.sha256(canonical_json(stable).encode("utf-8")).hexdigest()


def finalize_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Add ``content_hash`` (and ``created_at`` if missing) to a finished manifest."""
    out = dict(manifest)
    out.setdefault("created_at", created_at())
    out["content_hash"] = content_hash(out)
    return out


def created_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = _dt.datetime.fromtimestamp(int(epoch), _dt.UTC) if epoch else _dt.datetime.now(_dt.UTC)
    return moment.replace(microsecond=0).isoformat()


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def input_record(path: Path, shown_as: str, state: FileState | None = None) -> dict[str, Any]:
    """sha256 and size of an input file, or of every file of an input folder (sorted).

    ``state`` is the file's state when it was read (``ReadResult.state``): the file is hashed
    after the read and must still be in that state when hashing starts and ends, so the sha256
    is of the bytes that were read (a file rewritten meanwhile is a one-line error)."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        h = hashlib.sha256()
        size = 0
        for p in files:
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + sha256_file(p).encode())
            size += p.stat().st_size
        return {"path": shown_as, "sha256": h.hexdigest(), "bytes": size, "files": len(files)}
    check_unchanged(path, state)
    with open_regular(path) as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
        size = os.fstat(fh.fileno()).st_size
    check_unchanged(path, state, "hashed after it was read")
    return {"path": shown_as, "sha256": digest, "bytes": size}
