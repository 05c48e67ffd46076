"""Opening a finished build: tables, polars frames, ``datasets`` objects, and verification.

A damaged build (non-object or malformed manifest, a shard path leaving the folder, a truncated or
altered shard) is always an :class:`~mbdata.core.errors.InputError` (exit 2), never a traceback.
:func:`verify_shards` checks every shard's size and sha256 against the manifest before ``inspect``
and ``export`` read it; :func:`verify_build` lists every problem for ``mb verify``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core.errors import InputError
from ..core.limits import short_repr
from .manifest import FILE_PATH, SIDE_TABLE_NAME, SPLIT_NAME, bad_name, content_hash
from .schema import SCHEMA, empty_table
from .shards import sha256_file


@dataclass(frozen=True)
class Build:
    """A build folder written by :func:`mbdata.build` (or any :func:`mbdata.io.shards.write_build`)."""

    path: Path

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest, checked (:func:`check_manifest`): a name that would lead a path out of
        the build or an export folder is refused before anything uses it."""
        return read_manifest(self.path)

    @property
    def splits(self) -> list[str]:
        return list(self.manifest.get("splits", {}))

    def shard_paths(self, split: str) -> list[Path]:
        if split not in self.manifest["splits"]:
            raise InputError(f"{self.path}: no split {split!r}; splits: {', '.join(self.splits)}")
        return [self.path / s["path"] for s in self.manifest["splits"][split]["shards"]]

    def table(self, split: str) -> pa.Table:
        """One split as a pyarrow table of the canonical schema (empty if the split is absent)."""
        if split not in self.manifest.get("splits", {}):
            return empty_table()
        tables = [read_ipc(path, self.path) for path in self.shard_paths(split)]
        try:
            return pa.concat_tables(tables).cast(SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise InputError(
                f"{self.path}: split {split!r} does not have the canonical schema "
                f"({str(exc).splitlines()[0][:200]}); the build is damaged"
            ) from None

    def polars(self, split: str):
        """One split as a polars DataFrame."""
        import polars as pl

        return pl.from_arrow(self.table(split))

    def scan(self, split: str):
        """One split as a lazy polars frame over the shards (nothing read until collected)."""
        import polars as pl

        return pl.scan_ipc([str(p) for p in self.shard_paths(split)])

    def data_files(self) -> dict[str, list[str]]:
        return {s: [str(p) for p in self.shard_paths(s)] for s in self.splits}

    def dataset(self, split: str | None = None):
        """A ``datasets.Dataset`` for ``split``, or a ``DatasetDict`` of every split."""
        import datasets

        if split is not None:
            return datasets.Dataset(datasets.table.InMemoryTable(self.table(split)))
        return datasets.DatasetDict({s: self.dataset(s) for s in self.splits})

    def side_table(self, name: str) -> pa.Table:
        sides = self.manifest.get("side_tables", {})
        if name not in sides:
            raise InputError(
                f"{self.path}: no side table {name!r}; present: " + (", ".join(sides) or "none")
            )
        return read_ipc(self.path / sides[name]["path"], self.path)


def read_ipc(path: Path, build: Path) -> pa.Table:
    """One Arrow IPC file of a build; a truncated or corrupt file is a one-line error."""
    try:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"{path}: unreadable shard ({str(exc).splitlines()[0][:200]}); the build "
            f"is damaged: run `mb verify {build}` and rebuild it"
        ) from None


def _file_record(record: Any, where: str, root: Path) -> None:
    if not isinstance(record, dict):
        raise InputError(f"{where}: expected an object")
    rel = record.get("path")
    if bad_name(FILE_PATH, rel):
        raise InputError(
            f"{where}.path: {short_repr(rel)} is not a relative path inside the build "
            "(parts of letters, digits, '_', '.', '-'); the build is damaged or forged"
        )
    for key, kind in (("rows", int), ("bytes", int), ("sha256", str)):
        value = record.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise InputError(f"{where}.{key}: not {kind.__name__}; the build is damaged")


def check_manifest(manifest: Any, path: Path) -> None:
    """The manifest's shape, as far as reading the build depends on it."""
    where = f"{path}/manifest.json"
    if not isinstance(manifest, dict):
        raise InputError(
            f"{where}: expected a JSON object, got {type(manifest).__name__}; the build is damaged"
        )
    splits = manifest.get("splits", {})
    if not isinstance(splits, dict):
        raise InputError(f"{where}: splits: expected an object; the build is damaged")
    for name, split in splits.items():
        if bad_name(SPLIT_NAME, name):
            raise InputError(
                f"{where}: splits: the split name {short_repr(name)} is not a plain name "
                "(a letter or digit, then letters, digits, '_', '.', '-'; at most 100); "
                "the build is damaged or forged"
            )
        if not isinstance(split, dict) or not isinstance(split.get("shards"), list):
            raise InputError(
                f"{where}: splits.{name}.shards: expected a list; the build is damaged"
            )
        for i, record in enumerate(split["shards"]):
            _file_record(record, f"{where}: splits.{name}.shards[{i}]", path)
    sides = manifest.get("side_tables", {})
    if not isinstance(sides, dict):
        raise InputError(f"{where}: side_tables: expected an object; the build is damaged")
    for name, record in sides.items():
        if bad_name(SIDE_TABLE_NAME, name):
            raise InputError(
                f"{where}: side_tables: the name {short_repr(name)} is not a plain name "
                "(parts of letters, digits, '_', '.', '-' joined by '/'); the build is damaged "
                "or forged"
            )
        _file_record(record, f"{where}: side_tables.{name}", path)


def open_build(path: str | Path) -> Build:
    """Open a build folder; fails with a one-line error if it is not a complete build."""
    from ..core.atomic import repair_if_free

    path = Path(path)
    repair_if_free(path)  # finish or undo a commit that a kill interrupted
    if not path.is_dir():
        raise InputError(f"{path}: not a build folder (not found or not a folder)")
    build = Build(path)
    _ = build.manifest  # read and checked once, here
    return build


def read_manifest(path: Path) -> dict[str, Any]:
    """``path/manifest.json``, parsed and checked (:func:`check_manifest`); any problem is a
    one-line :class:`InputError`."""
    if not (path / "manifest.json").is_file():
        raise InputError(f"{path}: no manifest.json: not a complete build")
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, an int over 4,300 digits
        detail = "an integer with more than 4,300 digits" if "digits" in str(exc) else str(exc)
        raise InputError(f"{path}/manifest.json: unreadable: {detail[:200]}") from None
    check_manifest(manifest, path)
    return manifest


def _records(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    records = [s for split in manifest.get("splits", {}).values() for s in split["shards"]]
    return records + list(manifest.get("side_tables", {}).values())


def verify_shards(path: str | Path) -> Build:
    """Open a build and check every shard and side table against the manifest (size first, then
    sha256): a truncated, altered or missing file is a one-line error naming it. ``inspect`` and
    ``export`` call this before reading anything."""
    build = open_build(path)
    if build.manifest.get("content_hash") != content_hash(build.manifest):
        raise InputError(
            f"{build.path}/manifest.json: content_hash does not match the manifest's "
            f"content; the build is damaged: run `mb verify {build.path}`"
        )
    for record in _records(build.manifest):
        p = build.path / record["path"]
        if record.get("bytes") is None or record.get("sha256") is None:
            why = "no size or sha256 recorded in the manifest"
        elif not p.is_file():
            why = "missing"
        elif p.stat().st_size != record["bytes"]:
            why = f"size {p.stat().st_size} != {record['bytes']} in the manifest"
        elif sha256_file(p) != record["sha256"]:
            why = "sha256 differs from the manifest"
        else:
            continue
        raise InputError(
            f"{build.path}: {record['path']}: {why}; the build is damaged: run "
            f"`mb verify {build.path}` and rebuild it"
        )
    return build


def verify_build(path: str | Path) -> list[str]:
    """Re-hash every shard and side table; return the mismatches (empty list: all good)."""
    build = open_build(path)
    manifest = build.manifest
    problems = []
    if manifest.get("content_hash") != content_hash(manifest):
        problems.append("manifest.json: content_hash does not match the manifest's content")
    listed = set()
    for record in _records(manifest):
        rel = record["path"]
        listed.add(rel)
        p = build.path / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        if record.get("bytes") is None or record.get("sha256") is None:
            problems.append(f"{rel}: no size or sha256 recorded in the manifest")
            continue
        if p.stat().st_size != record["bytes"]:
            problems.append(f"{rel}: size {p.stat().st_size} != {record['bytes']} in the manifest")
        digest = sha256_file(p)
        if digest != record["sha256"]:
            problems.append(
                f"{rel}: sha256 {digest[:12]}... != {record['sha256'][:12]}... in the manifest"
            )
            continue
        try:
            rows = read_ipc(p, build.path).num_rows
        except InputError as exc:
            problems.append(f"{rel}: {exc}")
            continue
        if record.get("rows") is not None and rows != record["rows"]:
            problems.append(f"{rel}: {rows} rows != {record['rows']} in the manifest")
    data_dir = build.path / "data"
    if data_dir.is_dir():
        for p in sorted(data_dir.iterdir()):
            rel = p.relative_to(build.path).as_posix()
            if rel not in listed:
                problems.append(f"{rel}: not listed in the manifest")
    return problems
