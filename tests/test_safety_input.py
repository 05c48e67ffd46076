"""Issue 14, finding 4 and the crashes on hostile input: YAML alias bombs, huge values in error
messages, deeply nested JSON, CSV errors that echoed the file."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import alpaca_rows

from cli.main import main
from mbdata.core.limits import json_too_deep, short_repr


def _bomb(levels: int, key: str = "name") -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for i in range(1, levels + 1):
        text += f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]\n"
    return text + f"{key}: *{chr(97 + levels)}\n"


def _err(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err[:500]
    return err


def test_a_yaml_alias_bomb_is_refused(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(8))  # 634 bytes, ~430 million nodes once expanded
    assert len(path.read_bytes()) < 700
    assert main(["recipe", "validate", str(path)]) == 2
    assert "aliases expand to more than 100,000 nodes" in _err(capsys)


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("name: &x [1, *x]\n")
    assert main(["recipe", "validate", str(path)]) == 2
    assert "recursive alias" in _err(capsys)


def test_error_messages_cap_the_value_they_show(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    lol = '["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
    path.write_text(
        f"name: [&a {lol}, &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
        "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], [*c,*c,*c,*c,*c,*c,*c,*c,*c]]\n"
    )
    assert main(["recipe", "validate", str(path)]) == 2
    err = _err(capsys)
    assert len(err) < 400 and "..." in err
    path.write_text("name: x\nversion: 1.0.0\nseed: " + '"' + "9" * 100_000 + '"\n')
    assert main(["recipe", "validate", str(path)]) == 2
    assert len(_err(capsys)) < 400


def test_short_repr_is_bounded_and_cheap():
    nested = [[["x" * 10_000] * 1000] * 1000] * 1000
    assert len(short_repr(nested)) <= 200
    assert short_repr("abc") == "'abc'"
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert len(short_repr(deep)) <= 200


def _deep_jsonl(tmp_path):
    path = tmp_path / "deep.jsonl"
    rows = alpaca_rows(120)
    lines = [json.dumps(r) for r in rows]
    lines.insert(7, '{"instruction": ' + "[" * 100_000 + "]" * 100_000 + ', "output": "x"}')
    lines.insert(9, '{"instruction": "a", "output": "b", "meta": ' + "[" * 150 + "]" * 150 + "}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_deep_json_is_a_bad_row_in_build_audit_and_dedup(tmp_path, capsys):
    """Before: a RecursionError traceback in all three. Now a bad row: build names it in its
    one-line error (and skips it with --skip-bad-rows); audit and dedup skip and list it."""
    path = _deep_jsonl(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "version": "1.0.0",
                "eval": {"size": 5},
                "sources": [{"name": "d", "kind": "jsonl", "path": "deep.jsonl"}],
            }
        )
    )
    assert main(["build", str(recipe), "-o", str(tmp_path / "b"), "--quiet"]) == 2
    err = _err(capsys)
    assert "line 8" in err and "JSON nested more than 100 levels deep" in err
    assert (
        main(["build", str(recipe), "-o", str(tmp_path / "b"), "--quiet", "--skip-bad-rows"]) == 0
    )
    assert main(["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["rows"] == 120 and len(summary["skipped_rows"]) == 2
    assert "nested more than 100" in json.dumps(summary["skipped_rows"])
    assert main(["dedup", str(path), "-o", str(tmp_path / "d")]) == 0
    assert "nested more than 100" in (tmp_path / "d" / "skipped.jsonl").read_text()


def test_a_deep_json_array_file_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "deep.json"
    path.write_text("[" + "[" * 100_000 + "]" * 100_000 + "]")
    assert main(["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 2
    assert "nested more than 100 levels" in _err(capsys)


def test_json_too_deep():
    assert not json_too_deep({"a": [1, {"b": "c"}]})
    value: dict = {}
    for _ in range(101):
        value = {"k": value}
    assert json_too_deep(value) and not json_too_deep(value, limit=200)


def test_csv_errors_do_not_echo_the_file(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("instruction,output\na,b\nSECRET1,SECRET2,SECRET3\n")
    assert main(["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 2
    err = _err(capsys)
    assert "SECRET" not in err and "Expected 2 columns, got 3" in err


@pytest.mark.parametrize("text", ["name: [1, 2]\n", "name: {a: 1}\n"])
def test_plain_yaml_still_loads(tmp_path, capsys, text):
    from mbdata.core.limits import load_yaml

    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert main(["recipe", "validate", str(path)]) == 2
    assert len(_err(capsys)) < 400
