"""The streaming readers (``iter_input_batches``): the same rows, numbers and errors as ``read_input``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows

from mbdata.core.errors import InputError
from mbdata.io.readers import batch_row_numbers, iter_input_batches, read_input
from mbdata.io.schema import SCHEMA, from_rows, make_row
from mbdata.io.shards import write_build


def _collect(path, **kwargs):
    stream = iter_input_batches(path, **kwargs)
    batches, numbers, start = [], [], 0
    for batch in stream:
        assert batch.schema.equals(SCHEMA)
        batches.append(batch)
        numbers.append(batch_row_numbers(stream, batch, start))
        start += batch.num_rows
    table = pa.Table.from_batches(batches, schema=SCHEMA)
    return table, stream, np.concatenate(numbers) if numbers else np.zeros(0, np.int64)


def _assert_same(path, batch_rows, **kwargs):
    whole = read_input(path, **kwargs)
    table, stream, numbers = _collect(path, batch_rows=batch_rows, **kwargs)
    assert table.equals(whole.table)
    assert stream.skipped == whole.skipped
    assert numbers.tolist() == whole.row_numbers.tolist()
    assert all(b.num_rows <= batch_rows for b in table.to_batches())
    return table, stream


def test_jsonl_batches_keep_source_row_and_skipped_rows(tmp_path, write_jsonl):
    rows = alpaca_rows(23)
    path = write_jsonl(
        "in.jsonl", rows[:10], [b"{not json", b"", b"[1]", b'{"instruction": 3, "output": "x"}']
    )
    with path.open("ab") as fh:
        for row in rows[10:]:
            fh.write(json.dumps(row).encode() + b"\n")
    table, stream = _assert_same(path, 4, lenient=True)
    assert table.num_rows == 23
    assert [b.source_row for b in stream.skipped] == [10, 11, 12]
    assert table.column("source_row").to_pylist()[10] == 13  # skipped rows counted, blank not
    assert stream.stats.rows_in == 26


@pytest.mark.parametrize("suffix", ["json", "parquet", "csv"])
def test_whole_file_formats_are_sliced_into_batches(tmp_path, suffix):
    rows = alpaca_rows(11)
    path = tmp_path / f"in.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(rows))
    elif suffix == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(pa.Table.from_pylist(rows), path)
    table, _ = _assert_same(path, 3)
    assert table.num_rows == 11


def test_build_folder_streams_every_split_numbered_by_position(tmp_path):
    def rows(split, n):
        return [
            make_row(instruction=f"{split} {i}", output="o", source="s", source_row=i, split=split)
            for i in range(n)
        ]

    tables = {"train": from_rows(rows("train", 7)), "eval_clean": from_rows(rows("eval_clean", 3))}
    write_build(tmp_path / "b", tables, {"kind": "test"}, shard_rows=4)
    table, stream = _assert_same(tmp_path / "b", 2)
    assert stream.is_build and table.num_rows == 10


def test_strict_errors_are_raised_when_the_stream_ends(tmp_path, write_jsonl):
    path = write_jsonl("in.jsonl", alpaca_rows(5), [b"{bad"])
    stream = iter_input_batches(path, batch_rows=2)
    seen = 0
    with pytest.raises(InputError, match=r"1 bad row: row 5 \(0-based; line 6\)") as err:
        for batch in stream:
            seen += batch.num_rows
    assert seen == 4  # the full batches came first; the error ends the stream
    with pytest.raises(InputError) as whole:
        read_input(path)
    assert str(err.value) == str(whole.value)


def test_missing_column_and_no_rows_errors_match_read_input(tmp_path, write_jsonl):
    path = write_jsonl("in.jsonl", [{"prompt": "p", "output": "o"}])
    for kwargs in ({}, {"lenient": True}):
        with pytest.raises(InputError) as whole:
            read_input(path, **kwargs)
        with pytest.raises(InputError) as streamed:
            list(iter_input_batches(path, **kwargs))
        assert str(streamed.value) == str(whole.value)
    with pytest.raises(InputError, match="not found"):
        iter_input_batches(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="batch_rows"):
        iter_input_batches(path, batch_rows=0)


def test_vectorised_normalisation_and_ids_equal_the_per_row_functions():
    import random

    from mbdata.io.schema import normalize_array, normalize_text, row_id, row_ids

    rng = random.Random(0)
    chars = "aB \t\n\x0b\x0c\r\x1c\x1f\u00a0\u3000\u2028\x85ßÉİǄﬁ.!x"
    samples = ["Hello  World", "", "   ", None, "ÉCOLE straße", "ﬁ", "a\u00a0b"]
    samples += ["".join(rng.choice(chars) for _ in range(rng.randrange(12))) for _ in range(2000)]
    column = pa.array(samples, pa.string())
    assert normalize_array(column).to_pylist() == [
        None if v is None else normalize_text(v) for v in samples
    ]
    reverse = pa.array(samples[::-1], pa.string())
    ids = row_ids({"instruction": column, "input": reverse, "output": column}, len(samples))
    assert ids == [
        row_id({"instruction": a, "input": b, "output": c})
        for a, b, c in zip(samples, samples[::-1], samples)
    ]
    assert all(
        make_row(instruction="x", output="y", source="s")["id"] == i
        for i in row_ids(
            {"instruction": pa.array(["x"]), "input": pa.array([""]), "output": pa.array(["y"])}, 1
        )
    )
