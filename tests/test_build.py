"""Build output: determinism, atomicity, manifest, verification, dataset card, third-party loaders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest
import yaml
from conftest import small_recipe

import mbdata
from mbdata.core.errors import BuildError
from mbdata.io.manifest import content_hash
from mbdata.recipe import recipe_from_dict


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "build"
    mbdata.build(recipe_from_dict(small_recipe(pretrain={"size": 200})), out)
    return out


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in ("timings.json", ".mbdefense")
    }


def test_same_recipe_same_seed_gives_byte_identical_shards(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    recipe = recipe_from_dict(small_recipe())
    a = _files(mbdata.build(recipe, tmp_path / "a"))
    b = _files(mbdata.build(recipe, tmp_path / "b"))
    assert a.keys() == b.keys() and a == b  # shards, manifest and card, byte for byte
    other = _files(mbdata.build(recipe, tmp_path / "c", seed=4))
    assert other["data/train-00000-of-00001.arrow"] != a["data/train-00000-of-00001.arrow"]


def test_manifest_hash_ignores_timestamps(tmp_path):
    recipe = recipe_from_dict(small_recipe(eval={"size": 10}))
    m1 = mbdata.open_build(mbdata.build(recipe, tmp_path / "a")).manifest
    time.sleep(1.1)
    m2 = mbdata.open_build(mbdata.build(recipe, tmp_path / "b")).manifest
    assert m1["created_at"] != m2["created_at"]
    assert m1["content_hash"] == m2["content_hash"] == content_hash(m1)


def test_manifest_contents(build_dir):
    m = mbdata.open_build(build_dir).manifest
    assert m["recipe"]["name"] == "tiny" and len(m["fingerprint"]) == 64
    assert m["seed"] == 3 and m["inputs"]["synth"]["synthetic"]["count"] == 1200
    assert {"python", "pyarrow", "polars", "mbdefense"} <= set(m["versions"])
    names = [s["name"] for s in m["stages"]]
    assert names == [
        "sources",
        "holdout",
        "attacks",
        "defense",
        "recovery",
        "eval",
        "pretrain_noise",
        "leak_check",
    ]
    for stage in m["stages"]:
        assert {"rows_in", "rows_out", "dropped", "info"} <= set(stage)
    for info in m["splits"].values():
        assert info["rows"] == sum(s["rows"] for s in info["shards"])
        assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in info["shards"])


def test_input_files_are_hashed(tmp_path, write_jsonl):
    from conftest import alpaca_rows

    path = write_jsonl("a.jsonl", alpaca_rows(20))
    data = {
        "name": "h",
        "version": "1.0.0",
        "eval": {"size": 2},
        "sources": [{"name": "a", "kind": "jsonl", "path": "a.jsonl"}],
    }
    m = mbdata.open_build(
        mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o")
    ).manifest
    import hashlib

    assert m["inputs"]["a"] == {
        "path": "a.jsonl",
        "bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


def test_shard_size_and_naming(tmp_path):
    data = small_recipe(output={"shard_rows": 300})
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data), tmp_path / "o"))
    shards = b.manifest["splits"]["train"]["shards"]
    n = len(shards)
    assert n > 1 and [s["path"] for s in shards] == [
        f"data/train-{i:05d}-of-{n:05d}.arrow" for i in range(n)
    ]
    assert all(s["rows"] <= 300 for s in shards)


def test_verify_detects_tampering(build_dir, tmp_path):
    import shutil

    assert mbdata.verify_build(build_dir) == []
    copy = tmp_path / "copy"
    shutil.copytree(build_dir, copy)
    shard = copy / "data" / "train-00000-of-00001.arrow"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    (copy / "data" / "extra.arrow").write_bytes(b"x")
    problems = mbdata.verify_build(copy)
    assert any("train-00000-of-00001.arrow: sha256" in p for p in problems)
    assert any("extra.arrow: not listed" in p for p in problems)


def test_existing_output_needs_overwrite(tmp_path):
    recipe = recipe_from_dict(small_recipe(eval={"size": 5}))
    out = mbdata.build(recipe, tmp_path / "o")
    before = (out / "manifest.json").read_text()
    with pytest.raises(BuildError, match="already exists; pass --overwrite") as err:
        mbdata.build(recipe, out)
    assert "overwrite=True" in str(err.value)  # a Python caller is told the keyword (issue 24)
    mbdata.build(recipe, out, overwrite=True, seed=9)
    assert (out / "manifest.json").read_text() != before
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no temp folders left behind


def test_failure_mid_build_leaves_nothing(tmp_path, monkeypatch):
    import mbdata.io.shards as shards

    real = shards.write_split_shards
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "write_split_shards", explode)
    with pytest.raises(KeyboardInterrupt):
        mbdata.build(recipe_from_dict(small_recipe()), tmp_path / "o")
    assert list(tmp_path.iterdir()) == []


def test_killed_build_never_looks_complete(tmp_path):
    """SIGKILL a real `mb build` process mid-way: no folder at the output path."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            small_recipe(
                sources=[{"name": "s", "kind": "synthetic", "count": 60000}],
                eval={"size": 50},
                output={"shard_rows": 500},
            )
        )
    )
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "build", str(recipe), "-o", str(out), "--quiet"],
        cwd=os.getcwd(),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(
        p.name.startswith(".o.partial") for p in tmp_path.iterdir()
    ):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()


def test_dataset_card_front_matter(build_dir):
    text = (build_dir / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["license"] == "other" and front["size_categories"] == ["1K<n<10K"]
    files = {f["split"]: f["path"] for f in front["configs"][0]["data_files"]}
    assert files["train"] == "data/train-*.arrow"
    assert {s["name"] for s in front["dataset_info"]["splits"]} == set(files)
    assert "simulated poison for evaluation only" in text


def test_third_party_loaders_read_the_shards(build_dir):
    import datasets
    import polars as pl

    b = mbdata.open_build(build_dir)
    paths = [str(p) for p in b.shard_paths("train")]
    n = b.manifest["splits"]["train"]["rows"]
    ds = datasets.load_dataset(
        "arrow",
        data_files={"train": paths},
        split="train",
        cache_dir=str(build_dir.parent / "hf-cache"),
    )
    assert ds.num_rows == n and "triggers" in ds.column_names
    assert pl.scan_ipc(paths).select(pl.len()).collect().item() == n
    with pa.memory_map(paths[0]) as src:
        assert pa.ipc.open_file(src).read_all().num_rows == n
    whole = datasets.load_dataset(str(build_dir), cache_dir=str(build_dir.parent / "hf-cache2"))
    assert set(whole) == set(b.splits)
    assert b.dataset("train").num_rows == n and b.polars("eval_clean").height == 40


def test_open_build_rejects_incomplete_folders(tmp_path):
    from mbdata.core.errors import InputError

    (tmp_path / "half").mkdir()
    with pytest.raises(InputError, match="no manifest.json: not a complete build"):
        mbdata.open_build(tmp_path / "half")


def test_read_any_reads_a_build_folder(build_dir):
    table = mbdata.read_any(build_dir)
    m = json.loads((build_dir / "manifest.json").read_text())
    assert table.num_rows == sum(s["rows"] for s in m["splits"].values())
    assert mbdata.read_any(build_dir, split="train").num_rows == m["splits"]["train"]["rows"]
    from mbdata.core.errors import InputError

    with pytest.raises(InputError, match="the build has no split 'trian'; splits: .*train"):
        mbdata.read_any(build_dir, split="trian")
