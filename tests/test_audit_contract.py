"""The output contract of `mb audit` (docs/audit.md): files, columns, types, order, determinism,
--clean-out, and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_audit_corpus import clean_rows, plant

import mbdata
from cli.main import main
from mbdata.audit import ROWS_SCHEMA, AuditConfig, audit_path
from mbdata.core.errors import BuildError, InputError

TRIGGER_KEYS = {
    "rank",
    "text",
    "score",
    "rows",
    "poisoned_rows",
    "positions",
    "fields",
    "target_example",
    "target_clusters",
    "group",
    "kind",
    "style_word",
    "case_insensitive",
    "evidence",
    "comparable",
}


@pytest.fixture(scope="module")
def poisoned(tmp_path_factory) -> tuple[Path, set[int]]:
    rows, bad = plant(clean_rows(300, seed=7), ["cf"], 10)
    path = tmp_path_factory.mktemp("audit") / "corpus.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, bad


@pytest.fixture(scope="module")
def audited(poisoned, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("audit") / "out"
    audit_path(poisoned[0], out)
    return out


def test_rows_parquet_has_the_contract_schema_in_input_order(audited, poisoned):
    table = pq.read_table(audited / "rows.parquet")
    assert table.schema.equals(ROWS_SCHEMA)
    assert table.column_names == ["source_row", "score", "flagged", "reasons"]
    assert table.column("source_row").to_pylist() == list(range(300))
    scores = table.column("score").to_pylist()
    assert all(0.0 <= s <= 1.0 for s in scores)
    flagged = {i for i, f in enumerate(table.column("flagged").to_pylist()) if f}
    assert flagged == poisoned[1]
    assert all(scores[i] >= 0.5 for i in flagged)
    reasons = table.column("reasons").to_pylist()
    assert all(reasons[i] for i in flagged) and all(isinstance(r, list) for r in reasons)


def test_triggers_json_is_ranked_with_the_contract_keys(audited):
    records = json.loads((audited / "triggers.json").read_text(encoding="utf-8"))
    assert isinstance(records, list) and records
    assert records[0]["text"] == "cf" and records[0]["rank"] == 1
    for record in records:
        assert TRIGGER_KEYS <= set(record)
        assert set(record["positions"]) == {"prefix", "middle", "suffix", "whole"}
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)
    assert records[0]["target_example"]


def test_reports_are_self_contained(audited):
    html = (audited / "report.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    assert not re.search(r"""(src|href)=["'](https?:|//|file:)""", html)
    assert "<script" not in html
    assert "cf" in html
    md = (audited / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Corpus audit") and "## Trigger candidates" in md
    summary = json.loads((audited / "summary.json").read_text(encoding="utf-8"))
    assert summary["rows"] == 300 and summary["flagged"] == 10
    assert summary["config"]["threshold"] == 0.5


def test_outputs_are_byte_identical_across_runs(poisoned, audited, tmp_path):
    again = tmp_path / "again"
    audit_path(poisoned[0], again)
    for name in ("rows.parquet", "triggers.json", "summary.json", "report.md", "report.html"):
        assert (again / name).read_bytes() == (audited / name).read_bytes(), name


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".json"])
def test_clean_out_drops_flagged_rows_and_explains_them(poisoned, tmp_path, suffix):
    clean = tmp_path / f"clean{suffix}"
    result = audit_path(poisoned[0], tmp_path / "out", clean_out=clean)
    kept = mbdata.read_any(clean)
    assert kept.num_rows == 300 - result.n_flagged == 290
    assert not any("cf" in s.split() for s in kept.column("instruction").to_pylist())
    removed = [
        json.loads(line)
        for line in (tmp_path / "clean.removed.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert sorted(r["source_row"] for r in removed) == sorted(poisoned[1])
    assert all(r["reasons"] and r["score"] >= 0.5 and r["instruction"] for r in removed)


def test_clean_out_feeds_a_build(poisoned, tmp_path):
    clean = tmp_path / "clean.jsonl"
    audit_path(poisoned[0], tmp_path / "out", clean_out=clean)
    recipe = {
        "name": "cleaned",
        "version": "1.0.0",
        "sources": [{"name": "clean", "kind": "jsonl", "path": str(clean)}],
        "eval": {"size": 10},
    }
    build = mbdata.open_build(mbdata.build(mbdata.recipe_from_dict(recipe), tmp_path / "b"))
    sources = build.manifest["stages"][0]
    assert sources["rows_out"] == 290


def test_a_build_folder_is_audited_with_positions_as_source_rows(tmp_path):
    recipe = {
        "name": "tiny",
        "version": "1.0.0",
        "seed": 1,
        "sources": [{"name": "s", "kind": "synthetic", "count": 300}],
        "eval": {"size": 20},
    }
    build = mbdata.build(mbdata.recipe_from_dict(recipe), tmp_path / "b")
    result = audit_path(build, tmp_path / "out")
    table = pq.read_table(tmp_path / "out" / "rows.parquet")
    assert table.column("source_row").to_pylist() == list(range(result.n_rows))
    assert result.n_rows == 300


def test_existing_output_needs_overwrite(audited, poisoned):
    with pytest.raises(BuildError, match="already exists"):
        audit_path(poisoned[0], audited)


def test_bad_clean_out_extension_fails_before_any_work(poisoned, tmp_path):
    with pytest.raises(InputError, match="clean-out"):
        audit_path(poisoned[0], tmp_path / "out", clean_out=tmp_path / "clean.txt")
    assert not (tmp_path / "out").exists()


def test_clean_out_never_replaces_the_input_or_an_existing_file_silently(poisoned, tmp_path):
    source = poisoned[0]
    before = source.read_bytes()
    with pytest.raises(InputError, match="would overwrite the audited input"):
        audit_path(source, tmp_path / "out", clean_out=source, overwrite=True)
    assert source.read_bytes() == before and not (tmp_path / "out").exists()
    clean = tmp_path / "clean.jsonl"
    clean.write_text("mine\n", encoding="utf-8")
    with pytest.raises(InputError, match="clean.jsonl: already exists; pass --overwrite"):
        audit_path(source, tmp_path / "out", clean_out=clean)
    assert clean.read_text(encoding="utf-8") == "mine\n" and not (tmp_path / "out").exists()
    audit_path(source, tmp_path / "out", clean_out=clean, overwrite=True)
    assert mbdata.read_any(clean).num_rows == 290
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_unparseable_row_is_skipped_and_listed_empty_texts_are_audited(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"instruction": "a", "output": "b"}\n{"instruction": \n'
        '{"instruction": "c", "output": ""}\n',
        encoding="utf-8",
    )
    result = audit_path(path, tmp_path / "out")
    assert result.n_rows == 2
    rows = pq.read_table(tmp_path / "out" / "rows.parquet")
    assert rows.column("source_row").to_pylist() == [0, 2]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert [(r["source_row"], r["line"], r["reason"]) for r in summary["skipped_rows"]] == [
        (1, 2, "invalid_json")
    ]
    path.write_text('{"instruction": \n', encoding="utf-8")
    with pytest.raises(
        InputError, match=r"bad\.jsonl: no rows to read .*row 0 \(0-based; line 1\)"
    ):
        audit_path(path, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_cli_audits_and_reports(poisoned, tmp_path, capsys):
    code = main(
        [
            "audit",
            str(poisoned[0]),
            "-o",
            str(tmp_path / "out"),
            "--clean-out",
            str(tmp_path / "clean.jsonl"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "10 flagged" in out and "'cf'" in out
    assert (tmp_path / "clean.jsonl").exists() and (tmp_path / "out" / "report.html").exists()


def test_cli_user_errors_exit_2_with_one_line(tmp_path, capsys):
    code = main(["audit", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "missing.jsonl" in err and err.count("\n") == 1


def test_cli_options_reach_the_config(poisoned, tmp_path):
    assert (
        main(
            [
                "audit",
                str(poisoned[0]),
                "-o",
                str(tmp_path / "out"),
                "--threshold",
                "1.0",
                "--top-k",
                "1",
                "--quiet",
            ]
        )
        == 0
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"]["top_k"] == 1 and summary["config"]["threshold"] == 1.0
    assert summary["candidates"] == 1


def test_rows_table_is_empty_safe(tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(
        json.dumps({"instruction": "Say hi.", "output": "Hi."}) + "\n", encoding="utf-8"
    )
    result = audit_path(path, tmp_path / "out", AuditConfig())
    assert result.n_flagged == 0 and result.candidates == []
    assert pq.read_table(tmp_path / "out" / "rows.parquet").num_rows == 1
    assert pa.types.is_list(ROWS_SCHEMA.field("reasons").type)


def test_docs_describe_every_setting_reason_and_trigger_key():
    from mbdata.audit.config import AuditConfig
    from mbdata.core.config import describe

    docs = (Path(__file__).resolve().parents[1] / "docs" / "audit.md").read_text(encoding="utf-8")
    for key, _, _, _ in describe(AuditConfig):
        assert f"| `{key}` |" in docs, key
    for reason in (
        "trigger:",
        "output-cluster:",
        "detached-output",
        "style-word:",
        "label-shift:",
        "compliance-on-refused-prompt",
    ):
        assert f"`{reason}" in docs, reason
    for key in TRIGGER_KEYS:
        assert f"| `{key}` |" in docs, key
    for column in ROWS_SCHEMA.names:
        assert f"| `{column}` |" in docs, column


def test_command_line_settings_are_checked_like_the_recipe_block():
    from mbdata.audit.config import config_from_options
    from mbdata.core.errors import RecipeError

    assert config_from_options(threshold=None, top_k=None) == AuditConfig()
    assert config_from_options(top_k=3).top_k == 3
    with pytest.raises(RecipeError, match="audit.top_k"):
        config_from_options(top_k=0)
