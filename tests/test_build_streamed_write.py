"""Streamed shard writing (issue 28): each shard is taken from the corpus when it is written,
without a copy of the corpus, and its bytes depend on its rows alone (not on the corpus's chunk
layout, nor on whether the corpus was spilled)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import small_recipe

import mbdata
from mbdata.io.rows import SplitRows, split_positions, split_rows
from mbdata.io.schema import SCHEMA, from_rows, make_row
from mbdata.io.shards import write_build, write_ipc
from mbdata.recipe import recipe_from_dict


def _ipc(table: pa.Table, tmp: list = []) -> bytes:  # noqa: B006 (one scratch folder)
    """What :func:`write_ipc` writes for ``table``."""
    import tempfile
    from pathlib import Path

    if not tmp:
        tmp.append(Path(tempfile.mkdtemp()))
    path = tmp[0] / "shard.arrow"
    write_ipc(path, table, SCHEMA)
    return path.read_bytes()


def _corpus(n: int, seed: int, chunks: int) -> pa.Table:
    """Rows with every kind of column the writer meets: nulls, empty strings, sparse lists."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        poisoned = rng.random() < 0.1
        text = "w" * int(rng.integers(0, 12))
        rows.append(
            make_row(
                **{
                    "instruction": f"q{i} {text}",
                    "input": "" if rng.random() < 0.5 else f"c{i}",
                    "output": f"a{i}",
                    "system": None if rng.random() < 0.8 else "s",
                    "source": "s",
                    "source_row": i,
                    "split": str(rng.choice(["train", "train", "eval_clean", "pretrain"])),
                    "trigger_set": "badnet" if poisoned else None,
                    "triggers": [
                        {
                            "text": "cf",
                            "owner": "attacker",
                            "kind": "prefix",
                            "name": "badnet",
                            "field": "instruction",
                            "start": 0,
                            "end": 2,
                        }
                    ]
                    if poisoned
                    else [],
                    "tags": ["t"] if rng.random() < 0.3 else [],
                    # text only near the start: the columns null after a shard (system, x_d)
                    "triggered_instruction": "x_d" if i < n // 20 else None,
                }
            )
        )
    table = from_rows(rows)
    cuts = np.sort(rng.choice(np.arange(1, n), size=chunks - 1, replace=False))
    edges = [0, *cuts.tolist(), n]
    parts = [table.slice(a, b - a).combine_chunks() for a, b in zip(edges, edges[1:])]
    table = pa.concat_tables(parts)
    if chunks > 1:  # one column cut elsewhere: Table.filter cuts every column at all boundaries
        cut = int(rng.integers(1, n))
        role = table.column("role").combine_chunks()
        index = table.schema.get_field_index("role")
        table = table.set_column(
            index, table.schema.field("role"), pa.chunked_array([role[:cut], role[cut:]])
        )
    return table


@pytest.mark.parametrize(("seed", "shard_rows"), [(0, 97), (1, 250), (2, 64)])
def test_shard_bytes_depend_on_the_rows_alone(seed, shard_rows):
    """The same rows cut into 1, 3 or 7 chunks give the same shard bytes, and each shard holds the
    rows of a slice of the filtered split table, for shards inside one chunk or across several."""
    layouts = [_corpus(3000, seed, chunks) for chunks in (1, 3, 7)]
    assert all(c.equals(layouts[0]) for c in layouts)
    written = []
    for corpus in layouts:
        shards = {}
        for split, rows in split_rows(corpus).items():
            whole = corpus.filter(pc.equal(corpus.column("split"), split))
            assert rows.num_rows == whole.num_rows and rows.table().equals(whole)
            for offset in range(0, whole.num_rows, shard_rows):
                part = rows.slice(offset, shard_rows)
                assert part.equals(whole.slice(offset, shard_rows))
                shards[split, offset] = _ipc(part)
        written.append(shards)
    assert written[0] == written[1] == written[2]


def test_split_positions_are_the_rows_of_each_split_in_order():
    corpus = _corpus(500, 3, 4)
    found = split_positions(corpus)
    assert list(found) == sorted(set(corpus.column("split").to_pylist()))
    for name, positions in found.items():
        assert corpus.take(positions).equals(corpus.filter(pc.equal(corpus.column("split"), name)))


def test_a_multi_shard_build_writes_the_same_files_as_whole_split_tables(tmp_path, monkeypatch):
    """A build with small shards (its corpus spilled) gives, file for file, what writing slices of
    each split of the in-memory build (no spill) gives, and `build_in_memory(...).tables` are
    those splits."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    recipe = recipe_from_dict(small_recipe(output={"shard_rows": 170}, pretrain={"size": 200}))
    out = mbdata.build(recipe, tmp_path / "streamed")
    result = mbdata.build_in_memory(recipe)
    for name, table in result.tables.items():
        assert table.equals(result.corpus.filter(pc.equal(result.corpus.column("split"), name)))
    manifest = mbdata.open_build(out).manifest
    assert len(manifest["splits"]["train"]["shards"]) > 3
    for name, split in manifest["splits"].items():
        table = result.tables[name]
        for i, shard in enumerate(split["shards"]):
            expected = tmp_path / f"{name}-{i}.arrow"
            write_ipc(expected, table.slice(i * 170, 170), SCHEMA)
            assert (out / shard["path"]).read_bytes() == expected.read_bytes(), shard["path"]


def _peak_arrow_bytes(fn) -> int:
    """The most bytes Arrow's memory pool held while ``fn`` ran, above what it held before.

    Sampled by a thread every 0.5 ms, and once more when ``fn`` returns while its result is
    still alive: on a loaded machine the thread may not run during a short ``fn`` at all (CI saw
    a whole-table filter's returned copy missed), so the result of ``fn`` is always counted."""
    base = pa.total_allocated_bytes()
    peak = [base]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], pa.total_allocated_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        result = fn()
        peak[0] = max(peak[0], pa.total_allocated_bytes())
        del result
    finally:
        done.set()
        thread.join()
    return peak[0] - base


def test_writing_holds_one_shard_not_a_copy_of_the_corpus(tmp_path):
    """Writing a corpus's splits as SplitRows allocates about one shard; writing the filtered split
    tables (the old way) allocates a copy of the corpus. Bound: a third of the corpus."""
    corpus = _corpus(20_000, 5, 2)
    size = corpus.nbytes

    def streamed():
        write_build(tmp_path / "a", split_rows(corpus), {"kind": "test"}, shard_rows=500)

    def whole():
        tables = {
            s: corpus.filter(pc.equal(corpus.column("split"), s)) for s in split_positions(corpus)
        }
        write_build(tmp_path / "b", tables, {"kind": "test"}, shard_rows=500)

    assert _peak_arrow_bytes(whole) > 0.9 * size  # the measure can see a copy
    assert _peak_arrow_bytes(streamed) < size / 3
    for p in sorted((tmp_path / "a" / "data").iterdir()):
        assert p.read_bytes() == (tmp_path / "b" / "data" / p.name).read_bytes()


def test_split_rows_slice_past_the_end_is_empty():
    corpus = _corpus(50, 6, 1)
    rows = SplitRows(corpus, np.array([1, 5, 9], dtype=np.int64))
    assert rows.slice(2, 10).num_rows == 1 and rows.slice(3, 10).num_rows == 0
