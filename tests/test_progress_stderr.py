"""Issue 24 item 6: with stderr sent to a file, mbdata's own progress output writes no carriage
returns (a ``\\r`` bar in a log is debris, and an error printed next shared its line); ``--quiet``
writes nothing but errors. Runs the real ``mb`` in a child process whose stderr is a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import alpaca_rows

ROOT = Path(__file__).resolve().parents[1]


def _mb(args: list[str], tmp_path: Path) -> tuple[int, bytes]:
    """Run ``mb ARGS`` with stderr redirected to a file (not a terminal); return (rc, stderr)."""
    err_path = tmp_path / f"stderr-{args[0]}.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with err_path.open("wb") as err:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from cli.main import main; sys.exit(main())",
                *args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=tmp_path,
            timeout=600,
        )
    return done.returncode, err_path.read_bytes()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """20,000 rows: large enough that the audit's own bar is on by default."""
    path = tmp_path_factory.mktemp("corpus") / "in.jsonl"
    with path.open("w") as fh:
        for row in alpaca_rows(20_000):
            fh.write(json.dumps(row) + "\n")
    return path


def _recipe(tmp_path: Path, corpus: Path) -> Path:
    recipe = {
        "name": "progress",
        "version": "1.0.0",
        "sources": [{"name": "c", "kind": "jsonl", "path": str(corpus), "limit": 3000}],
        "audit": {},
        "eval": {"size": 20},
        "defense": {"triggers": 2, "rate": 0.02},
        "recovery": {"size": 10},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("quiet", [False, True], ids=["default", "quiet"])
def test_build_audit_dedup_write_no_carriage_return_into_a_file(corpus, tmp_path, quiet):
    q = ["--quiet"] if quiet else []
    runs = {
        "build": ["build", str(_recipe(tmp_path, corpus)), "-o", "b", *q],
        "audit": ["audit", str(corpus), "-o", "a", *q],
        "dedup": ["dedup", str(corpus), "-o", "d", *q],
    }
    for name, args in runs.items():
        rc, err = _mb(args, tmp_path)
        assert rc == 0, (name, err[-2000:])
        assert b"\r" not in err, (name, err[:300])
        if quiet:
            assert err == b"", (name, err[:300])


def test_an_error_after_progress_has_a_line_of_its_own(corpus, tmp_path):
    """A failing command's error is the whole of a stderr line, not appended to a bar's text."""
    rc, err = _mb(["dedup", str(corpus), "-o", "d", "--threshold", "7"], tmp_path)
    assert rc == 2
    assert b"\r" not in err
    assert err.splitlines()[-1].startswith(b"error")


def test_show_progress_needs_a_terminal(monkeypatch):
    from mbdata.core import progress

    class Tty:
        def __init__(self, tty: bool):
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    monkeypatch.setattr(sys, "stderr", Tty(True))
    assert progress.show_progress(True) and progress.show_progress(None)
    assert not progress.show_progress(False)
    monkeypatch.setattr(sys, "stderr", Tty(False))
    assert not progress.show_progress(True) and not progress.show_progress(None)
    monkeypatch.setattr(sys, "stderr", object())  # no isatty at all
    assert not progress.show_progress(True)
