"""Issue 14, finding/risk on SIGTERM: `mb` handles it like Ctrl-C (clean abort, exit 143), and a
signal during the commit's renames is held until the renames are done (old or new, never half)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml
from conftest import small_recipe


def _start_build(tmp_path, env_extra=None, count=60000):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            small_recipe(
                sources=[{"name": "s", "kind": "synthetic", "count": count}],
                eval={"size": 50},
                output={"shard_rows": 500},
            )
        )
    )
    out = tmp_path / "o"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "build", str(recipe), "-o", str(out), "--quiet"],
        env={**os.environ, **(env_extra or {})},
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, out


def _wait_for(tmp_path, prefix, proc):
    deadline = time.time() + 120
    while not any(p.name.startswith(prefix) for p in tmp_path.iterdir()):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)


def test_sigterm_mid_build_aborts_cleanly(tmp_path):
    proc, out = _start_build(tmp_path)
    _wait_for(tmp_path, ".o.partial-", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().endswith("terminated"), err[-500:]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_sigterm_during_the_renames_waits_for_them(tmp_path):
    proc, out = _start_build(tmp_path, {"MBDEFENSE_FAULT_SLEEP": "journal-commit:1.5"}, count=2000)
    journal = tmp_path / ".o.mbdefense-journal"
    deadline = time.time() + 120
    while '"commit"' not in (journal.read_text() if journal.exists() else ""):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.01)
    # now inside the commit, sleeping at the fault point with SIGTERM held back
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-500:]
    from mbdata.io.buildio import verify_build

    assert out.is_dir() and verify_build(out) == []  # complete, never half
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
