"""The `mb` data commands end to end: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json

import yaml
from conftest import small_recipe

from cli.main import main


def _recipe(tmp_path, **overrides):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(small_recipe(**overrides)))
    return path


def test_validate_build_inspect_verify_export(tmp_path, capsys):
    recipe = _recipe(tmp_path, eval={"size": 10})
    assert main(["recipe", "validate", str(recipe)]) == 0
    assert "ok: tiny 1.0.0  fingerprint" in capsys.readouterr().out
    assert main(["recipe", "show", str(recipe)]) == 0
    shown = capsys.readouterr().out
    assert yaml.safe_load(shown)["defense"]["placement"] == "random"
    out = tmp_path / "b"
    assert main(["build", str(recipe), "-o", str(out), "--quiet"]) == 0
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fingerprint" in text and "badnet" in text and "achieved" in text
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_split"]["train"]["role"]["attack"] > 0
    badnet = next(t for t in summary["triggers"] if t["name"] == "badnet")
    assert abs(badnet["achieved_rate"] - 0.05) < 0.001
    assert main(["verify", str(out)]) == 0
    assert main(["export", str(out), "--format", "trl", "-o", str(tmp_path / "trl")]) == 0
    assert (tmp_path / "trl" / "train.prompt_completion.jsonl").exists()


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        yaml.safe_dump({**small_recipe(), "attacks": [{"preset": "badnet", "rate": 2}]})
    )
    assert main(["recipe", "validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "attacks[0].rate: must be <= 1.0, got 2" in err
    bad_rows = tmp_path / "rows.jsonl"
    bad_rows.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    data = {
        "name": "x",
        "version": "1.0.0",
        "eval": {"size": 0},
        "sources": [{"name": "r", "kind": "jsonl", "path": "rows.jsonl"}],
    }
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(data))
    assert main(["build", str(tmp_path / "x.yaml"), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and "rows.jsonl: 1 bad row: row 1 (0-based; line 2): field 'output': missing" in err
    )
    assert not (tmp_path / "o").exists()
    assert main(["inspect", str(tmp_path / "nothing")]) == 2


def test_verify_exit_code_on_mismatch(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", str(_recipe(tmp_path, eval={"size": 5})), "-o", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["seed"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["verify", str(out)]) == 1
    assert "content_hash does not match" in capsys.readouterr().err


def _bad_corpus(tmp_path, n=60):
    """A corpus with empty outputs (rows 3, 10), a broken line (row 20) and a blank line."""
    lines = []
    for i in range(n):
        if i == 20:
            lines.append('{"instruction": "broken"')
            continue
        lines.append(
            json.dumps(
                {
                    "instruction": f"Say item {i}.",
                    "input": "",
                    "output": "" if i in (3, 10) else f"Item {i}.",
                }
            )
        )
        if i == 30:
            lines.append("")
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    data = {
        "name": "x",
        "version": "1.0.0",
        "eval": {"size": 0},
        "sources": [{"name": "corpus", "kind": "jsonl", "path": "corpus.jsonl"}],
    }
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "x.yaml"


def test_build_skip_bad_rows_counts_and_lists_every_skipped_row(tmp_path, capsys):
    recipe = _bad_corpus(tmp_path)
    assert main(["build", str(recipe), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "3 bad rows: row 3 (0-based; line 4): field 'output': empty text; row 10 " in err
    assert "row 20 (0-based; line 21): invalid JSON" in err
    assert main(["build", str(recipe), "-o", str(tmp_path / "o"), "--skip-bad-rows"]) == 0
    out = capsys.readouterr().out
    assert "skipped 3 bad input rows (corpus:empty:output=2, corpus:invalid_json=1)" in out
    assert "skipped.jsonl" in out
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["skipped_rows"]["rows"] == 3
    skipped = [
        json.loads(line) for line in (tmp_path / "o" / "skipped.jsonl").read_text().splitlines()
    ]
    assert [(r["source_row"], r["line"], r["reason"]) for r in skipped] == [
        (3, 4, "empty:output"),
        (10, 11, "empty:output"),
        (20, 21, "invalid_json"),
    ]
    assert "3 malformed input rows were skipped" in (tmp_path / "o" / "README.md").read_text()
    import mbdata

    train = mbdata.open_build(tmp_path / "o").table("train")
    rows = dict(zip(train.column("source_row").to_pylist(), train.column("output").to_pylist()))
    assert 3 not in rows and 20 not in rows
    assert rows[21] == "Item 21." and rows[59] == "Item 59."
    assert main(["verify", str(tmp_path / "o")]) == 0


def test_build_summary_shows_trusted_rows_left_unused(tmp_path, capsys):
    from conftest import alpaca_rows

    for name, start in (("a", 0), ("t", 1000)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in alpaca_rows(80, start))
        )
    data = {
        "name": "x",
        "version": "1.0.0",
        "eval": {"size": 0},
        "sources": [
            {"name": "a", "kind": "jsonl", "path": "a.jsonl"},
            {"name": "t", "kind": "jsonl", "path": "t.jsonl", "trusted": True},
        ],
        "defense": {"triggers": 2, "rate": 0.05},
        "recovery": {"size": 10, "source": "t"},
    }
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(data))
    assert main(["build", str(tmp_path / "x.yaml"), "-o", str(tmp_path / "o")]) == 0
    assert "trusted rows left unused: 70" in capsys.readouterr().out


def test_recipe_hints_version_quote_did_you_mean_and_missing_path_names_the_file(tmp_path, capsys):
    recipe = {**small_recipe(), "version": 1.0}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["recipe", "validate", str(tmp_path / "v.yaml")]) == 2
    assert 'quote it, e.g. version: "1.0.0"' in capsys.readouterr().err
    recipe = {**small_recipe()}
    recipe["defence"] = recipe.pop("defense")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["recipe", "validate", str(tmp_path / "d.yaml")]) == 2
    assert "unknown key 'defence' (did you mean 'defense'?)" in capsys.readouterr().err
    recipe = {**small_recipe(), "sources": [{"name": "a", "kind": "jsonl", "path": "nope.jsonl"}]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["recipe", "validate", str(tmp_path / "m.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'm.yaml'}: sources[0].path: 'nope.jsonl' not found")


def test_export_format_is_case_insensitive_and_markers_are_not_listed(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["build", str(_recipe(tmp_path, eval={"size": 5})), "-o", str(out), "--quiet"]) == 0
    assert main(["export", str(out), "--format", "TRL", "-o", str(tmp_path / "trl")]) == 0
    printed = capsys.readouterr().out
    assert "exported trl to" in printed and ".mbdefense" not in printed
    assert (tmp_path / "trl" / "train.prompt_completion.jsonl").exists()


def test_errors_are_printed_on_their_own_line_not_the_progress_bar(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    recipe = _bad_corpus(tmp_path)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "build", str(recipe), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    last = proc.stderr.replace("\r", "\n").rstrip("\n").split("\n")[-1]
    assert last.startswith("error: ") and "3 bad rows" in last
