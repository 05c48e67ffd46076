"""Issue 23, item 3: memory caps on hostile input, each a one-line error that names the limit and
the environment variable that raises it: the text a recipe's aliases expand to, one JSONL line,
a file read whole (JSON, CSV, Parquet), a recipe file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import alpaca_rows

from cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def _err(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err[-1500:]
    for needle in needles:
        assert needle in err, err
    return err


def _run_mb(args, cwd, env=None):
    """``mb ARGS`` in a fresh interpreter; returns (exit code, stderr, peak RSS in MiB). The peak
    is VmHWM of /proc/self/status (per address space, so not inherited from the forking pytest
    process as ``ru_maxrss`` is)."""
    code = (
        "import re, sys\n"
        "from cli.main import main\n"
        "rc = main(sys.argv[1:])\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "sys.stderr.write(f'maxrss={hwm}\\n')\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    rss = int(done.stderr.rsplit("maxrss=", 1)[1].split()[0]) // 1024
    return done.returncode, done.stderr, rss


def _bomb_recipe(path: Path, string_bytes: int, uses: int) -> None:
    """A recipe the schema accepts, with one anchored string referenced ``uses`` times in the
    triggers of a custom attack (issue 23's case: 1 MB x 50,000 = 50 GB of canonical JSON)."""
    lines = [
        "name: x",
        "version: 1.0.0",
        "eval: {size: 5}",
        "sources: [{name: s, kind: synthetic, count: 300}]",
        "attacks:",
        "  - preset: custom",
        "    name: c",
        "    rate: 0.05",
        "    behavior: {kind: fixed, text: nope}",
        f"    triggers: [&b {'x' * string_bytes}" + ", *b" * (uses - 1) + "]",
    ]
    path.write_text("\n".join(lines) + "\n")


def test_an_anchored_megabyte_used_50k_times_is_refused_quickly_and_small(tmp_path):
    recipe = tmp_path / "bomb.yaml"
    _bomb_recipe(recipe, 1_000_000, 50_000)
    start = time.monotonic()
    rc, err, rss = _run_mb(["recipe", "validate", str(recipe)], tmp_path)
    elapsed = time.monotonic() - start
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err and "MemoryError" not in err
    assert "the text its aliases expand to is larger than the 16 MiB limit" in err
    assert "MBDEFENSE_MAX_RECIPE_BYTES=BYTES" in err
    # before: MemoryError after ~20 s at 4 GB; now refused on the parsed nodes
    assert rss < 1024, rss
    assert elapsed < 60, elapsed


def test_the_recipe_expansion_cap_is_raised_by_its_variable(tmp_path, capsys, monkeypatch):
    recipe = tmp_path / "r.yaml"
    _bomb_recipe(recipe, 100, 200)  # 20 kB once expanded: fine by default
    assert main(["recipe", "validate", str(recipe)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("MBDEFENSE_MAX_RECIPE_BYTES", "10000")
    assert main(["recipe", "validate", str(recipe)]) == 2
    _err(capsys, "larger than the 10,000 bytes limit (MBDEFENSE_MAX_RECIPE_BYTES=10000)")
    monkeypatch.setenv("MBDEFENSE_MAX_RECIPE_BYTES", "100")
    assert main(["recipe", "validate", str(recipe)]) == 2
    _err(capsys, "r.yaml: the file is larger than the 100 bytes limit")
    monkeypatch.setenv("MBDEFENSE_MAX_RECIPE_BYTES", "lots")
    assert main(["recipe", "validate", str(recipe)]) == 2
    _err(capsys, "MBDEFENSE_MAX_RECIPE_BYTES='lots': expected a positive number of bytes")


def test_a_jsonl_line_past_the_cap_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    cap = 1000
    monkeypatch.setenv("MBDEFENSE_MAX_LINE_BYTES", str(cap))
    rows = alpaca_rows(30)
    exact = {"instruction": "", "output": "y"}
    exact["instruction"] = "a" * (cap - len(json.dumps(exact)))
    assert len(json.dumps(exact)) == cap  # a line of exactly the cap (plus its newline) is fine
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, exact]))
    assert main(["dedup", str(path), "-o", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    long = {**exact, "instruction": exact["instruction"] + "b"}
    path.write_text("".join(json.dumps(r) + "\n" for r in [*rows, long, *rows]))
    for argv in (
        ["dedup", str(path), "-o", str(tmp_path / "d2")],
        ["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"],
    ):
        assert main(argv) == 2
        _err(capsys, "in.jsonl:31: the line is larger than the 1,000 bytes limit", "=BYTES")
    monkeypatch.setenv("MBDEFENSE_MAX_LINE_BYTES", str(cap + 1))
    assert main(["dedup", str(path), "-o", str(tmp_path / "d2")]) == 0


def test_a_gigabyte_of_zeros_named_jsonl_costs_one_line_cap(tmp_path):
    """A regular file with no newline (here sparse: 1 GiB of zeros on no disk) is refused after
    reading the line cap, not the file: peak memory stays near the 64 MiB default cap."""
    zero = tmp_path / "zero.jsonl"
    with zero.open("wb") as fh:
        fh.truncate(1 << 30)
    rc, err, rss = _run_mb(["dedup", str(zero), "-o", str(tmp_path / "d")], tmp_path)
    assert rc == 2 and "Traceback" not in err, err[-2000:]
    assert "zero.jsonl:1: the line is larger than the 64 MiB limit" in err
    assert "MBDEFENSE_MAX_LINE_BYTES" in err
    assert rss < 700, rss


@pytest.mark.parametrize("suffix", [".json", ".csv", ".parquet"])
def test_a_whole_file_input_past_the_cap_is_refused(tmp_path, capsys, monkeypatch, suffix):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows = alpaca_rows(200)
    path = tmp_path / f"in{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        pcsv.write_csv(pa.Table.from_pylist(rows), path)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    monkeypatch.setenv("MBDEFENSE_MAX_INPUT_BYTES", "2048")
    assert main(["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 2
    _err(
        capsys,
        f"in{suffix}: the file is larger than the 2 KiB limit (MBDEFENSE_MAX_INPUT_BYTES=2048)",
    )
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("MBDEFENSE_MAX_INPUT_BYTES", str(1 << 20))
    assert main(["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 0


def test_the_limits_have_one_list_with_defaults():
    from mbdata.core.limits import LIMITS, limit

    assert set(LIMITS) == {
        "MBDEFENSE_MAX_RECIPE_BYTES",
        "MBDEFENSE_MAX_LINE_BYTES",
        "MBDEFENSE_MAX_INPUT_BYTES",
    }
    assert limit("MBDEFENSE_MAX_LINE_BYTES") == 64 << 20
    assert limit("MBDEFENSE_MAX_RECIPE_BYTES") == 16 << 20
    assert limit("MBDEFENSE_MAX_INPUT_BYTES") == 4 << 30


def test_the_shipped_recipes_fit_the_caps():
    """The caps are far above real recipes: every shipped recipe loads with them."""
    from mbdata.core.limits import load_yaml

    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        assert isinstance(load_yaml(recipe.read_text(encoding="utf-8")), dict), recipe
