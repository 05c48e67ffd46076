"""`mb build` and `mb audit` on both engines: per-batch steps give the whole-table result, the Ray
engine gives the local engine's output (byte-identical shards, the same flagged rows), the recipe's
`engine:` key is validated and never hashed, and a missing Ray is one clear error.

Ray starts once for this module (a few seconds); only two tests use it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from conftest import small_recipe
from test_audit_corpus import clean_rows, plant

import mbdata
from cli.main import main
from mbdata.audit import audit_path
from mbdata.audit.corpus import _counts, _output_words
from mbdata.audit.counts import corpus_counts, merge_counts
from mbdata.audit.outputs import normalize_outputs
from mbdata.audit.tokens import tokenize_prompts
from mbdata.core.errors import RecipeError
from mbdata.engines import EngineError
from mbdata.engines.batches import map_ranges, map_table
from mbdata.io.readers import read_rows
from mbdata.pipeline import BuildContext
from mbdata.recipe import SourceSpec, fingerprint, recipe_from_dict, resolved_mapping
from mbdata.stages.sources import synthetic_table
from mbdata.stages.splits import prompt_keys


# ------------------------------------------------------------------------- per-batch == whole table
def test_map_table_and_ranges_concatenate_batches_in_order():
    table = pa.table({"x": list(range(10))})

    def double(batch: pa.Table) -> pa.Table:
        return pa.table({"y": [2 * v for v in batch.column("x").to_pylist()]})

    assert map_table(table, double, batch_rows=3).column("y").to_pylist() == [
        2 * v for v in range(10)
    ]
    got = map_ranges(10, lambda a, b: pa.table({"r": list(range(a, b))}), batch_rows=4)
    assert got.column("r").to_pylist() == list(range(10))
    with pytest.raises(EngineError, match="valid engines: local, process, ray"):
        map_table(table, double, engine="spark")


@pytest.mark.parametrize("tasks", [None, ["add", "count_items", "longer_word"]])
def test_synthetic_source_in_batches_is_the_readers_table(tasks):
    """The column-wise synthetic source, cut into batches that do not divide the row count or the
    task blocks, gives read_rows' table: same ids, rows and Arrow bytes."""
    source = SourceSpec(name="synth", kind="synthetic", count=1003, tasks=tasks)
    reference = read_rows(source, None, seed=11).table
    batched = synthetic_table(source, 11, BuildContext(seed=0, batch_rows=97))
    assert batched.schema.equals(reference.schema, check_metadata=True)
    assert batched.equals(reference)


def test_prompt_keys_in_batches_match_the_whole_table():
    source = SourceSpec(name="synth", kind="synthetic", count=500)
    table = read_rows(source, None, seed=1).table
    whole = prompt_keys(table)
    assert prompt_keys(table, ctx=BuildContext(seed=0, batch_rows=33)) == whole
    assert len(set(whole)) > 100


def test_audit_counts_merged_per_batch_equal_whole_corpus_counts():
    rows, _ = plant(clean_rows(700, seed=3), ["cf"], 20)
    instructions = pl.Series([r["instruction"] for r in rows])
    inputs = pl.Series([r.get("input", "") for r in rows])
    outputs = pl.Series([r["output"] for r in rows])
    merged = corpus_counts(instructions, inputs, outputs, batch_rows=64)
    tokens = tokenize_prompts(instructions, inputs)
    words = pl.DataFrame({"row": tokens.row, "key": tokens.lc}).unique()
    whole_prompt = _counts(words["key"].to_numpy())
    whole_output = _counts(_output_words(normalize_outputs(outputs))["key"].to_numpy())
    assert merged.rows == 700
    for got, want in ((merged.prompt_words, whole_prompt), (merged.output_words, whole_output)):
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    # Merging is addition key by key, in any grouping.
    keys = np.array([5, 1, 5, 9], dtype=np.uint64)
    total = merge_counts([(keys[:2], np.array([1, 2])), (keys[2:], np.array([3, 4]))])
    assert total[0].tolist() == [1, 5, 9] and total[1].tolist() == [2, 4, 4]


# ------------------------------------------------------------------------------ the recipe key
def test_recipe_engine_key_is_validated_and_not_hashed():
    plain = recipe_from_dict(small_recipe()).recipe
    on_ray = recipe_from_dict(small_recipe(engine="ray")).recipe
    assert on_ray.engine == "ray" and plain.engine == "local"
    assert "engine" not in resolved_mapping(on_ray)
    assert fingerprint(on_ray) == fingerprint(plain)
    with pytest.raises(RecipeError, match="engine.*'spark'.*local"):
        recipe_from_dict(small_recipe(engine="spark"))


# ---------------------------------------------------------------------------- Ray not installed
def test_engine_ray_without_ray_is_one_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EngineError, match=r"pip install 'mbdefense\[ray\]'"):
        mbdata.build(recipe_from_dict(small_recipe()), tmp_path / "b", engine="ray")
    assert not (tmp_path / "b").exists()
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n", encoding="utf-8")
    code = main(["audit", str(corpus), "-o", str(tmp_path / "a"), "--engine", "ray", "--quiet"])
    assert code == 2
    assert "mbdefense[ray]" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


# --------------------------------------------------------------------------------- Ray engine
@pytest.fixture(scope="module")
def ray_runtime():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def _shards(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "data").glob("*.arrow"))}


@pytest.fixture(params=["process", "ray"])
def engine(request):
    if request.param == "ray":
        request.getfixturevalue("ray_runtime")
    return request.param


def test_build_on_every_engine_gives_byte_identical_shards(engine, tmp_path):
    """An immunization build with an audit block and a dedup block (so the dedup sketch and the
    hold-out's decontamination run on the executor), its splits cut into several shards: same
    shards, side tables and content hash as the local executor."""
    settings = {"audit": {}, "dedup": {}, "output": {"shard_rows": 300}}
    local = mbdata.build(recipe_from_dict(small_recipe(**settings)), tmp_path / "local")
    other = mbdata.build(
        recipe_from_dict(small_recipe(**settings, engine=engine)), tmp_path / engine
    )
    manifests = [json.loads((p / "manifest.json").read_text()) for p in (local, other)]
    assert manifests[0]["content_hash"] == manifests[1]["content_hash"]
    assert _shards(local) == _shards(other) and len(_shards(local)) >= 8
    for side in ("audit/rows.arrow", "dedup/clusters.arrow", "dedup/decontamination.arrow"):
        assert (local / side).read_bytes() == (other / side).read_bytes(), side


def test_audit_on_every_engine_flags_the_same_rows(engine, tmp_path):
    rows, bad = plant(clean_rows(600, seed=5), ["cf"], 18)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    local = audit_path(path, tmp_path / "local", progress=False)
    other = audit_path(path, tmp_path / engine, progress=False, engine=engine)
    assert np.array_equal(local.flagged, other.flagged)
    assert np.array_equal(local.score, other.score)
    assert [c.text for c in local.candidates] == [c.text for c in other.candidates]
    assert set(np.flatnonzero(local.flagged)) & bad
    for name in ("rows.parquet", "triggers.json"):
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / engine / name).read_bytes()
