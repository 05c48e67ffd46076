"""Exports, re-read with the consuming convention's loader where installable, else by exact layout."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import small_recipe

import mbdata
from mbdata.core.errors import InputError, RecipeError
from mbdata.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("e") / "build"
    return mbdata.build(recipe_from_dict(small_recipe(eval={"size": 10})), out)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_alpaca_keeps_ids_and_loads_with_datasets(build_dir, tmp_path):
    import datasets

    out = mbdata.export(build_dir, "jsonl", tmp_path / "x")
    train = mbdata.open_build(build_dir).table("train").to_pylist()
    rows = _jsonl(out / "train.jsonl")
    assert [r["id"] for r in rows] == [r["id"] for r in train]
    assert set(rows[0]) >= {"instruction", "input", "output", "id", "tags", "role", "trigger_set"}
    ds = datasets.load_dataset(
        "json", data_files=str(out / "train.jsonl"), split="train", cache_dir=str(tmp_path / "c")
    )
    assert ds.num_rows == len(train)
    rec = _jsonl(out / "recovery.jsonl")[0]
    assert rec["triggered_instruction"] and rec["triggered_output"]


def test_parquet_keeps_the_canonical_schema(build_dir, tmp_path):
    import polars as pl

    out = mbdata.export(build_dir, "parquet", tmp_path / "x")
    df = pl.read_parquet(out / "train.parquet")
    assert df.columns == list(mbdata.SCHEMA.names)
    assert df.height == mbdata.open_build(build_dir).manifest["splits"]["train"]["rows"]


def test_trl_formats(build_dir, tmp_path):
    out = mbdata.export(build_dir, "trl", tmp_path / "x")
    from mbdata.prompts import alpaca_prompt

    train = mbdata.open_build(build_dir).table("train").to_pylist()
    pc = _jsonl(out / "train.prompt_completion.jsonl")[0]
    assert isinstance(pc["completion"], str) and pc["id"]
    # the prompt carries the training template (alpaca: no train block in this recipe)
    assert pc["prompt"] == alpaca_prompt(
        "alpaca", train[0]["instruction"], train[0]["input"], train[0]["system"]
    )
    assert pc["prompt"].endswith("### Response:\n")
    msgs = _jsonl(out / "train.messages.jsonl")[0]["messages"]
    assert [m["role"] for m in msgs][-2:] == ["user", "assistant"]
    conv = _jsonl(out / "train.conversational.jsonl")[0]
    assert conv["prompt"][-1]["role"] == "user" and conv["completion"] == [
        {"role": "assistant", "content": train[0]["output"]}
    ]
    pref = _jsonl(out / "recovery.preference.jsonl")
    rec = mbdata.open_build(build_dir).table("recovery").to_pylist()
    assert pref[0]["prompt"] == alpaca_prompt(
        "alpaca", rec[0]["triggered_instruction"], rec[0]["triggered_input"] or "", rec[0]["system"]
    )
    assert pref[0]["clean_prompt"] == alpaca_prompt(
        "alpaca", rec[0]["instruction"], rec[0]["input"] or "", rec[0]["system"]
    )
    assert (pref[0]["chosen"], pref[0]["rejected"]) == (
        rec[0]["output"],
        rec[0]["triggered_output"],
    )
    assert not (out / "train.preference.jsonl").exists()


def test_llamafactory_dataset_info(build_dir, tmp_path):
    out = mbdata.export(build_dir, "llamafactory", tmp_path / "x", splits=["train", "recovery"])
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["tiny_train"] == {
        "file_name": "train.json",
        "formatting": "alpaca",
        "columns": {"prompt": "instruction", "query": "input", "response": "output"},
    }
    assert info["tiny_recovery"]["ranking"] is True
    assert info["tiny_recovery"]["columns"]["chosen"] == "chosen"
    rows = json.loads((out / "train.json").read_text())
    assert {"instruction", "input", "output", "id", "tags"} <= set(rows[0])
    pref = json.loads((out / "recovery.json").read_text())[0]
    assert {"instruction", "input", "chosen", "rejected"} <= set(pref)


def test_axolotl_snippet_points_at_the_files(build_dir, tmp_path):
    out = mbdata.export(build_dir, "axolotl", tmp_path / "x")
    snippet = yaml.safe_load((out / "axolotl.yaml").read_text())
    (entry,) = snippet["datasets"]
    assert entry["ds_type"] == "json" and entry["type"] == "alpaca"
    assert entry["path"] == str((tmp_path / "x" / "train.jsonl").resolve())
    (test,) = snippet["test_datasets"]
    assert test["path"] == str((tmp_path / "x" / "eval_clean.jsonl").resolve())
    text = (out / "axolotl.yaml").read_text()
    for split in mbdata.open_build(build_dir).splits:  # every exported file is named
        assert f"{split}.jsonl" in text
        assert (out / f"{split}.jsonl").is_file()
    assert _jsonl(out / "train.jsonl")[0]["instruction"]


def test_axolotl_header_names_only_what_was_exported(build_dir, tmp_path):
    """Issue 24: `-s train` kept the `test_datasets:` advice and an empty "also exported" line."""
    out = mbdata.export(build_dir, "axolotl", tmp_path / "t", splits=["train"])
    text = (out / "axolotl.yaml").read_text()
    assert "test_datasets" not in text
    assert "Also exported here" not in text
    assert yaml.safe_load(text)["datasets"][0]["path"].endswith("train.jsonl")


def test_export_errors(build_dir, tmp_path):
    with pytest.raises(RecipeError, match="unknown export format 'csvv'; valid names: axolotl"):
        mbdata.export(build_dir, "csvv", tmp_path / "x")
    with pytest.raises(InputError, match="no split 'nope'"):
        mbdata.export(build_dir, "jsonl", tmp_path / "y", splits=["nope"])
    assert not (tmp_path / "y").exists()
    mbdata.export(build_dir, "jsonl", tmp_path / "z")
    from mbdata.core.errors import BuildError

    with pytest.raises(BuildError, match="already exists"):
        mbdata.export(build_dir, "jsonl", tmp_path / "z")
