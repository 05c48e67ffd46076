"""Issue 13, finding 8: a messy corpus (empty outputs, a row without its output column, a broken
line, a blank line) and a prompts-only reference run through build, audit and dedup, and every
row-level output names the right input row (0-based, as read, skipped rows included)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
from test_audit_corpus import clean_rows, plant

import mbdata
from cli.main import main

EMPTY, NO_OUTPUT, BROKEN, CONTAMINATED = (7, 123), 50, 200, (250, 260)


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    rows, poisoned = plant(clean_rows(300, seed=11), ["cf"], 12, seed=5)
    poisoned = set(poisoned)
    taken = set(EMPTY) | {NO_OUTPUT, BROKEN} | set(CONTAMINATED)
    assert not poisoned & taken
    for i, r in enumerate(rows):
        r["instruction"] = f"{r['instruction']} (case {i})"  # every prompt names its row
    lines = []
    for i, r in enumerate(rows):
        if i in EMPTY:
            r = {**r, "output": ""}
        if i == NO_OUTPUT:
            r = {k: v for k, v in r.items() if k != "output"}
        lines.append('{"instruction": "cut off' if i == BROKEN else json.dumps(r))
        if i == 100:
            lines.append("")  # a blank line is not a row
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ref = [
        json.dumps({"prompt": "An unrelated benchmark question about tides and moons"}),
        "{not json",
        json.dumps({"prompt": rows[CONTAMINATED[0]]["instruction"]}),
        json.dumps({"prompt": rows[CONTAMINATED[1]]["instruction"]}),
    ]
    (root / "bench.jsonl").write_text("\n".join(ref) + "\n", encoding="utf-8")
    recipe = {
        "name": "messy",
        "version": "1.0.0",
        "seed": 2,
        "sources": [{"name": "corpus", "kind": "jsonl", "path": "corpus.jsonl"}],
        "eval": {"size": 20, "attack_triggers": False},
        "defense": {"triggers": 2, "rate": 0.02},
        "recovery": {"size": 20},
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return root, rows, poisoned


def _instruction_of(rows, n):
    return rows[n]["instruction"]


def test_build_is_strict_then_skips_and_keeps_row_numbers(messy, capsys):
    root, rows, _ = messy
    assert main(["build", str(root / "recipe.yaml"), "-o", str(root / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "4 bad rows: row 7 (0-based; line 8): field 'output': empty text; "
        "row 50 (0-based; line 51): field 'output': missing; "
        "row 123 (0-based; line 125): field 'output': empty text; "
        "row 200 (0-based; line 202): invalid JSON" in err
    )
    assert main(["build", str(root / "recipe.yaml"), "-o", str(root / "b"), "--skip-bad-rows"]) == 0
    assert "skipped 4 bad input rows" in capsys.readouterr().out
    skipped = [json.loads(x) for x in (root / "b" / "skipped.jsonl").read_text().splitlines()]
    assert [r["source_row"] for r in skipped] == [7, 50, 123, 200]
    b = mbdata.open_build(root / "b")
    clean = [r for r in b.table("train").to_pylist() if r["role"] == "clean"]
    assert len(clean) > 200
    for r in clean + list(b.table("eval_clean").to_pylist()):
        assert r["instruction"] == _instruction_of(rows, r["source_row"])
    assert main(["inspect", str(root / "b"), "-n", "0"]) == 0
    assert (
        "skipped input rows: 4 (corpus:empty:output=2, corpus:invalid_json=1, "
        "corpus:missing:output=1), each listed in skipped.jsonl"
    ) in capsys.readouterr().out
    used = {r["source_row"] for s in b.splits for r in b.table(s).to_pylist()}
    assert not used & {7, 50, 123, 200}


def test_audit_processes_empty_outputs_and_names_poisoned_rows(messy, capsys):
    root, rows, poisoned = messy
    assert (
        main(
            [
                "audit",
                str(root / "corpus.jsonl"),
                "-o",
                str(root / "audit"),
                "--clean-out",
                str(root / "clean.jsonl"),
                "--quiet",
            ]
        )
        == 0
    )
    assert "skipped 1 unparseable input row: row 200 (0-based; line 202)" in capsys.readouterr().err
    table = pq.read_table(root / "audit" / "rows.parquet")
    numbers = table.column("source_row").to_pylist()
    assert numbers == [i for i in range(300) if i != BROKEN]  # empty and missing: audited
    flagged = {n for n, f in zip(numbers, table.column("flagged").to_pylist()) if f}
    assert flagged == poisoned
    removed = [json.loads(x) for x in (root / "clean.removed.jsonl").read_text().splitlines()]
    assert {r["source_row"] for r in removed} == poisoned
    assert all(r["instruction"] == _instruction_of(rows, r["source_row"]) for r in removed)


def test_dedup_with_a_prompts_only_reference_names_rows_in_both_files(messy, capsys):
    root, rows, _ = messy
    assert (
        main(
            [
                "dedup",
                str(root / "corpus.jsonl"),
                "-o",
                str(root / "d"),
                "--reference",
                str(root / "bench.jsonl"),
                "--reference-field",
                "instruction=prompt",
                "--reference-threshold",
                "0.95",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "skipped 2 unparseable input rows" in err
    b = mbdata.open_build(root / "d")
    side = b.side_table("dedup/decontamination").to_pylist()
    assert [(r["source_row"], r["reference_row"]) for r in side] == [(250, 2), (260, 3)]
    kept = b.table("train").column("source_row").to_pylist()
    assert kept == [i for i in range(300) if i not in (BROKEN, *CONTAMINATED)]
    for r in b.table("train").to_pylist():
        assert r["instruction"] == _instruction_of(rows, r["source_row"])
    skipped = [json.loads(x) for x in (root / "d" / "skipped.jsonl").read_text().splitlines()]
    assert [(r["source"], r["source_row"]) for r in skipped] == [
        ("corpus", 200),
        ("reference:bench", 1),
    ]


def test_a_column_missing_from_the_file_is_one_schema_error(messy, capsys):
    root, rows, _ = messy
    (root / "noout.jsonl").write_text(
        "".join(
            json.dumps({"instruction": r["instruction"], "response": "x"}) + "\n" for r in rows[:30]
        ),
        encoding="utf-8",
    )
    recipe = yaml.safe_load((root / "recipe.yaml").read_text())
    recipe["sources"][0]["path"] = "noout.jsonl"
    (root / "noout.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    assert (
        main(
            ["build", str(root / "noout.yaml"), "-o", str(root / "n"), "--skip-bad-rows", "--quiet"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "required column 'output' missing from the first 30 rows" in err
    assert "columns found: 'instruction', 'response'" in err
    assert "in the recipe's source: `fields: {output: COLUMN}`" in err and "bad row" not in err
