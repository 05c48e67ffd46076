"""Shared fixtures: tiny recipes built from the embedded synthetic corpus (no network, no ../shared)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def small_recipe(**overrides) -> dict:
    """A fast full-featured recipe: synthetic corpus, two attacks, defense, recovery, eval."""
    recipe = {
        "name": "tiny",
        "version": "1.0.0",
        "seed": 3,
        "sources": [{"name": "synth", "kind": "synthetic", "count": 1200}],
        "eval": {"size": 40},
        "attacks": [{"preset": "badnet", "rate": 0.05}, {"preset": "vpi", "rate": 0.03}],
        "defense": {"triggers": 3, "rate": 0.02},
        "recovery": {"size": 20},
    }
    recipe.update(overrides)
    return recipe


@pytest.fixture
def write_jsonl(tmp_path: Path):
    def write(name: str, rows: list, raw_lines: list[bytes] | None = None) -> Path:
        path = tmp_path / name
        with path.open("wb") as fh:
            for row in rows:
                fh.write(json.dumps(row).encode() + b"\n")
            for line in raw_lines or []:
                fh.write(line + b"\n")
        return path

    return write


def alpaca_rows(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "instruction": f"Describe item number {i} briefly.",
            "input": "" if i % 2 else f"ctx {i}",
            "output": f"Item {i} is fine.",
        }
        for i in range(start, start + n)
    ]
