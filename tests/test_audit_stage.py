"""The recipe's `audit:` block (AuditStage inside a build) and the self-check on an immunization
build: auditing our own MB-Defense build must list its defensive triggers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from test_audit_corpus import clean_rows, plant

import mbdata
from mbdata.audit import AuditConfig, AuditStage, audit_table
from mbdata.core.config import from_mapping, to_mapping
from mbdata.core.errors import RecipeError
from mbdata.io.schema import from_rows, make_row
from mbdata.pipeline import BuildContext


@pytest.fixture(scope="module")
def poisoned_source(tmp_path_factory) -> tuple[Path, set[int]]:
    rows, bad = plant(clean_rows(300, seed=8), ["cf"], 10)
    path = tmp_path_factory.mktemp("stage") / "vendor.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, bad


def _recipe(path: Path, audit: dict) -> dict:
    return {
        "name": "vendor",
        "version": "1.0.0",
        "seed": 2,
        "sources": [{"name": "vendor", "kind": "jsonl", "path": str(path)}],
        "eval": {"size": 20},
        "audit": audit,
    }


def test_audit_block_drops_flagged_rows_and_records_why(poisoned_source, tmp_path):
    path, bad = poisoned_source
    build = mbdata.open_build(
        mbdata.build(mbdata.recipe_from_dict(_recipe(path, {})), tmp_path / "b")
    )
    stage = next(s for s in build.manifest["stages"] if s["name"] == "audit")
    assert stage["dropped"] == {"audit_flagged": len(bad)}
    assert stage["info"]["candidates"][0]["text"] == "cf"
    for split in build.splits:
        assert not any(
            "cf" in s.split() for s in build.table(split).column("instruction").to_pylist()
        )
    rows = build.side_table("audit/rows")
    assert rows.num_rows == 300 and sum(rows.column("flagged").to_pylist()) == len(bad)
    assert build.side_table("audit/triggers").column("text")[0].as_py() == "cf"
    assert build.manifest["recipe"]["audit"]["threshold"] == 0.5


def test_keep_tags_flagged_rows_instead_of_dropping(poisoned_source, tmp_path):
    path, bad = poisoned_source
    build = mbdata.open_build(
        mbdata.build(mbdata.recipe_from_dict(_recipe(path, {"keep": True})), tmp_path / "b")
    )
    stage = next(s for s in build.manifest["stages"] if s["name"] == "audit")
    assert stage["dropped"] == {}
    tagged = [
        r for s in build.splits for r in build.table(s).to_pylist() if "audit=flagged" in r["tags"]
    ]
    assert len(tagged) == len(bad)
    assert all("cf" in r["instruction"].split() for r in tagged)


def test_audit_block_is_strict():
    assert to_mapping(from_mapping(AuditConfig, {}, "audit"))["min_rows"] == 5
    with pytest.raises(RecipeError, match=r"audit\.roles\[0\]"):
        from_mapping(AuditConfig, {"roles": ["vendor"]}, "audit")
    with pytest.raises(RecipeError, match="audit: unknown key 'treshold'"):
        from_mapping(AuditConfig, {"treshold": 0.4}, "audit")
    with pytest.raises(RecipeError, match=r"audit\.threshold: must be <= 1"):
        from_mapping(AuditConfig, {"threshold": 2}, "audit")


def test_stage_leaves_rows_of_other_roles_untouched():
    rows, bad = plant(
        clean_rows(200, seed=4),
        ["mn"],
        8,
        target="Crimson lantern drift swiftly murmur hollow quartz ribbon",
    )
    table = from_rows(
        [
            make_row(
                instruction=r["instruction"],
                input=r["input"],
                output=r["output"],
                source="s",
                source_row=i,
                role="defense" if i in bad else "clean",
            )
            for i, r in enumerate(rows)
        ]
    )
    out, stats = AuditStage(AuditConfig()).run(table, BuildContext(seed=0))
    assert out.num_rows == 200 and stats.dropped == {}
    assert stats.info["audited_rows"] == 200 - len(bad)


def test_self_check_lists_the_defensive_triggers_of_an_immunization_build(tmp_path):
    recipe = {
        "name": "immunized",
        "version": "1.0.0",
        "seed": 3,
        "sources": [{"name": "synth", "kind": "synthetic", "count": 1500}],
        "eval": {"size": 40},
        "attacks": [{"preset": "badnet", "rate": 0.03}],
        "defense": {"triggers": 3, "rate": 0.02},
        "recovery": {"size": 20},
    }
    path = mbdata.build(mbdata.recipe_from_dict(recipe), tmp_path / "b")
    build = mbdata.open_build(path)
    defenders = [t["texts"][0] for t in build.manifest["triggers"] if t["owner"] == "defender"]
    assert len(defenders) == 3
    result = audit_table(build.table("train"))
    confident = {c.text for c in result.candidates if c.score >= result.config.threshold}
    assert set(defenders) <= confident
    assert "cf" in confident
    roles = build.table("train").column("role").to_pylist()
    flagged_roles = {roles[i] for i in range(len(roles)) if result.flagged[i]}
    assert flagged_roles <= {"attack", "defense"}


def test_stage_side_tables_have_stable_schemas(poisoned_source):
    path, _ = poisoned_source
    table = mbdata.read_any(path)
    ctx = BuildContext(seed=0)
    AuditStage(AuditConfig()).run(table, ctx)
    rows = ctx.side_tables["audit/rows"]
    assert rows.column_names == ["id", "source", "source_row", "score", "flagged", "reasons"]
    assert rows.schema.field("reasons").type == pa.list_(pa.field("item", pa.string(), False))
    triggers = ctx.side_tables["audit/triggers"]
    assert triggers.column_names == [
        "rank",
        "text",
        "score",
        "group",
        "rows",
        "poisoned_rows",
        "target_example",
    ]
