"""Reading a build folder: the only way training data enters :mod:`mbtrain`.

A build folder (see the data contract) holds ``manifest.json`` and Arrow IPC shards
``data/{split}-{i:05d}-of-{n:05d}.arrow`` in the canonical schema. mbtrain reads the shards with
pyarrow and its settings from ``manifest["recipe"]["train"]``; it never sees a recipe file, so a
training run is fully described by the build it was given.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from mbdata.config import from_mapping
from mbdata.errors import InputError
from mbdata.schema import SCHEMA

from .config import TrainConfig

_SHARD = re.compile(r"(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.arrow")


@dataclasses.dataclass
class Build:
    """An opened build folder: its manifest and lazily read splits."""

    path: Path
    manifest: dict[str, Any]
    _cache: dict[str, pa.Table] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def splits(self) -> list[str]:
        return sorted(self._shards())

    def _shards(self) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        listed = self.manifest.get("splits")
        if isinstance(listed, dict) and listed:
            for split, info in listed.items():
                found[split] = [self._locate(s["path"]) for s in info.get("shards", [])]
            return found
        for file in sorted((self.path / "data").glob("*.arrow")):
            m = _SHARD.fullmatch(file.name)
            if m:
                found.setdefault(m["split"], []).append(file)
        return found

    def _locate(self, shard: str) -> Path:
        """Shard paths in the manifest are relative to the build folder (``data/...``); a bare
        file name is looked up under ``data/``."""
        direct = self.path / shard
        return direct if direct.exists() or "/" in shard else self.path / "data" / shard

    def has(self, split: str) -> bool:
        return split in self._shards()

    def table(self, split: str) -> pa.Table:
        """The split as one canonical table; a missing split is an :class:`InputError`."""
        if split not in self._cache:
            shards = self._shards()
            if split not in shards:
                raise InputError(f"{self.path}: build has no split {split!r} (has: "
                                 f"{', '.join(sorted(shards)) or 'none'})")
            tables = []
            for file in shards[split]:
                if not file.exists():
                    raise InputError(f"{file}: shard listed in the manifest is missing")
                try:
                    with ipc.open_file(file) as reader:
                        tables.append(reader.read_all())
                except pa.ArrowInvalid as exc:
                    raise InputError(f"{file}: not an Arrow IPC file ({exc})") from None
            table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
            missing = [c for c in ("instruction", "input", "output", "role") if
                       c not in table.column_names]
            if missing:
                raise InputError(f"{shards[split][0]}: shard lacks column {missing[0]!r}")
            self._cache[split] = table
        return self._cache[split]

    def rows(self, split: str) -> list[dict[str, Any]]:
        return self.table(split).to_pylist()

    @property
    def fingerprint(self) -> str | None:
        return self.manifest.get("fingerprint")

    @property
    def triggers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("triggers") or [])

    def train_config(self) -> TrainConfig:
        """The recipe's ``train:`` block (defaults when the recipe has none)."""
        raw = (self.manifest.get("recipe") or {}).get("train")
        try:
            return from_mapping(TrainConfig, raw, "train")
        except Exception as exc:  # a RecipeError naming the key; say which manifest it was
            raise InputError(f"{self.path / 'manifest.json'}: {exc}") from None


def open_build(path: str | Path) -> Build:
    """Open a build folder written by ``mb build`` (or any folder with the same layout)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{path}: not a build folder (no manifest.json)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{manifest_path}: invalid JSON (line {exc.lineno})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{manifest_path}: expected a JSON object")
    return Build(path=path, manifest=manifest)
