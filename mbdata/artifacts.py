"""The typed values build stages hand to each other (see :mod:`mbdata.pipeline`).

Each is a small frozen dataclass: a stage that changes one publishes a new value with
:meth:`BuildContext.put`, so what a stage read can never change under it. Who writes and who reads:

=====================  ===========================  =========================================
artifact               written by                   read by
=====================  ===========================  =========================================
:class:`PoisonedRows`  attacks, defense             attacks, defense (rows still free)
:class:`TriggerSets`   attacks, defense             defense, eval, pretrain_noise, manifest
:class:`DefenseSets`   defense                      recovery
:class:`SkippedRows`   sources                      manifest, ``skipped.jsonl``
=====================  ===========================  =========================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, SupportsInt

import numpy as np

if TYPE_CHECKING:
    from .stages.attacks import TriggerSet


@dataclasses.dataclass(frozen=True, eq=False)
class PoisonedRows:
    """Train positions already replaced by an attack or the defence (never replaced twice), and
    ``train_rows``, the train size N that every rate refers to (fixed by the first stage that
    poisons). ``positions`` is a read-only, ascending int64 array (8 bytes a poisoned row; a set
    of Python ints cost about 60, for up to a tenth of the corpus)."""

    train_rows: int
    positions: np.ndarray = dataclasses.field(default_factory=lambda: _frozen(np.zeros(0)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", _frozen(self.positions))

    def plus(self, chosen: Iterable[SupportsInt] | np.ndarray) -> PoisonedRows:
        """These rows plus ``chosen`` (positions)."""
        return dataclasses.replace(self, positions=np.union1d(self.positions, _frozen(chosen)))


def _frozen(positions: Iterable[SupportsInt] | np.ndarray) -> np.ndarray:
    """``positions`` as an ascending, duplicate-free, read-only int64 array."""
    if not isinstance(positions, np.ndarray):
        positions = np.fromiter((int(p) for p in positions), dtype=np.int64)
    out = np.unique(positions.astype(np.int64))
    out.flags.writeable = False
    return out


@dataclasses.dataclass(frozen=True)
class TriggerSets:
    """Every trigger set planted so far, in planting order, with the train rows each replaced."""

    sets: tuple[TriggerSet, ...] = ()
    rows: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def plus(self, trigger_set: TriggerSet, rows: int) -> TriggerSets:
        return TriggerSets(self.sets + (trigger_set,), {**self.rows, trigger_set.name: rows})

    def manifest_records(self) -> list[dict]:
        return [ts.manifest_record(self.rows.get(ts.name)) for ts in self.sets]


@dataclasses.dataclass(frozen=True)
class DefenseSets:
    """The defender's trigger sets, in order (stage 2's tuples are built from them)."""

    sets: tuple[TriggerSet, ...]


@dataclasses.dataclass(frozen=True)
class SkippedRows:
    """Input rows ``--skip-bad-rows`` left out, one JSON record each (source, row, reason), in
    reading order."""

    records: tuple[dict, ...] = ()
