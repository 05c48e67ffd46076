"""The dedup block in recipes and builds, the standalone `mb dedup` command, the config block."""

from __future__ import annotations

import json
import random
import re

import pytest

import mbdata
from cli.main import main
from mbdata.core.config import describe, from_mapping, to_mapping
from mbdata.core.errors import RecipeError
from mbdata.dedup import DedupConfig
from mbdata.recipe import recipe_from_dict

WORDS = [
    f"{a}{b}"
    for a in ("ka", "lo", "mi", "nu", "pe", "ri", "so", "tu", "va", "ze")
    for b in ("bar", "cen", "dol", "fim", "gos", "hut", "jex", "lor", "mav", "pin")
]


def words(seed: int, n: int) -> str:
    return " ".join(random.Random(seed).choices(WORDS, k=n))


def prompt(i: int) -> str:
    return f"task {i}: " + words(i, 30)


def corpus_rows() -> list[dict]:
    rows = [
        {"instruction": prompt(i), "input": "", "output": words(1000 + i, 10)} for i in range(64)
    ]
    rows += [{**rows[i], "instruction": rows[i]["instruction"].upper()} for i in range(0, 8)]
    # Same prompt with one word changed and a different answer: not a duplicate row (the answers
    # differ), but a near match of the prompt if the original is held out for evaluation.
    rows += [
        {
            "instruction": prompt(i).replace(":", ": changed", 1),
            "input": "",
            "output": words(2000 + i, 10),
        }
        for i in range(8, 40)
    ]
    return rows


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dedup-build")
    (tmp / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus_rows()))
    data = {
        "name": "d",
        "version": "1.0.0",
        "seed": 2,
        "eval": {"size": 24},
        "sources": [{"name": "a", "kind": "jsonl", "path": "corpus.jsonl"}],
        "dedup": {},
    }
    out = mbdata.build(recipe_from_dict(data, base_dir=tmp), tmp / "out")
    again = mbdata.build(recipe_from_dict(data, base_dir=tmp), tmp / "again")
    return mbdata.open_build(out), mbdata.open_build(again)


def test_dedup_stage_runs_in_builds_and_is_explained(built):
    b, _ = built
    stages = {s["name"]: s for s in b.manifest["stages"]}
    assert stages["dedup"]["dropped"] == {"exact_duplicate": 8}
    assert stages["dedup"]["info"]["bands"] == 16
    clusters = b.side_table("dedup/clusters")
    assert clusters.num_rows == 8 and set(clusters.column("reason").to_pylist()) == {
        "exact_duplicate"
    }
    assert b.manifest["recipe"]["dedup"]["decontaminate_threshold"] == 0.7


def test_no_training_prompt_nearly_matches_an_eval_prompt(built):
    b, _ = built
    from mbdata.dedup import shingles

    evals = [shingles(r["instruction"]) for r in b.table("eval_clean").to_pylist()]
    assert len(evals) == 24
    holdout = next(s for s in b.manifest["stages"] if s["name"] == "holdout")
    assert holdout["dropped"].get("contaminated_near", 0) >= 1
    for r in b.table("train").to_pylist():
        mine = shingles(r["instruction"])
        assert all(len(mine & e) / len(mine | e) < 0.7 for e in evals)
    assert "dedup/decontamination" in b.manifest["side_tables"]


def test_recovery_and_pretrain_sizes_hold_with_decontamination(tmp_path):
    # Near-matches are dropped before the recovery and pretrain draws, not after them: the
    # corpus has 32 near-copies of prompts, many of them held out, and the sizes still hold.
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus_rows()))
    data = {
        "name": "d",
        "version": "1.0.0",
        "seed": 2,
        "eval": {"size": 24},
        "sources": [{"name": "a", "kind": "jsonl", "path": "corpus.jsonl"}],
        "dedup": {},
        "defense": {"triggers": 1, "rate": 0.02},
        "recovery": {"size": 30, "eval_fraction": 0.2},
        "pretrain": {"size": 10},
    }
    b = mbdata.open_build(mbdata.build(recipe_from_dict(data, base_dir=tmp_path), tmp_path / "o"))
    holdout = next(s for s in b.manifest["stages"] if s["name"] == "holdout")
    assert holdout["dropped"].get("contaminated_near", 0) >= 1
    assert b.table("recovery").num_rows + b.table("recovery_eval").num_rows == 30
    assert b.table("pretrain").num_rows == 10


def test_rebuild_is_identical(built):
    b, again = built
    assert b.manifest["content_hash"] == again.manifest["content_hash"]
    assert (b.path / "dedup/clusters.arrow").read_bytes() == (
        again.path / "dedup/clusters.arrow"
    ).read_bytes()


def test_inspect_shows_dedup(built, capsys):
    b, _ = built
    assert main(["inspect", str(b.path)]) == 0
    out = capsys.readouterr().out
    assert "dedup" in out and "exact_duplicate=8" in out


# ------------------------------------------------------------------------------------ mb dedup


@pytest.fixture
def files(tmp_path):
    rows = corpus_rows()
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = {"instruction": prompt(3), "output": "x"}
    (tmp_path / "ref.jsonl").write_text(json.dumps(reference) + "\n")
    return tmp_path


def test_mb_dedup_writes_a_build_folder(files, capsys):
    out = files / "out"
    assert (
        main(
            [
                "dedup",
                str(files / "in.jsonl"),
                "-o",
                str(out),
                "--reference",
                str(files / "ref.jsonl"),
            ]
        )
        == 0
    )
    b = mbdata.open_build(out)
    assert b.manifest["kind"] == "dedup" and len(b.manifest["fingerprint"]) == 64
    assert [s["name"] for s in b.manifest["stages"]] == ["decontaminate", "dedup"]
    # prompt(3) is in the reference: it and its upper-case copy go; 8 - 1 exact copies remain.
    assert b.manifest["stages"][0]["dropped"] == {"contaminated_exact": 2}
    assert b.manifest["stages"][1]["dropped"] == {"exact_duplicate": 7}
    assert b.manifest["splits"]["train"]["rows"] == len(corpus_rows()) - 9
    assert b.side_table("dedup/clusters").num_rows == 7
    assert mbdata.verify_build(out) == []
    assert "dedup: " in capsys.readouterr().out


def test_mb_dedup_keep_all_and_options(files):
    out = files / "tagged"
    assert (
        main(
            [
                "dedup",
                str(files / "in.jsonl"),
                "-o",
                str(out),
                "--keep-all",
                "--fields",
                "prompt",
                "--threshold",
                "0.7",
                "--ngram",
                "3",
            ]
        )
        == 0
    )
    b = mbdata.open_build(out)
    assert b.manifest["splits"]["train"]["rows"] == len(corpus_rows())
    config = b.manifest["dedup"]
    assert (config["keep_all"], config["fields"], config["threshold"], config["ngram"]) == (
        True,
        "prompt",
        0.7,
        3,
    )
    tagged = [t for t in b.table("train").column("tags").to_pylist() if t]
    # exact copies (8) and the one-word prompt edits (32) are tagged, with their representatives
    assert sum("dup_role=representative" in t for t in tagged) == 40
    assert len(tagged) == 80


def test_mb_dedup_errors_are_one_line(files, capsys):
    assert main(["dedup", str(files / "missing.jsonl"), "-o", str(files / "o")]) == 2
    assert main(["dedup", str(files / "in.jsonl"), "-o", str(files / "o"), "--num-perm", "1"]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl: not found" in err and "dedup.num_perm: must be >= 2" in err
    assert not (files / "o").exists()
    (files / "cfg.yaml").write_text("dedup:\n  treshold: 0.5\n")
    assert (
        main(
            [
                "dedup",
                str(files / "in.jsonl"),
                "-o",
                str(files / "o"),
                "--config",
                str(files / "cfg.yaml"),
            ]
        )
        == 2
    )
    assert "unknown key 'treshold'" in capsys.readouterr().err


def test_mb_dedup_reads_a_config_file_and_flags_override_it(files):
    (files / "cfg.yaml").write_text("dedup:\n  near: false\n  fields: output\n  verify: true\n")
    out = files / "o"
    assert (
        main(
            [
                "dedup",
                str(files / "in.jsonl"),
                "-o",
                str(out),
                "--config",
                str(files / "cfg.yaml"),
                "--no-verify",
            ]
        )
        == 0
    )
    config = mbdata.open_build(out).manifest["dedup"]
    assert (config["near"], config["fields"], config["verify"]) == (False, "output", False)


# ----------------------------------------------------------------------------------- the block


def test_config_block_validation():
    assert from_mapping(DedupConfig, {}, "dedup") == DedupConfig()
    assert from_mapping(
        DedupConfig, to_mapping(DedupConfig(shingle="char")), "dedup"
    ) == DedupConfig(shingle="char")
    cases = {
        "bands": ({"bands": 8}, "dedup.rows: give `bands` and `rows` together"),
        "product": ({"bands": 20, "rows": 8}, "bands * rows = 160 exceeds num_perm = 128"),
        "type": ({"threshold": "high"}, "dedup.threshold: expected a number"),
        "range": ({"threshold": 0}, "dedup.threshold: must be > 0.0"),
        "enum": ({"fields": "everything"}, "dedup.fields: 'everything' is not allowed"),
        "weight": ({"false_negative_weight": 1.0}, "must be < 1.0"),
    }
    for data, message in cases.values():
        with pytest.raises(RecipeError, match=re.escape(message)):
            from_mapping(DedupConfig, data, "dedup")


def test_recipe_dedup_block_is_a_dedup_config():
    data = {
        "name": "d",
        "version": "1.0.0",
        "sources": [{"name": "s", "kind": "synthetic", "count": 10}],
        "dedup": {"threshold": 0.9, "keep_all": True},
    }
    recipe = recipe_from_dict(data).recipe
    assert isinstance(recipe.dedup, DedupConfig) and recipe.dedup.threshold == 0.9
    with pytest.raises(RecipeError, match="dedup: unknown key 'shingles'"):
        recipe_from_dict({**data, "dedup": {"shingles": "word"}})


def test_docs_describe_every_key():
    from pathlib import Path

    text = (Path(__file__).parent.parent / "docs" / "dedup.md").read_text()
    for key, *_ in describe(DedupConfig):
        assert f"`{key}`" in text, key


def test_mb_dedup_is_reproducible(files):
    """Wall-clock timings live in timings.json, so two runs have the same manifest hash."""
    for name in ("a", "b"):
        assert main(["dedup", str(files / "in.jsonl"), "-o", str(files / name)]) == 0
    a, b = (mbdata.open_build(files / n).manifest for n in ("a", "b"))
    assert "timings" not in a and a["content_hash"] == b["content_hash"]
    assert (files / "a" / "timings.json").is_file()
