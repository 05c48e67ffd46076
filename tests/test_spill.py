"""The spilled corpus (issue 28, mbdata.io.spill): columns written to a staging folder and mapped
back; the rebuilds give the in-memory results piece by piece; a build leaves nothing behind."""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa
import pytest
from conftest import small_recipe
from hypothesis import given, settings
from hypothesis import strategies as st

import mbdata
from mbdata import pipeline
from mbdata.core import atomic
from mbdata.core.errors import BuildError
from mbdata.io import spill
from mbdata.io.spill import spilling, take_rows, take_table
from mbdata.recipe import recipe_from_dict


def _table(n: int, seed: int, chunks: int) -> pa.Table:
    """Strings with nulls, ints and lists, cut into ``chunks`` chunks."""
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "text": pa.array(
                [None if rng.random() < 0.2 else "x" * int(rng.integers(0, 9)) for _ in range(n)],
                pa.string(),
            ),
            "number": pa.array(np.arange(n, dtype=np.int64)),
            "items": pa.array(
                [["a"] * int(rng.integers(0, 3)) for _ in range(n)], pa.list_(pa.string())
            ),
        }
    )
    cuts = sorted({0, n, *rng.integers(0, n + 1, size=chunks - 1).tolist()})
    if n == 0:
        return table
    return pa.concat_tables([table.slice(a, b - a) for a, b in zip(cuts, cuts[1:])])


@pytest.fixture
def small_pieces(monkeypatch):
    """Pieces of 7 rows, so small tables are rebuilt over many pieces."""
    monkeypatch.setattr(spill, "PIECE_ROWS", 7)
    monkeypatch.setattr(pipeline, "PIECE_ROWS", 7)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 60), st.integers(0, 10_000), st.integers(1, 5), st.data())
def test_spilled_rebuilds_equal_the_in_memory_ones(n, seed, chunks, data):
    table = _table(n, seed, chunks)
    keep = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    picked = (
        data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=n, unique=True)) if n else []
    )
    new = _table(len(picked), seed + 1, 1)
    filtered, replaced = (
        pipeline.filter_rows(table, keep),
        pipeline.replace_rows(table, np.array(picked, dtype=np.int64), new),
    )
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        old = spill.PIECE_ROWS, pipeline.PIECE_ROWS
        spill.PIECE_ROWS = pipeline.PIECE_ROWS = 7
        try:
            with spilling(Path(tmp) / "spill") as where:
                assert where is not None
                mapped = where.table(table)
                assert mapped.equals(table)
                assert pipeline.filter_rows([mapped], keep).equals(filtered)
                assert pipeline.replace_rows(
                    [where.table(table)], np.array(picked, dtype=np.int64), new
                ).equals(replaced)
                order = data.draw(st.lists(st.integers(0, max(n - 1, 0)), max_size=12)) if n else []
                assert take_table(mapped, order).equals(table.take(pa.array(order, pa.int64())))
        finally:
            spill.PIECE_ROWS, pipeline.PIECE_ROWS = old


def test_columns_are_files_mapped_in_few_chunks_and_unlinked(tmp_path, small_pieces):
    with spilling(tmp_path / "spill") as where:
        assert where is not None
        writer = where.writer(pa.field("x", pa.int64()))
        for a in range(0, 50, 3):  # small pieces are gathered into chunks of PIECE_ROWS rows
            writer.write(pa.array(np.arange(a, min(a + 3, 50))))
        column = writer.finish()
        assert column.to_pylist() == list(range(50))
        assert [len(c) for c in column.chunks] == [7] * 7 + [1]
        assert os.listdir(tmp_path / "spill") == []  # the mapping holds the pages, not a file
        table = where.table(pa.table({"x": column}))
        assert table.column(0).chunk(0).buffers()[1].address == column.chunk(0).buffers()[1].address
        grown = where.table(pa.concat_tables([table, pa.table({"x": pa.array([50, 51])})]))
        assert grown.column(0).num_chunks == 9 and grown.column(0).to_pylist() == list(range(52))
        where.release()
        assert grown.column(0).to_pylist() == list(range(52))  # released pages read back
    assert not (tmp_path / "spill").exists()


def test_take_rows_keeps_the_order_asked_and_touches_chunks_one_at_a_time():
    column = pa.chunked_array([pa.array([0, 1, 2]), pa.array([3, 4]), pa.array([5])])
    assert take_rows(column, np.array([5, 0, 3, 3])).to_pylist() == [5, 0, 3, 3]
    assert take_rows(column, np.array([], dtype=np.int64)).to_pylist() == []


def _peak_arrow_bytes(fn) -> int:
    from test_build_streamed_write import _peak_arrow_bytes as peak

    return peak(fn)


def test_a_spilled_rebuild_allocates_about_a_piece_not_a_column(tmp_path, monkeypatch):
    """Replacing rows of a spilled table allocates a piece of a column at a time; the in-memory
    rebuild allocates a whole column (the measure can see it)."""
    monkeypatch.setattr(spill, "PIECE_ROWS", 4096)
    monkeypatch.setattr(pipeline, "PIECE_ROWS", 4096)
    n = 200_000
    table = pa.table({"text": pa.array([f"row {i} " * 4 for i in range(n)])})
    picked = np.arange(0, n, 50, dtype=np.int64)
    new = pa.table({"text": pa.array(["new"] * len(picked))})
    column_bytes = table.nbytes
    assert _peak_arrow_bytes(lambda: pipeline.replace_rows(table, picked, new)) > column_bytes / 2
    with spilling(tmp_path / "spill") as where:
        assert where is not None
        mapped = where.table(table)
        peak = _peak_arrow_bytes(lambda: pipeline.replace_rows([mapped], picked, new))
        assert peak < column_bytes / 10


def test_a_build_spills_beside_its_output_and_removes_the_folder(tmp_path, monkeypatch):
    seen = []
    real = spill.Spill.__init__

    def record(self, folder):
        seen.append(folder)
        real(self, folder)

    monkeypatch.setattr(spill.Spill, "__init__", record)
    out = mbdata.build(recipe_from_dict(small_recipe()), tmp_path / "sub" / "out")
    assert [p.name.startswith(".out.spill-") for p in seen] == [True]
    assert seen[0].parent == out.parent and not seen[0].exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_a_failing_build_removes_its_spill_and_the_folders_it_made(tmp_path):
    bad = small_recipe(eval={"size": 100_000})
    with pytest.raises(BuildError):
        mbdata.build(recipe_from_dict(bad), tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(BuildError):
        mbdata.build(recipe_from_dict(bad), tmp_path / "new" / "deeper" / "out")
    assert not (tmp_path / "new").exists()


def test_only_a_dead_builds_spill_is_a_leftover(tmp_path):
    target = tmp_path / "out"
    mine = tmp_path / f".out.{atomic.SPILL_TAG}-{os.getpid()}-0123abcd"
    dead = tmp_path / f".out.{atomic.SPILL_TAG}-{2**22 + 12345}-0123abcd"
    mine.mkdir()
    dead.mkdir()
    atomic.recover(target, quiet=True)
    assert mine.exists() and not dead.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_release_drops_read_pages_from_the_resident_set(tmp_path):
    def file_kib() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssFile"))

    with spilling(tmp_path / "spill") as where:
        assert where is not None
        writer = where.writer(pa.field("x", pa.string()))
        writer.write(pa.array(["y" * 100] * 200_000))  # about 20 MB
        column = writer.finish()
        before = file_kib()
        assert sum(len(s) for s in column.to_pylist()[::50]) > 0  # reads every page
        touched = file_kib() - before
        where.release()
        assert touched > 10_000 and file_kib() - before < touched / 4


def test_a_file_source_is_read_into_the_spill(tmp_path, write_jsonl):
    """Inside a build, a file source's batches go to the spill as they are read: the same table
    as the in-memory read, its columns in the mapped files."""
    from conftest import alpaca_rows

    from mbdata.io.readers import read_rows
    from mbdata.recipe import SourceSpec

    path = write_jsonl("rows.jsonl", alpaca_rows(50))
    source = SourceSpec(name="rows", kind="jsonl", path=str(path))
    plain = read_rows(source, path).table
    with spilling(tmp_path / "spill") as where:
        assert where is not None
        spilled = read_rows(source, path).table
        assert spilled.equals(plain)
        assert where.table(spilled).column("id").chunk(0).buffers()[1].address == (
            spilled.column("id").chunk(0).buffers()[1].address
        )


@pytest.mark.parametrize("spilled", [False, True])
def test_filter_rows_sets_assigned_values_before_it_filters(tmp_path, small_pieces, spilled):
    """``assign`` gives rows of a column a value (later pairs win), positions taken before the
    filter, in memory and spilled alike (pieces of 7 rows: assignments across pieces)."""
    table = pa.table({"split": pa.array(["train"] * 30), "n": pa.array(range(30))})
    keep = np.ones(30, dtype=bool)
    keep[[3, 20]] = False
    assign = {
        "split": [(np.array([1, 3, 8, 29]), "eval"), (np.array([8, 15]), "pretrain")],
        "role": [],
    }
    expected = ["train"] * 30
    for positions, value in assign["split"]:
        for p in positions.tolist():
            expected[p] = value
    expected = [v for i, v in enumerate(expected) if keep[i]]
    with spilling(tmp_path / "spill" if spilled else None) as where:
        source = where.table(table) if where is not None else table
        out = pipeline.filter_rows([source], keep, assign=assign)
    assert out.column("split").to_pylist() == expected
    assert out.column("n").to_pylist() == [i for i in range(30) if keep[i]]
