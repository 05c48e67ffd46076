"""Command-line overrides of a few ``train:`` settings, and locating the shipped recipes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mbdata.core.errors import MBError
from mbtrain.config import TrainConfig


def with_overrides(
    cfg: TrainConfig,
    *,
    device: str | None = None,
    threads: int | None = None,
    limit: int | None = None,
    stage1_epochs: int | None = None,
    stage2_epochs: int | None = None,
    lam: float | None = None,
    pretrain_epochs: int | None = None,
) -> TrainConfig:
    """``cfg`` with the given settings replaced (``None`` keeps the recipe's value)."""
    if device is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, device=device))
    if threads is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, threads=threads))
    if limit is not None:
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, limit=limit))
    if stage1_epochs is not None:
        cfg = dataclasses.replace(cfg, stage1=dataclasses.replace(cfg.stage1, epochs=stage1_epochs))
    if stage2_epochs is not None:
        cfg = dataclasses.replace(cfg, stage2=dataclasses.replace(cfg.stage2, epochs=stage2_epochs))
    if lam is not None:
        cfg = dataclasses.replace(cfg, stage2=dataclasses.replace(cfg.stage2, lam=lam))
    if pretrain_epochs is not None:
        tiny = dataclasses.replace(cfg.model.tiny, pretrain_epochs=pretrain_epochs)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, tiny=tiny))
    return cfg


def shipped_recipe(name: str) -> Path:
    """A recipe shipped with mbdefense (``recipes/NAME.yaml``): from an importable ``recipes``
    package when installed as package data, else from the source checkout."""
    candidates = []
    try:
        from importlib.resources import files

        candidates.append(Path(str(files("recipes") / f"{name}.yaml")))
    except (ModuleNotFoundError, TypeError):
        pass
    candidates.append(Path(__file__).resolve().parent.parent / "recipes" / f"{name}.yaml")
    for path in candidates:
        if path.is_file():
            return path
    raise MBError(f"recipe {name!r} not found (looked at {', '.join(map(str, candidates))})")
