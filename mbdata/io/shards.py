"""Atomic writing of a build folder: Arrow IPC shards, side tables, manifest and dataset card.

Layout::

    DIR/data/{split}-{i:05d}-of-{n:05d}.arrow   Arrow IPC *file* format, canonical schema
    DIR/{side}.arrow                             side tables (e.g. dedup/clusters.arrow)
    DIR/manifest.json                            written last: its presence marks a complete build
    DIR/timings.json                             wall-clock seconds per stage (not reproducible)
    DIR/README.md                                Hugging Face dataset card
    DIR/skipped.jsonl                            rows dropped by --skip-bad-rows (only if any)

Everything is first written to a hidden sibling ``.DIR.partial-*`` and renamed into place, so an
interrupted build (Ctrl-C, kill, full disk) never leaves a folder that looks complete. Rebuilding into
an existing folder needs ``overwrite=True``; the old folder is only removed after the new one is in
place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from ..core.atomic import atomic_dir
from .manifest import sha256_file  # noqa: F401  (re-exported: shards are hashed by it)
from .schema import SCHEMA, SPLITS
from .spill import release

SHARD_PATTERN = "data/{split}-{index:05d}-of-{total:05d}.arrow"


class Rows(Protocol):
    """What the writer needs of one split: its row count and a run of its rows as a table. A
    :class:`pyarrow.Table` is one; :class:`mbdata.io.rows.SplitRows` is another, which takes a
    shard's rows from the build's corpus only when that shard is written (streamed writing)."""

    @property
    def num_rows(self) -> int: ...

    def slice(self, offset: int = 0, length: int | None = None) -> pa.Table: ...


def ordered_splits(names: list[str]) -> list[str]:
    """Known splits in pipeline order, then any others alphabetically (a stable manifest order)."""
    known = [s for s in SPLITS if s in names]
    return known + sorted(set(names) - set(known))


def write_ipc(path: Path, table: pa.Table, schema: pa.Schema | None = None) -> None:
    """Write one Arrow IPC file deterministically (no compression, fixed batch layout), its bytes
    a function of the rows alone: the rows are copied into fresh buffers first (the IPC writer
    sends a sliced buffer's padding from the bytes that follow the slice, which depend on the
    table the slice came from)."""
    schema = schema or table.schema
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        table = fresh(table.cast(schema))
        writer.write_table(table, max_chunksize=max(1, min(table.num_rows, 65_536)))


def fresh(table: pa.Table) -> pa.Table:
    """``table`` as one chunk per column in newly allocated buffers (no slice of another)."""
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64))).combine_chunks()


def write_split_shards(root: Path, split: str, table: Rows, shard_rows: int) -> list[dict]:
    """Write one split as ``ceil(rows / shard_rows)`` shards, one after the other (each shard's
    rows are taken, written and freed before the next); return their manifest records."""
    total = max(1, math.ceil(table.num_rows / shard_rows))
    records = []
    for index in range(total):
        part = table.slice(index * shard_rows, shard_rows)
        rel = SHARD_PATTERN.format(split=split, index=index, total=total)
        path = root / rel
        write_ipc(path, part, SCHEMA)
        rows, part = part.num_rows, None  # freed before the next shard is taken
        release()  # the shard's pages of a spilled corpus (mbdata.io.spill)
        records.append(
            {
                "path": rel,
                "rows": rows,
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
        )
    return records


def write_side_tables(root: Path, tables: dict[str, pa.Table]) -> dict[str, dict]:
    """Each side table as ``NAME.arrow`` under ``root`` (in name order); returns the manifest's
    ``side_tables`` entries (path, rows, sha256, bytes)."""
    sides = {}
    for name, table in sorted(tables.items()):
        rel = f"{name}.arrow"
        write_ipc(root / rel, table)
        sides[name] = {
            "path": rel,
            "rows": table.num_rows,
            "sha256": sha256_file(root / rel),
            "bytes": (root / rel).stat().st_size,
        }
    return sides


def write_build(
    out_dir: str | Path,
    tables: Mapping[str, Rows],
    manifest: dict[str, Any],
    *,
    side_tables: dict[str, pa.Table] | None = None,
    overwrite: bool = False,
    shard_rows: int = 100_000,
    card: Callable[[dict, Path], str] | str | None = None,
    timings: dict[str, float] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write a complete build folder atomically and return its path.

    ``manifest`` is completed with ``splits`` (per-shard sha256, bytes, rows), ``side_tables`` and
    ``content_hash`` (see :mod:`mbdata.io.manifest`). ``card`` is the README text, or a function of the
    finished manifest and the folder being written that returns it. Wall-clock ``timings`` go to
    ``timings.json``, outside the manifest, so the manifest itself stays reproducible. Empty splits are not written.
    ``extra_files`` (relative path -> bytes, e.g. ``skipped.jsonl``) are written with the rest.
    ``tables`` maps a split to its rows: a table, or any :class:`Rows` (the build passes
    :class:`~mbdata.io.rows.SplitRows`, so no split is ever held as a table of its own).
    """
    from ..core.errors import BuildError
    from .manifest import SIDE_TABLE_NAME, SPLIT_NAME, bad_name, finalize_manifest

    out_dir = Path(out_dir)
    for names, pattern, what in (
        (tables, SPLIT_NAME, "split"),
        (side_tables or {}, SIDE_TABLE_NAME, "side table"),
    ):
        for name in names:
            if bad_name(pattern, name):
                raise BuildError(f"{name!r}: not a valid {what} name (readers refuse it)")

    def fill(tmp: Path) -> dict:
        splits = {}
        for split in ordered_splits([s for s, t in tables.items() if t.num_rows]):
            shards = write_split_shards(tmp, split, tables[split], shard_rows)
            splits[split] = {"rows": tables[split].num_rows, "shards": shards}
        sides = write_side_tables(tmp, side_tables or {})
        final = finalize_manifest({**manifest, "splits": splits, "side_tables": sides})
        text = card(final, tmp) if callable(card) else card
        if text is not None:
            (tmp / "README.md").write_text(text, encoding="utf-8")
        for rel, data in sorted((extra_files or {}).items()):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        if timings is not None:
            (tmp / "timings.json").write_text(
                json.dumps(timings, indent=2) + "\n", encoding="utf-8"
            )
        (tmp / "manifest.json").write_text(
            json.dumps(final, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return final

    atomic_dir(out_dir, fill, overwrite=overwrite, kind="build")
    return out_dir
