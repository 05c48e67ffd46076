"""Issue 23, the input side (items 6, 8, 11, 12, 13): hostile or changing inputs end in a bad row or
a one-line exit-2 error, never a traceback, a hang, a silent exit 0, or a manifest that describes
data the run did not read."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest
import yaml
from conftest import alpaca_rows, small_recipe

from cli.main import main

LONE = b'{"instruction": "bad \\ud800 text", "output": "y"}'
PAIR = b'{"instruction": "emoji \\ud83d\\ude00 fine", "output": "y"}'
HUGE_INT = b'{"instruction": "x", "output": "y", "n": ' + b"7" * 5000 + b"}"


def _err(capsys, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-1500:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _recipe(tmp_path, data_name, **extra):
    path = tmp_path / "r.yaml"
    kind = "json" if data_name.endswith(".json") else "jsonl"
    recipe = {
        "name": "x",
        "version": "1.0.0",
        "eval": {"size": 5},
        "sources": [{"name": "d", "kind": kind, "path": data_name}],
        **extra,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


# --- item 11: lone surrogates, huge integers, a deep first line --------------------------------
@pytest.fixture
def hostile_jsonl(write_jsonl):
    return write_jsonl("in.jsonl", alpaca_rows(150), [LONE, PAIR, HUGE_INT])


def test_lone_surrogate_and_huge_int_rows_are_bad_rows_in_dedup_and_audit(
    hostile_jsonl, tmp_path, capsys
):
    assert main(["dedup", str(hostile_jsonl), "-o", str(tmp_path / "d")]) == 0
    skipped = [json.loads(x) for x in (tmp_path / "d" / "skipped.jsonl").read_text().splitlines()]
    assert [(s["line"], s["reason"], s["field"]) for s in skipped] == [
        (151, "invalid_unicode", "instruction"),
        (153, "invalid_json", None),
    ]
    assert "4,300 digits" in skipped[1]["detail"]
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["splits"]["train"]["rows"] == 151  # the valid surrogate pair is kept
    assert main(["audit", str(hostile_jsonl), "-o", str(tmp_path / "a"), "--quiet"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["rows"] == 151 and len(summary["skipped_rows"]) == 2


def test_build_names_the_bad_rows_and_skips_them_on_request(hostile_jsonl, tmp_path, capsys):
    recipe = _recipe(tmp_path, "in.jsonl")
    assert main(["build", str(recipe), "-o", str(tmp_path / "b"), "--quiet"]) == 2
    _err(capsys, "2 bad rows", "line 151", "field 'instruction'", "not valid Unicode", "4,300")
    assert not (tmp_path / "b").exists()
    argv = ["build", str(recipe), "-o", str(tmp_path / "b"), "--quiet", "--skip-bad-rows"]
    assert main(argv) == 0
    assert "invalid_unicode" in (tmp_path / "b" / "skipped.jsonl").read_text()


def test_a_json_file_with_a_lone_surrogate_or_a_huge_int(tmp_path, capsys):
    rows = json.dumps(alpaca_rows(60)).encode()
    (tmp_path / "s.json").write_bytes(rows[:-1] + b", " + LONE + b"]")
    assert main(["audit", str(tmp_path / "s.json"), "-o", str(tmp_path / "a"), "--quiet"]) == 0
    assert "invalid_unicode" in (tmp_path / "a" / "summary.json").read_text()
    recipe = _recipe(tmp_path, "s.json")
    assert main(["build", str(recipe), "-o", str(tmp_path / "b"), "--quiet"]) == 2
    _err(capsys, "row 60", "not valid Unicode")
    (tmp_path / "n.json").write_bytes(b"[" + HUGE_INT + b"]")
    assert main(["dedup", str(tmp_path / "n.json"), "-o", str(tmp_path / "d")]) == 2
    _err(capsys, "n.json: invalid JSON: an integer with more than 4,300 digits")


def test_a_deeply_nested_first_line_is_a_bad_row_not_a_recursion_error(tmp_path, capsys):
    path = tmp_path / "deep.jsonl"
    first = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(first + b"\n" + b"\n".join(json.dumps(r).encode() for r in alpaca_rows(30)))
    assert main(["dedup", str(path), "-o", str(tmp_path / "d")]) == 0
    assert "nested more than 100" in (tmp_path / "d" / "skipped.jsonl").read_text()
    path.write_bytes(HUGE_INT.replace(b"{", b"[{", 1) + b"]\n")  # a huge int in a first-line array
    assert main(["audit", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 2
    _err(capsys, "no rows to read", "4,300 digits")


def test_a_manifest_with_a_huge_integer_is_a_one_line_error(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(small_recipe(sources=[{"name": "s", "kind": "synthetic", "count": 300}]))
    )
    bld = tmp_path / "bld"
    assert main(["build", str(recipe), "-o", str(bld), "--quiet"]) == 0
    text = (bld / "manifest.json").read_text()
    (bld / "manifest.json").write_text(text.replace("{", '{"zz": ' + "1" * 5000 + ",", 1))
    for argv in (
        ["verify", str(bld)],
        ["inspect", str(bld)],
        ["export", str(bld), "--format", "jsonl", "-o", str(tmp_path / "e")],
    ):
        assert main(argv) == 2, argv
        _err(capsys, "manifest.json: unreadable: an integer with more than 4,300 digits")


# --- item 12: non-regular inputs ---------------------------------------------------------------
def _commands(src, tmp_path):
    return [
        ["dedup", str(src), "-o", str(tmp_path / "d")],
        ["audit", str(src), "-o", str(tmp_path / "a"), "--quiet"],
        ["dedup", str(tmp_path / "ok.jsonl"), "-o", str(tmp_path / "d"), "--reference", str(src)],
    ]


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_named_jsonl_is_refused_at_once(device, tmp_path, capsys, write_jsonl):
    write_jsonl("ok.jsonl", alpaca_rows(20))
    link = tmp_path / "zero.jsonl"
    link.symlink_to(device)
    for argv in _commands(link, tmp_path):
        assert main(argv) == 2, argv
        _err(capsys, "zero.jsonl: is a character device, not a regular file")
    assert not (tmp_path / "d").exists() and not (tmp_path / "a").exists()


def test_a_fifo_input_is_refused_not_waited_on(tmp_path, capsys, write_jsonl):
    """Before: open() blocked forever waiting for a writer. A watchdog fails the test instead of
    hanging the suite if the refusal ever regresses."""
    write_jsonl("ok.jsonl", alpaca_rows(20))
    fifo = tmp_path / "f.jsonl"
    os.mkfifo(fifo)
    watchdog = threading.Timer(60, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    watchdog.start()
    try:
        for argv in _commands(fifo, tmp_path):
            assert main(argv) == 2, argv
            _err(capsys, "f.jsonl: is a FIFO (named pipe), not a regular file")
        recipe = _recipe(tmp_path, "f.jsonl")
        assert main(["recipe", "validate", str(recipe)]) == 2
        _err(capsys, "sources[0].path", "not a regular file")
        os.mkfifo(tmp_path / "fifo.yaml")
        assert main(["recipe", "validate", str(tmp_path / "fifo.yaml")]) == 2
        _err(capsys, "fifo.yaml: is a FIFO")
    finally:
        watchdog.cancel()


def test_recipe_validate_refuses_a_device_source(tmp_path, capsys):
    recipe = _recipe(tmp_path, "/dev/zero")
    assert main(["recipe", "validate", str(recipe)]) == 2
    _err(capsys, "sources[0].path: '/dev/zero' is not a regular file")
    assert main(["build", str(recipe), "-o", str(tmp_path / "b"), "--quiet"]) == 2
    _err(capsys, "not a regular file")


# --- item 6: an input that changes while it is read ----------------------------------------------
@pytest.fixture
def rewrite_mid_read(monkeypatch):
    """Make the JSONL reader rewrite its own input after 50 lines (a user regenerating the corpus
    in place while mb reads it): same row count, different texts."""
    import mbdata.io.readers.jsonl as readers  # the JSONL container reads through bounded_lines

    real = readers.bounded_lines

    def lines(fh, path):
        for n, raw in enumerate(real(fh, path)):
            if n == 50:
                rows = [{**r, "output": r["output"] + " (v2)"} for r in alpaca_rows(400)]
                with open(path, "w") as out:  # in place: same inode
                    out.write("".join(json.dumps(r) + "\n" for r in rows))
            yield raw

    monkeypatch.setattr(readers, "bounded_lines", lines)


@pytest.mark.parametrize("cmd", ["dedup", "audit", "build"])
def test_an_input_rewritten_during_the_read_is_refused(
    cmd, rewrite_mid_read, tmp_path, capsys, write_jsonl
):
    src = write_jsonl("in.jsonl", alpaca_rows(400))
    out = tmp_path / "out"
    argv = {
        "dedup": ["dedup", str(src), "-o", str(out)],
        "audit": ["audit", str(src), "-o", str(out), "--quiet"],
        "build": ["build", str(_recipe(tmp_path, "in.jsonl")), "-o", str(out), "--quiet"],
    }[cmd]
    assert main(argv) == 2
    _err(capsys, "in.jsonl: the file changed while it was read")
    assert not out.exists()


def test_an_input_changed_between_read_and_hash_is_refused(tmp_path, write_jsonl):
    from mbdata.core.errors import InputError
    from mbdata.io.inputfile import file_state
    from mbdata.io.manifest import input_record

    src = write_jsonl("in.jsonl", alpaca_rows(10))
    state = file_state(src)
    assert input_record(src, "in.jsonl", state)["bytes"] == src.stat().st_size
    with src.open("a") as fh:
        fh.write(json.dumps(alpaca_rows(1)[0]) + "\n")
    with pytest.raises(InputError, match="changed while it was read"):
        input_record(src, "in.jsonl", state)


def test_an_unchanged_input_still_gets_its_sha256(tmp_path, write_jsonl):
    import hashlib

    src = write_jsonl("in.jsonl", alpaca_rows(300))
    assert main(["dedup", str(src), "-o", str(tmp_path / "d")]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["inputs"]["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


# --- item 8: hooks that exit or raise -----------------------------------------------------------
HOOKS = """\
import sys
def leave(row, rng):
    sys.exit(0)
def boom(row, rng):
    raise RuntimeError("model server down\\nsecond line")
def surrogate(row, rng):
    return {"output": "bad \\ud800"}
"""


def _hook_recipe(tmp_path, function):
    path = tmp_path / "h.yaml"
    attack = {
        "preset": "custom",
        "name": "rw",
        "triggers": ["zq"],
        "rate": 0.05,
        "behavior": {"kind": "rewrite", "function": function},
    }
    path.write_text(
        yaml.safe_dump(
            small_recipe(
                sources=[{"name": "s", "kind": "synthetic", "count": 300}],
                attacks=[attack],
                defense=None,
                recovery=None,
            )
        )
    )
    return path


@pytest.mark.parametrize(
    "function, needles",
    [
        ("hk23:leave", ["hook hk23:leave on row", "called sys.exit(0)"]),
        ("hk23:boom", ["hook hk23:boom on row", "raised RuntimeError: model server down"]),
        ("hk23:surrogate", ["hook hk23:surrogate on row", "'output' text that is not valid"]),
    ],
)
def test_a_hook_that_exits_or_raises_is_a_one_line_error(tmp_path, capsys, function, needles):
    (tmp_path / "hk23.py").write_text(HOOKS)
    out = tmp_path / "b"
    assert main(["build", str(_hook_recipe(tmp_path, function)), "-o", str(out), "--quiet"]) == 2
    line = _err(capsys, *needles)
    assert "second line" not in line and "of source 's'" in line
    assert not out.exists()


def test_a_hook_module_that_exits_on_import_is_refused_at_validate(tmp_path, capsys):
    (tmp_path / "hkexit23.py").write_text("import sys\nsys.exit(0)\n")
    assert main(["recipe", "validate", str(_hook_recipe(tmp_path, "hkexit23:f"))]) == 2
    _err(capsys, "importing module 'hkexit23' raised SystemExit")


# --- item 13: duplicate YAML keys, SIGTERM while the report chart is drawn ------------------------
@pytest.mark.parametrize(
    "text, needle",
    [
        ("seed: 1\nseed: 2\n", "duplicate key 'seed' at line 6 column 1 (first at line 5 "),
        ("eval: {size: 5, size: 6}\n", "key 'size' at line 4 column 17 (first at line 4 column 8)"),
    ],
)
def test_duplicate_yaml_keys_are_refused(tmp_path, capsys, write_jsonl, text, needle):
    head = "name: x\nversion: 1.0.0\nsources: [{name: s, kind: synthetic, count: 300}]\n"
    if "eval" not in text:
        head += "eval: {size: 5}\n"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(head + text)
    assert main(["recipe", "validate", str(recipe)]) == 2
    _err(capsys, "r.yaml: refused YAML", needle)
    config = tmp_path / "c.yaml"
    config.write_text("dedup:\n  threshold: 0.8\n  threshold: 0.9\n")
    src = write_jsonl("in.jsonl", alpaca_rows(20))
    assert main(["dedup", str(src), "-o", str(tmp_path / "d"), "--config", str(config)]) == 2
    _err(capsys, "c.yaml", "duplicate key 'threshold' at line 3 column 3 (first at line 2 ")


def test_yaml_merge_keys_may_still_be_overridden():
    from mbdata.core.limits import load_yaml

    assert load_yaml("a: &a {x: 1, y: 2}\nb:\n  <<: *a\n  x: 3\n") == {
        "a": {"x": 1, "y": 2},
        "b": {"x": 3, "y": 2},
    }


def test_sigterm_while_the_report_chart_is_drawn_ends_as_terminated(tmp_path, monkeypatch):
    """The chart is drawn with SIGTERM held: the signal arrives mid-draw (here from inside
    tight_layout), the figure is still finished and closed, then Terminated (exit 143) is raised;
    no PNG is written. Before, the exception was raised inside matplotlib and the figure leaked
    (or a ValueError came out instead)."""
    import matplotlib.figure
    import matplotlib.pyplot as plt

    from cli.main import Terminated, _raise_terminated
    from mbtrain.experiment.report import RUNS, chart

    report = {
        "runs": {r: {"cacc": 0.5, "asr": {"badnet": 0.1}, "aacc": None} for r in RUNS},
        "attacks": ["badnet"],
        "model": "m",
        "name": "x",
    }
    real = matplotlib.figure.Figure.tight_layout

    def interrupted(self, *a, **k):
        signal.raise_signal(signal.SIGTERM)
        return real(self, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", interrupted)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        plt.close("all")
        with pytest.raises(Terminated):
            chart(report, tmp_path / "report.png")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert plt.get_fignums() == []
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", real)
    chart(report, tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
