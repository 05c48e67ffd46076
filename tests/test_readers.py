"""Every reader, field mapping, source selection/mixing, and bad-input errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import alpaca_rows

import mbdata
from mbdata.core.errors import BuildError, InputError
from mbdata.io.readers import read_any
from mbdata.recipe import recipe_from_dict


def _build(tmp_path, sources, **extra):
    data = {"name": "r", "version": "1.0.0", "sources": sources, "eval": {"size": 0}, **extra}
    return mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out")


def test_jsonl_and_json_alpaca(tmp_path, write_jsonl):
    rows = alpaca_rows(5)
    write_jsonl("a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    for name in ("a.jsonl", "a.json"):
        table = read_any(tmp_path / name)
        assert table.column("instruction").to_pylist() == [r["instruction"] for r in rows]
        assert table.column("input").to_pylist() == [r["input"] for r in rows]
        assert table.column("source_row").to_pylist() == list(range(5))
        assert table.schema.equals(mbdata.SCHEMA, check_metadata=False)


def test_parquet_csv_and_save_to_disk(tmp_path):
    import datasets

    rows = alpaca_rows(4)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    with (tmp_path / "a.csv").open("w", newline="") as fh:
        import csv

        w = csv.DictWriter(fh, fieldnames=["instruction", "input", "output"])
        w.writeheader()
        w.writerows(rows + [{"instruction": "Line one,\nline two", "input": "", "output": "ok"}])
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "hf")
    )
    assert read_any(tmp_path / "a.parquet").column("output").to_pylist() == [
        r["output"] for r in rows
    ]
    csv_table = read_any(tmp_path / "a.csv")
    assert (
        csv_table.num_rows == 5
        and csv_table.column("instruction")[4].as_py() == "Line one,\nline two"
    )
    assert read_any(tmp_path / "hf", kind="hf_disk").num_rows == 4


def test_sharegpt_and_messages_layouts(tmp_path, write_jsonl):
    write_jsonl(
        "s.jsonl",
        [
            {
                "conversations": [
                    {"from": "system", "value": "Be brief."},
                    {"from": "human", "value": "Hi?"},
                    {"from": "gpt", "value": "Hello."},
                    {"from": "human", "value": "More?"},
                    {"from": "gpt", "value": "No."},
                ]
            }
        ],
    )
    write_jsonl(
        "m.jsonl",
        [{"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}],
    )
    s = read_any(tmp_path / "s.jsonl", layout="sharegpt").to_pylist()[0]
    assert (s["system"], s["instruction"], s["output"]) == ("Be brief.", "Hi?", "Hello.")
    m = read_any(tmp_path / "m.jsonl", layout="messages").to_pylist()[0]
    assert (m["instruction"], m["output"], m["system"]) == ("Q", "A", None)


def test_field_mapping(tmp_path, write_jsonl):
    write_jsonl("q.jsonl", [{"question": "Why?", "context": "c", "answer": "Because."}])
    t = read_any(
        tmp_path / "q.jsonl",
        fields={"instruction": "question", "input": "context", "output": "answer"},
    )
    assert t.to_pylist()[0]["output"] == "Because."


@pytest.mark.parametrize(
    "line, message",
    [
        (
            b'{"instruction": "x", "output": ',
            r"bad.jsonl: 1 bad row: row 2 \(0-based; line 3\): invalid JSON",
        ),
        (b'{"instruction": "x"}', r"row 2 \(0-based; line 3\): field 'output': missing"),
        (
            b'{"instruction": "x", "output": 5}',
            r"row 2 \(0-based; line 3\): field 'output': expected a string",
        ),
        (
            b'{"instruction": "\xff\xfe", "output": "y"}',
            r"row 2 \(0-based; line 3\): not valid UTF-8",
        ),
        (b"[1, 2]", r"row 2 \(0-based; line 3\): expected a JSON object"),
        (
            b'{"instruction": " ", "output": "y"}',
            r"row 2 \(0-based; line 3\): field 'instruction': empty text",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, write_jsonl, line, message):
    write_jsonl("bad.jsonl", alpaca_rows(2), raw_lines=[line])
    with pytest.raises(InputError, match=message):
        read_any(tmp_path / "bad.jsonl")
    assert read_any(tmp_path / "bad.jsonl", skip_bad_rows=True).num_rows == 2


def test_skip_bad_rows_counts_reasons_in_manifest(tmp_path, write_jsonl):
    write_jsonl("bad.jsonl", alpaca_rows(30), raw_lines=[b"{oops", b'{"instruction": "x"}'])
    src = [{"name": "a", "kind": "jsonl", "path": "bad.jsonl"}]
    with pytest.raises(InputError):
        _build(tmp_path, src)
    assert not (tmp_path / "out").exists()
    data = {"name": "r", "version": "1.0.0", "sources": src, "eval": {"size": 0}}
    out = mbdata.build(
        recipe_from_dict(data, base_dir=tmp_path), tmp_path / "out", skip_bad_rows=True
    )
    stage = mbdata.open_build(out).manifest["stages"][0]
    assert stage["dropped"] == {"a:bad_row:invalid_json": 1, "a:bad_row:missing:output": 1}
    assert mbdata.open_build(out).manifest["options"]["skip_bad_rows"] is True


def test_empty_source_directory_and_whole_json_errors(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl: no rows to read"):
        read_any(tmp_path / "empty.jsonl")
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_any(tmp_path / "dir.jsonl", kind="jsonl")
    (tmp_path / "broken.json").write_text('[{"instruction": "a", "output": "b"},\n {')
    with pytest.raises(InputError, match=r"broken.json:2: invalid JSON"):
        read_any(tmp_path / "broken.json")
    (tmp_path / "latin.json").write_bytes(b'[{"instruction": "caf\xe9", "output": "b"}]')
    with pytest.raises(InputError, match=r"latin.json:1: not valid UTF-8"):
        read_any(tmp_path / "latin.json")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_any(tmp_path / "x.txt")


def test_hub_source_fails_cleanly_offline(tmp_path):
    data = {
        "name": "r",
        "version": "1.0.0",
        "eval": {"size": 0},
        "sources": [{"name": "h", "kind": "hub", "path": "tatsu-lab/alpaca"}],
    }
    with pytest.raises(InputError, match="hub dataset 'tatsu-lab/alpaca': cannot load"):
        mbdata.build(recipe_from_dict(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_limit_sample_count_weight(tmp_path, write_jsonl):
    write_jsonl("a.jsonl", alpaca_rows(100))
    write_jsonl("b.jsonl", alpaca_rows(100, start=1000))
    out = _build(
        tmp_path,
        [
            {"name": "a", "kind": "jsonl", "path": "a.jsonl", "limit": 50, "sample": 20},
            {"name": "b", "kind": "jsonl", "path": "b.jsonl", "count": 7},
            {"name": "s", "kind": "synthetic", "count": 30, "weight": 1.0},
            {"name": "t", "kind": "synthetic", "count": 30, "weight": 2.0},
        ],
        mix_size=10,
    )
    train = mbdata.open_build(out).table("train").to_pylist()
    by_source = {}
    for row in train:
        by_source.setdefault(row["source"], []).append(row["source_row"])
    assert {k: len(v) for k, v in by_source.items()} == {"a": 20, "b": 7, "s": 3, "t": 7}
    assert max(by_source["a"]) < 50 and by_source["a"] == sorted(by_source["a"])


def test_count_above_available_is_an_error(tmp_path, write_jsonl):
    write_jsonl("a.jsonl", alpaca_rows(5))
    with pytest.raises(
        BuildError,
        match=r"sources\[0\].count: 9 rows wanted from source 'a', "
        "only 5 available",
    ):
        _build(tmp_path, [{"name": "a", "kind": "jsonl", "path": "a.jsonl", "count": 9}])


# ------------------------------------------------------------------ issue 13: real-corpus contact
def test_strict_read_counts_every_bad_row_and_names_the_first_five(tmp_path, write_jsonl):
    rows = alpaca_rows(20)
    for i in (2, 5, 7, 11, 13, 17, 19):
        rows[i]["output"] = ""
    write_jsonl("e.jsonl", rows)
    with pytest.raises(InputError) as err:
        read_any(tmp_path / "e.jsonl")
    message = str(err.value)
    assert "7 bad rows (first 5 shown)" in message
    for i in (2, 5, 7, 11, 13):
        assert f"row {i} (0-based; line {i + 1}): field 'output': empty text" in message
    assert "row 17 (0-based" not in message


def test_skip_bad_rows_keeps_the_original_row_index(tmp_path, write_jsonl):
    rows = alpaca_rows(6)
    rows[1]["output"] = ""
    write_jsonl("e.jsonl", rows[:3], raw_lines=[b"{broken"])
    with (tmp_path / "e.jsonl").open("a") as fh:
        fh.write("\n")  # a blank line is not a row
        for row in rows[3:]:
            fh.write(json.dumps(row) + "\n")
    from mbdata.io.readers import read_input

    got = read_input(tmp_path / "e.jsonl", skip_bad_rows=True)
    assert got.table.column("source_row").to_pylist() == [0, 2, 4, 5, 6]
    assert got.table.column("output").to_pylist()[1:] == [r["output"] for r in rows[2:]]
    assert [(b.source_row, b.line, b.reason) for b in got.skipped] == [
        (1, 2, "empty:output"),
        (3, 4, "invalid_json"),
    ]


def test_lenient_read_keeps_empty_texts_and_skips_only_unparseable_rows(tmp_path, write_jsonl):
    from mbdata.io.readers import read_input

    rows = alpaca_rows(4)
    rows[1]["output"] = ""
    rows[2]["output"] = None
    write_jsonl("e.jsonl", rows, raw_lines=[b"{broken", b'{"instruction": "x", "output": 5}'])
    got = read_input(tmp_path / "e.jsonl", lenient=True)
    assert got.table.column("source_row").to_pylist() == [0, 1, 2, 3]
    assert got.table.column("output").to_pylist()[1:3] == ["", ""]
    assert [(b.source_row, b.reason) for b in got.skipped] == [
        (4, "invalid_json"),
        (5, "not_string:output"),
    ]


def test_missing_column_is_one_schema_error_listing_the_columns(tmp_path, write_jsonl):
    import csv

    with (tmp_path / "a.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["instruction", "input", "response"])
        w.writeheader()
        w.writerows([{"instruction": "a", "input": "", "response": "b"}] * 3)
    with pytest.raises(InputError) as err:
        read_any(tmp_path / "a.csv", skip_bad_rows=True)
    message = str(err.value)
    assert "required column 'output' missing from the first 3 rows" in message
    assert "columns found: 'instruction', 'input', 'response'" in message
    assert "--field output=COLUMN" in message and "fields: {output: COLUMN}" in message
    assert "bad row" not in message
    write_jsonl("cap.jsonl", [{"Instruction": "a", "Input": "c", "Output": "b"}])
    with pytest.raises(
        InputError,
        match=r"required columns 'instruction', 'output' missing .*"
        r"differ only in case: map them with --field "
        r"instruction=Instruction --field output=Output "
        r"--field input=Input",
    ):
        read_any(tmp_path / "cap.jsonl")
    t = read_any(tmp_path / "cap.jsonl", fields={"instruction": "Instruction", "output": "Output"})
    assert t.num_rows == 1


def test_unknown_canonical_field_is_rejected(tmp_path, write_jsonl):
    write_jsonl("q.jsonl", alpaca_rows(2))
    with pytest.raises(
        InputError,
        match=r"unknown canonical field 'bogus'.*valid names: "
        r"instruction, input, output, system",
    ):
        read_any(tmp_path / "q.jsonl", fields={"bogus": "question"})


def test_json_array_read_as_jsonl_suggests_kind_json(tmp_path):
    rows = alpaca_rows(3)
    (tmp_path / "a.jsonl").write_text(json.dumps(rows, indent=1))
    with pytest.raises(InputError, match=r"JSON array, not JSON Lines.*kind: json"):
        read_any(tmp_path / "a.jsonl")
    (tmp_path / "b.jsonl").write_text(json.dumps(rows))
    with pytest.raises(InputError, match=r"kind: json"):
        read_any(tmp_path / "b.jsonl")
    assert read_any(tmp_path / "a.jsonl", kind="json").num_rows == 3


def test_prompts_only_reference_reads_without_output(tmp_path, write_jsonl):
    write_jsonl("ref.jsonl", [{"prompt": "Tell me a joke."}, {"prompt": "Name a colour."}])
    with pytest.raises(InputError, match="required column 'instruction' missing"):
        read_any(tmp_path / "ref.jsonl", prompts_only=True)
    t = read_any(tmp_path / "ref.jsonl", prompts_only=True, fields={"instruction": "prompt"})
    assert t.column("instruction").to_pylist() == ["Tell me a joke.", "Name a colour."]
    assert t.column("output").to_pylist() == ["", ""]


def test_read_rows_in_batches_equals_one_conversion(tmp_path, write_jsonl, monkeypatch):
    """read_rows converts its rows a batch at a time (bounded Python objects): the table must be
    the one converting every row at once gives, as one contiguous chunk (shard bytes depend on
    the chunk layout), with bad rows skipped across batch edges at the right source_row."""
    from mbdata.io.readers import rows as rows_module
    from mbdata.recipe import SourceSpec

    records = [
        {"instruction": f"q {i}", "input": "", "output": f"a {i}"}
        if i % 7
        else {"instruction": f"q {i}", "input": ""}  # bad: no output
        for i in range(50)
    ]
    path = write_jsonl("many.jsonl", records)
    source = SourceSpec(name="s", kind="jsonl", path=str(path))
    monkeypatch.setattr(rows_module, "BATCH_ROWS", 1_000)
    whole = rows_module.read_rows(source, path, skip_bad_rows=True)
    monkeypatch.setattr(rows_module, "BATCH_ROWS", 4)
    batched = rows_module.read_rows(source, path, skip_bad_rows=True)
    assert batched.table.equals(whole.table)
    assert batched.table.column("output").num_chunks == 1
    assert batched.table.num_rows == 42
    assert [b.source_row for b in batched.skipped] == list(range(0, 50, 7))
    assert batched.table.column("source_row").to_pylist()[:7] == [1, 2, 3, 4, 5, 6, 8]
