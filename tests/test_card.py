"""The dataset card: publishable (no local paths), says how to train, and loads in `datasets`."""

from __future__ import annotations

import hashlib
import logging

import yaml
from conftest import alpaca_rows

import mbdata
from mbdata.recipe import recipe_from_dict


def _corpus_build(tmp_path, write_jsonl, **extra):
    path = write_jsonl("my-corpus.jsonl", alpaca_rows(400))
    data = {
        "name": "mine",
        "version": "1.0.0",
        "seed": 1,
        "sources": [{"name": "corpus", "kind": "jsonl", "path": str(path)}],
        "eval": {"size": 20, "attack_triggers": False},
        "defense": {"triggers": 2, "rate": 0.02},
        "recovery": {"size": 20},
        **extra,
    }
    out = mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")
    return path, out


def test_card_names_files_by_name_and_sha256_never_by_local_path(tmp_path, write_jsonl):
    path, out = _corpus_build(tmp_path, write_jsonl)
    card = (out / "README.md").read_text()
    assert str(tmp_path) not in card and str(path) not in card
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"| `corpus` | jsonl | `my-corpus.jsonl` | `{digest}` |" in card


def test_card_describes_train_without_attacks_and_how_to_train(tmp_path, write_jsonl):
    _, out = _corpus_build(tmp_path, write_jsonl)
    card = (out / "README.md").read_text()
    train_line = next(line for line in card.splitlines() if line.startswith("| `train` |"))
    assert "attack" not in train_line and "defensive rows" in train_line
    assert "simulated poison" not in card and "This build simulates no attack" in card
    assert "## How to train on these splits" in card
    assert "**Stage 1**" in card and "fine-tune on `train`" in card
    assert "**Stage 2**" in card and "on `recovery`" in card


def test_card_split_metadata_is_complete_and_datasets_loads_without_warnings(tmp_path, write_jsonl):
    import datasets

    _, out = _corpus_build(tmp_path, write_jsonl)
    front = yaml.safe_load((out / "README.md").read_text().split("---\n")[1])
    splits = {s["name"]: s for s in front["dataset_info"]["splits"]}
    assert all({"name", "num_bytes", "num_examples"} <= set(s) for s in splits.values())
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.WARNING)
    root = logging.getLogger("datasets")
    root.addHandler(handler)
    try:
        ds = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
    finally:
        root.removeHandler(handler)
    assert [r.getMessage() for r in records if r.levelno >= logging.WARNING] == []
    manifest = mbdata.open_build(out).manifest
    assert {k: v.num_rows for k, v in ds.items()} == {
        k: v["rows"] for k, v in manifest["splits"].items()
    }
    for name, split in ds.items():
        assert split.info.splits[name].num_bytes == splits[name]["num_bytes"]
