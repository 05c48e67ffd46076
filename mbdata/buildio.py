"""Opening a finished build: tables, polars frames, ``datasets`` objects, and verification."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import InputError
from .manifest import content_hash
from .schema import SCHEMA, empty_table
from .shards import sha256_file


@dataclass(frozen=True)
class Build:
    """A build folder written by :func:`mbdata.build` (or any :func:`mbdata.shards.write_build`)."""

    path: Path

    @cached_property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))

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
        tables = []
        for path in self.shard_paths(split):
            with pa.memory_map(str(path)) as source:
                tables.append(pa.ipc.open_file(source).read_all())
        return pa.concat_tables(tables).cast(SCHEMA)

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
            raise InputError(f"{self.path}: no side table {name!r}; present: "
                             + (", ".join(sides) or "none"))
        with pa.memory_map(str(self.path / sides[name]["path"])) as source:
            return pa.ipc.open_file(source).read_all()


def open_build(path: str | Path) -> Build:
    """Open a build folder; fails with a one-line error if it is not a complete build."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: not a build folder (not found or not a folder)")
    if not (path / "manifest.json").is_file():
        raise InputError(f"{path}: no manifest.json: not a complete build")
    try:
        json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}/manifest.json: unreadable: {exc}") from None
    return Build(path)


def verify_build(path: str | Path) -> list[str]:
    """Re-hash every shard and side table; return the mismatches (empty list: all good)."""
    build = open_build(path)
    manifest = build.manifest
    problems = []
    if manifest.get("content_hash") != content_hash(manifest):
        problems.append("manifest.json: content_hash does not match the manifest's content")
    listed = set()
    records = [s for split in manifest.get("splits", {}).values() for s in split["shards"]]
    records += list(manifest.get("side_tables", {}).values())
    for record in records:
        rel = record["path"]
        listed.add(rel)
        p = build.path / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        if p.stat().st_size != record["bytes"]:
            problems.append(f"{rel}: size {p.stat().st_size} != {record['bytes']} in the manifest")
        digest = sha256_file(p)
        if digest != record["sha256"]:
            problems.append(f"{rel}: sha256 {digest[:12]}... != {record['sha256'][:12]}... in the "
                            "manifest")
            continue
        with pa.memory_map(str(p)) as source:
            rows = pa.ipc.open_file(source).read_all().num_rows
        if rows != record["rows"]:
            problems.append(f"{rel}: {rows} rows != {record['rows']} in the manifest")
    data_dir = build.path / "data"
    if data_dir.is_dir():
        for p in sorted(data_dir.iterdir()):
            rel = p.relative_to(build.path).as_posix()
            if rel not in listed:
                problems.append(f"{rel}: not listed in the manifest")
    return problems
