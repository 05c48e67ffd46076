"""Issue 13, finding 1: every row-level output names rows by their 0-based index in the input as
read, skipped rows included: audit rows.parquet, NAME.removed.jsonl and the report, build
provenance, dedup clusters and decontamination records."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
from test_audit_corpus import clean_rows, plant

from mbdata.audit import audit_path


def _poisoned_file_with_bad_rows(tmp_path):
    rows, bad = plant(clean_rows(300, seed=7), ["cf"], 12)
    lines = [json.dumps(r) for r in rows]
    empty = [i for i in range(5, 300, 40) if i not in bad][:3]
    for i in empty:
        lines[i] = json.dumps({**rows[i], "output": ""})
    broken = next(i for i in range(100, 300) if i not in bad and i not in empty)
    lines[broken] = '{"instruction": "cut off'
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, bad, empty, broken, rows


def test_audit_source_rows_count_rows_as_read_with_empty_and_broken_rows(tmp_path):
    path, bad, _empty, broken, rows = _poisoned_file_with_bad_rows(tmp_path)
    clean = tmp_path / "clean.jsonl"
    result = audit_path(path, tmp_path / "out", clean_out=clean)
    table = pq.read_table(tmp_path / "out" / "rows.parquet")
    numbers = table.column("source_row").to_pylist()
    assert numbers == [i for i in range(300) if i != broken]  # empty outputs are audited
    flagged = {n for n, f in zip(numbers, table.column("flagged").to_pylist()) if f}
    assert flagged == bad
    removed = [
        json.loads(line)
        for line in (tmp_path / "clean.removed.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {r["source_row"] for r in removed} == bad
    for r in removed:  # the number points at the poisoned row
        assert r["instruction"] == rows[r["source_row"]]["instruction"]
    report = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    flagged_part = report.split("## Flagged rows", 1)[1]
    shown = {
        int(line.split("|")[1])
        for line in flagged_part.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    assert shown and shown <= bad
    assert [s.source_row for s in result.skipped] == [broken]
