"""The Hugging Face containers: ``hf_disk`` (a ``save_to_disk`` folder) and ``hub`` (a dataset id
through ``datasets.load_dataset``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.errors import InputError
from .records import RawRecord, arrow_records
from .registry import CONTAINERS

if TYPE_CHECKING:
    from .source import SourceSpec


def _dataset_split(obj: Any, path: str, split: str) -> Any:
    import datasets

    if isinstance(obj, (datasets.DatasetDict, dict)):
        if split not in obj:
            raise InputError(f"{path}: no split {split!r}; splits: {', '.join(obj)}")
        return obj[split]
    return obj


@CONTAINERS.add("hf_disk")
def read_hf_disk(path: Path, source: SourceSpec) -> Iterator[RawRecord]:
    """A folder written by ``datasets.Dataset(Dict).save_to_disk`` (Arrow files, no pickle)."""
    import datasets

    if not path.is_dir():
        raise InputError(f"{path}: expected a folder written by save_to_disk")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: not a save_to_disk folder: {exc}") from None
    ds = _dataset_split(ds, str(path), source.split)
    yield from arrow_records(ds.data.table)


@CONTAINERS.add("hub")
def read_hub(path: Path | str, source: SourceSpec) -> Iterator[RawRecord]:
    """A Hugging Face Hub dataset id through ``datasets.load_dataset`` (needs network or a cache)."""
    import datasets

    repo = source.path
    try:
        ds = datasets.load_dataset(
            repo, source.subset, split=source.split, revision=source.revision
        )
    except Exception as exc:  # noqa: BLE001 - any failure here is a user-facing "cannot load"
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(
            f"hub dataset {repo!r}: cannot load ({type(exc).__name__}: {reason}); "
            "if you are offline, download it elsewhere and use kind: hf_disk or a "
            "local file"
        ) from None
    yield from arrow_records(ds.data.table)
