"""Reading a build folder: the only way training data enters :mod:`mbtrain`.

Opening and reading the shards is :func:`mbdata.open_build`'s job (:class:`mbdata.Build`, lenient:
a split the build lacks reads as an empty table). :class:`TrainingBuild` adds only what training
needs on top of it: a missing split or shard is a one-line error (training on an empty split would
silently train on nothing), rows as dicts (cached, since the pipeline reads a split several times), the
manifest's triggers and fingerprint, and the settings from ``manifest["recipe"]["train"]``.
mbtrain never sees a recipe file, so a training run is fully described by the build it was given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa

from mbdata.core.config import from_mapping
from mbdata.core.errors import InputError, MBError
from mbdata.io import buildio
from mbtrain.config import TrainConfig


@dataclasses.dataclass
class TrainingBuild:
    """A build folder opened for training: an :class:`mbdata.Build` whose missing split is an
    error, with cached splits and the recipe's ``train:`` settings."""

    data: buildio.Build
    _cache: dict[str, pa.Table] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return self.data.path

    @property
    def manifest(self) -> dict[str, Any]:
        return self.data.manifest

    @property
    def splits(self) -> list[str]:
        return sorted(self.data.splits)

    def has(self, split: str) -> bool:
        return split in self.data.splits

    def table(self, split: str) -> pa.Table:
        """The split as one canonical table; a missing split or shard is an
        :class:`InputError`."""
        if split not in self._cache:
            if not self.has(split):
                raise InputError(
                    f"{self.path}: build has no split {split!r} (has: "
                    f"{', '.join(self.splits) or 'none'})"
                )
            for file in self.data.shard_paths(split):
                if not file.is_file():
                    raise InputError(f"{file}: shard listed in the manifest is missing")
            try:
                self._cache[split] = self.data.table(split)
            except (pa.ArrowInvalid, ValueError, KeyError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise InputError(
                    f"{self.path}: split {split!r} is not a readable canonical "
                    f"Arrow table ({first})"
                ) from None
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
        except MBError as exc:  # a RecipeError naming the key; say which manifest it was
            raise InputError(f"{self.path / 'manifest.json'}: {exc}") from None


def open_training_build(path: str | Path) -> TrainingBuild:
    """Open a build folder written by ``mb build`` for training (strict; see
    :func:`mbdata.open_build` for the lenient reader)."""
    data = buildio.open_build(path)
    if not isinstance(data.manifest, dict) or not isinstance(data.manifest.get("splits"), dict):
        raise InputError(f"{data.path / 'manifest.json'}: expected a JSON object with `splits`")
    return TrainingBuild(data)
