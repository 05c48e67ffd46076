"""Issue 14, finding 6: recipe code hooks are resolved and checked at validate, fingerprinted by
their module's bytes, announced in `mb build --help`, and refused by --no-hooks."""

from __future__ import annotations

import yaml

from cli.main import main


def _recipe(tmp_path, function):
    path = tmp_path / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "h",
                "version": "1.0.0",
                "eval": {"size": 10},
                "sources": [{"name": "s", "kind": "synthetic", "count": 300}],
                "attacks": [
                    {
                        "preset": "custom",
                        "name": "rw",
                        "triggers": ["zq"],
                        "rate": 0.05,
                        "behavior": {"kind": "rewrite", "function": function},
                    }
                ],
            }
        )
    )
    return path


def _err(capsys, needle):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err, err


def test_validate_refuses_os_system_and_other_non_hooks(tmp_path, capsys):
    for function, needle in (
        ("os:system", "standard-library"),
        ("os.path:join", "standard-library"),
        ("hk:one", "cannot be called as one(row, rng)"),
        ("hk:imported", "no Python function 'imported' defined in it"),
        ("hk:NUMBER", "has no callable 'NUMBER'"),
    ):
        (tmp_path / "hk.py").write_text(
            "from json import dumps as imported\nNUMBER = 3\ndef one(row):\n    return 'x'\n"
        )
        assert main(["recipe", "validate", str(_recipe(tmp_path, function))]) == 2, function
        _err(capsys, needle)
    assert (
        main(["build", str(_recipe(tmp_path, "os:system")), "-o", str(tmp_path / "o"), "--quiet"])
        == 2
    )
    _err(capsys, "standard-library")
    assert not (tmp_path / "o").exists()


def test_the_hook_module_bytes_are_in_the_fingerprint(tmp_path, capsys):
    (tmp_path / "hk_fp.py").write_text("def ok(row, rng):\n    return 'a'\n")
    recipe = _recipe(tmp_path, "hk_fp:ok")
    assert main(["recipe", "validate", str(recipe)]) == 0
    first = capsys.readouterr().out.split()[-1]
    (tmp_path / "hk_fp.py").write_text("def ok(row, rng):\n    return 'b'\n")
    assert main(["recipe", "validate", str(recipe)]) == 0
    second = capsys.readouterr().out.split()[-1]
    assert first != second and len(first) == len(second) == 64


def test_no_hooks_refuses_and_help_warns(tmp_path, capsys):
    (tmp_path / "hk_nh.py").write_text("def ok(row, rng):\n    return 'a'\n")
    recipe = _recipe(tmp_path, "hk_nh:ok")
    assert main(["build", str(recipe), "-o", str(tmp_path / "o"), "--quiet", "--no-hooks"]) == 2
    _err(capsys, "refused by --no-hooks")
    assert not (tmp_path / "o").exists()
    assert main(["build", str(recipe), "-o", str(tmp_path / "o"), "--quiet"]) == 0
    assert main(["build", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "RUNS THAT CODE" in text and "--no-hooks" in text
