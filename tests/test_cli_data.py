"""The `mb` data commands end to end: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json

import yaml

from cli.main import main

from conftest import small_recipe


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
    recipe.write_text(yaml.safe_dump({**small_recipe(), "attacks": [{"preset": "badnet",
                                                                      "rate": 2}]}))
    assert main(["recipe", "validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "attacks[0].rate: must be <= 1.0, got 2" in err
    bad_rows = tmp_path / "rows.jsonl"
    bad_rows.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    data = {"name": "x", "version": "1.0.0", "eval": {"size": 0},
            "sources": [{"name": "r", "kind": "jsonl", "path": "rows.jsonl"}]}
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(data))
    assert main(["build", str(tmp_path / "x.yaml"), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rows.jsonl:2: field 'output': missing" in err
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
