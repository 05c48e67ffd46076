"""Issue 14, findings 1-3 end to end: --overwrite never destroys what mbdefense did not write, an
output never replaces its input, and an audit report always matches its clean corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import alpaca_rows, small_recipe

import mbdata
from cli.main import main
from mbdata.audit import AuditConfig, audit_path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("r") / "r.yaml"
    path.write_text(
        yaml.safe_dump(
            small_recipe(
                sources=[{"name": "s", "kind": "synthetic", "count": 400}], eval={"size": 20}
            )
        )
    )
    return path


@pytest.fixture
def bld(recipe, tmp_path):
    out = tmp_path / "bld"
    assert main(["build", str(recipe), "-o", str(out), "--quiet"]) == 0
    return out


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for needle in needles:
        assert needle in err, err


def test_overwrite_keeps_a_folder_that_only_has_a_manifest_json(recipe, tmp_path, capsys):
    x = tmp_path / "x"
    x.mkdir()
    (x / "manifest.json").write_text('{"manifest_version":3}')
    (x / "keep.txt").write_text("precious\n")
    assert main(["build", str(recipe), "-o", str(x), "--overwrite", "--quiet"]) == 2
    _one_line_error(capsys, "did not write")
    assert (x / "keep.txt").read_text() == "precious\n"


def test_overwrite_keeps_a_file_the_user_added_to_a_build(bld, recipe, capsys):
    (bld / "notes.txt").write_text("mine\n")
    assert main(["build", str(recipe), "-o", str(bld), "--overwrite", "--quiet"]) == 2
    _one_line_error(capsys, "did not write")
    assert (bld / "notes.txt").exists()
    (bld / "notes.txt").unlink()
    # an export inside the build (the default place) is ours, so rebuilding still works
    assert main(["export", str(bld), "--format", "jsonl"]) == 0
    assert main(["build", str(recipe), "-o", str(bld), "--overwrite", "--quiet"]) == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "{bld}", "--format", "jsonl", "-o", "{bld}", "--overwrite"],
        ["export", "{bld}", "--format", "jsonl", "-o", "{bld}/..", "--overwrite"],
        ["export", "{bld}", "--format", "jsonl", "-o", "{bld}/data/x", "--overwrite"],
        ["audit", "{bld}", "-o", "{bld}", "--overwrite", "--quiet"],
        ["audit", "{bld}", "-o", "{bld}/../link", "--overwrite", "--quiet"],
        [
            "audit",
            "{bld}",
            "-o",
            "{tmp}/aud",
            "--clean-out",
            "{bld}/manifest.json",
            "--overwrite",
            "--quiet",
        ],
        ["dedup", "{bld}", "-o", "{bld}", "--overwrite"],
    ],
)
def test_an_output_never_replaces_its_input(bld, tmp_path, capsys, argv):
    (tmp_path / "link").symlink_to(bld)
    before = {p.relative_to(bld): p.read_bytes() for p in bld.rglob("*") if p.is_file()}
    args = [a.format(bld=bld, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    _one_line_error(capsys, "input")
    after = {p.relative_to(bld): p.read_bytes() for p in bld.rglob("*") if p.is_file()}
    assert after == before and mbdata.verify_build(bld) == []
    assert not (tmp_path / "aud").exists()


def test_build_output_never_replaces_its_source_folder(tmp_path, capsys, write_jsonl):
    src = tmp_path / "src"
    src.mkdir()
    rows = src / "rows.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(300)))
    recipe = src / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "version": "1.0.0",
                "eval": {"size": 10},
                "sources": [{"name": "r", "kind": "jsonl", "path": "rows.jsonl"}],
            }
        )
    )
    assert main(["build", str(recipe), "-o", str(src), "--overwrite", "--quiet"]) == 2
    _one_line_error(capsys, "contains the input")
    assert main(["build", str(recipe), "-o", str(rows), "--overwrite", "--quiet"]) == 2
    _one_line_error(capsys, "is the input")
    assert rows.is_file() and recipe.is_file()


def test_two_audits_on_one_clean_out_do_not_both_win(bld, tmp_path, capsys):
    """Two audits racing on one --clean-out (different -o, no --overwrite): the first is slowed at
    its commit, the second starts while it writes; exactly one wins, whole."""
    clean = tmp_path / "clean.jsonl"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "audit",
            str(bld),
            "-o",
            str(tmp_path / "a1"),
            "--clean-out",
            str(clean),
            "--quiet",
        ],
        env={**os.environ, "MBDEFENSE_FAULT_SLEEP": "filled:2"},
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / ".a1.mbdefense-journal"
    deadline = time.time() + 120
    while not journal.exists():
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.01)
    assert not clean.exists()  # the first one has not committed yet
    assert (
        main(["audit", str(bld), "-o", str(tmp_path / "a2"), "--clean-out", str(clean), "--quiet"])
        == 2
    )
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("note: waiting for pid") and len(err) == 2
    assert err[1].startswith("error: ") and "already exists" in err[1]
    first.communicate(timeout=120)
    assert first.returncode == 0
    assert _consistent(tmp_path / "a1", clean) and not (tmp_path / "a2").exists()


def _consistent(out, clean):
    """The report and the clean corpus come from the same run."""
    flagged = json.loads((out / "summary.json").read_text())["flagged"]
    rows = json.loads((out / "summary.json").read_text())["rows"]
    removed = (clean.with_name("clean.removed.jsonl")).read_text().count("\n")
    kept = clean.read_text().count("\n")
    return removed == flagged and kept == rows - flagged


def test_a_kill_during_the_audit_commit_leaves_report_and_clean_corpus_together(bld, tmp_path):
    """A real `mb audit --clean-out --overwrite` SIGKILLed between renames (fault injection), then
    any later run: the report and the clean corpus still come from one run."""
    src = tmp_path / "other.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(300)))
    out, clean = tmp_path / "aud", tmp_path / "clean.jsonl"
    first = audit_path(bld, out, AuditConfig(), clean_out=clean, progress=False, split="train")
    assert _consistent(out, clean)
    for kill_at in ("moved-old", "moved-new:2"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "cli.main",
                "audit",
                str(src),
                "-o",
                str(out),
                "--clean-out",
                str(clean),
                "--overwrite",
                "--quiet",
            ],
            check=False,
            env={**os.environ, "MBDEFENSE_FAULT_KILL": kill_at},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == -9, proc.stderr
        # the next run (here: one that only refuses) repairs first, then checks
        with pytest.raises(mbdata.MBError, match="already exists"):
            audit_path(bld, out, AuditConfig(), clean_out=clean, progress=False, split="train")
        assert _consistent(out, clean), kill_at
        assert json.loads((out / "summary.json").read_text())["rows"] == 300  # rolled forward
        assert not [p for p in tmp_path.iterdir() if p.name.startswith((".aud.", ".clean."))]
        audit_path(
            bld, out, AuditConfig(), clean_out=clean, overwrite=True, progress=False, split="train"
        )
        assert json.loads((out / "summary.json").read_text())["rows"] == first.n_rows


def test_two_builds_racing_on_one_output(recipe, tmp_path):
    """A slowed `mb build` (fault injection: 2 s at its commit) and a second one started while it
    writes, neither with --overwrite: the second waits for the lock, finds the folder, refuses."""
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "cli.main", "build", str(recipe), "-o", str(out), "--quiet"]
    slow = subprocess.Popen(
        cmd,
        env={**os.environ, "MBDEFENSE_FAULT_SLEEP": "filled:2"},
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = tmp_path / ".o.mbdefense-journal"
    deadline = time.time() + 120
    while not journal.exists():
        assert time.time() < deadline and slow.poll() is None
        time.sleep(0.01)
    second = subprocess.run(cmd, check=False, capture_output=True, text=True)
    slow.communicate(timeout=120)
    assert slow.returncode == 0
    assert second.returncode == 2 and "already exists" in second.stderr, second.stderr[-400:]
    assert mbdata.verify_build(out) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
