"""Issue 23, output side: nothing is written outside the output folder, and nothing of yours in it
is deleted, whatever is planted beside it (links, folders, FIFOs at the lock/journal/record paths),
whatever a forged manifest names, and whatever happens during the run (a file added, a kill and a
manual cleanup, a read-only old output, a full disk, a bad output name)."""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import alpaca_rows, small_recipe

import mbdata
from cli.main import main
from mbdata.core import atomic
from mbdata.core.errors import BuildError
from mbdata.io.manifest import finalize_manifest

REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
def pristine(recipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bld"
    assert main(["build", str(recipe), "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def bld(pristine, tmp_path):
    out = tmp_path / "bld"
    shutil.copytree(pristine, out)
    return out


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(300)))
    return path


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def _mb(*args, env=None, timeout=120, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _commands(kind, tmp_path, recipe, corpus):
    out = tmp_path / "OUT"
    clean = tmp_path / "OUT.jsonl"
    return {
        "dedup": (["dedup", corpus, "-o", out], out),
        "build": (["build", recipe, "-o", out, "--quiet"], out),
        "audit": (["audit", corpus, "-o", out, "--quiet"], out),
        "audit-clean-out": (
            ["audit", corpus, "-o", tmp_path / "A", "--clean-out", clean, "--quiet"],
            clean,
        ),
    }[kind]


# ------------------------------------------------------------- item 1: lock/journal/marker files

KINDS = ["dedup", "build", "audit", "audit-clean-out"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", [".mbdefense-lock", ".mbdefense-journal"])
def test_a_symlink_at_the_lock_or_journal_path_is_refused(
    kind, suffix, tmp_path, recipe, corpus, capsys
):
    argv, out = _commands(kind, tmp_path, recipe, corpus)
    victim = tmp_path / "victim.txt"
    victim.write_text("important\n")
    planted = out.parent / f".{out.name}{suffix}"
    planted.symlink_to(victim)
    assert main([str(a) for a in argv]) == 2
    _one_line_error(capsys, str(planted), "symbolic link")
    assert victim.read_text() == "important\n" and not out.exists()
    # a dangling link: mbdefense must not create the file it points to
    planted.unlink()
    planted.symlink_to(tmp_path / "created-by-mb")
    assert main([str(a) for a in argv]) == 2
    _one_line_error(capsys, "symbolic link")
    assert not (tmp_path / "created-by-mb").exists() and not out.exists()
    planted.unlink()
    assert main([str(a) for a in argv]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("suffix", [".mbdefense-lock", ".mbdefense-journal"])
@pytest.mark.parametrize("what", ["folder", "fifo", "hardlink"])
def test_a_folder_fifo_or_hard_link_at_the_lock_or_journal_path_is_refused(
    suffix, what, tmp_path, corpus
):
    """In a subprocess with a timeout: a FIFO must be refused, not waited on."""
    out = tmp_path / "OUT"
    planted = tmp_path / f".OUT{suffix}"
    victim = tmp_path / "victim.txt"
    victim.write_text("important\n")
    if what == "folder":
        planted.mkdir()
    elif what == "fifo":
        os.mkfifo(planted)
    else:
        os.link(victim, planted)
    proc = _mb("dedup", corpus, "-o", out, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert str(planted) in proc.stderr and "not a file mbdefense wrote" in proc.stderr
    assert victim.read_text() == "important\n" and not out.exists()


def test_the_lock_itself_is_never_opened_through_a_link(tmp_path):
    """The early check is a courtesy; the lock file itself is created with O_EXCL and opened
    with O_NOFOLLOW (a link planted after the check is refused too)."""
    out = tmp_path / "OUT"
    victim = tmp_path / "victim.txt"
    victim.write_text("important\n")
    (tmp_path / ".OUT.mbdefense-lock").symlink_to(victim)
    with pytest.raises(BuildError, match="symbolic link"), atomic.output_lock([out]):
        pass
    assert victim.read_text() == "important\n"


def test_the_record_file_is_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("important\n")
    for how in ("symlink", "hardlink"):
        run = tmp_path / f"run-{how}"
        run.mkdir()
        if how == "symlink":
            (run / ".mbdefense").symlink_to(victim)
        else:
            os.link(victim, run / ".mbdefense")
        with pytest.raises(BuildError, match="not a file mbdefense wrote"):
            atomic.mark_dir(run, "run")
        assert victim.read_text() == "important\n"
        assert not atomic.written_by_us(run)  # a linked record proves nothing either


def test_a_fifo_record_does_not_hang_and_proves_nothing(tmp_path, recipe):
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    os.mkfifo(out / ".mbdefense")
    proc = _mb("build", recipe, "-o", out, "--overwrite", "--quiet", timeout=60)
    assert proc.returncode == 2 and "did not write" in proc.stderr, proc.stderr
    assert (out / "keep.txt").read_text() == "mine\n"


def test_a_forged_journal_pointer_does_not_delete_another_journal(tmp_path):
    """A pointer counts only when the journal it names lists its output; else only the pointer
    is removed."""
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = other / ".x.mbdefense-journal"
    entry = {
        "target": str(other / "x"),
        "partial": str(other / ".x.partial-1-a"),
        "old": str(other / ".x.old-1-a"),
        "dir": True,
    }
    elsewhere.write_text(json.dumps({"state": "filling", "entries": [entry]}))
    (tmp_path / ".o.mbdefense-journal").write_text(json.dumps({"primary": str(elsewhere)}))
    atomic.atomic_write_text(tmp_path / "o", "new")
    assert elsewhere.exists() and (tmp_path / "o").read_text() == "new"
    assert not (tmp_path / ".o.mbdefense-journal").exists()


# ------------------------------------------------------------- item 2: names from a manifest


def _forge(bld, rename=None, side=None, shard_path=None):
    manifest = json.loads((bld / "manifest.json").read_text())
    manifest.pop("content_hash")
    if rename is not None:
        manifest["splits"] = {
            (rename if name == "train" else name): split
            for name, split in manifest["splits"].items()
        }
    if side is not None:
        manifest["side_tables"] = {side: {"path": "data/x.arrow", "rows": 0}}
    if shard_path is not None:
        manifest["splits"]["train"]["shards"][0]["path"] = shard_path
    (bld / "manifest.json").write_text(json.dumps(finalize_manifest(manifest)))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "trl", "llamafactory", "axolotl"])
def test_a_forged_split_name_is_refused_in_every_export_format(bld, tmp_path, capsys, fmt):
    victim = tmp_path / "victim_corpus"
    for name in ("../../pwned", str(victim), "..", "a/b", ".hidden", "x\x00y"):
        work = tmp_path / "w"
        work.mkdir()
        copy = work / "bld"
        shutil.copytree(bld, copy)
        _forge(copy, rename=name)
        for ext in ("jsonl", "json", "parquet"):
            Path(f"{victim}.{ext}").write_text("mine\n")
        before = sorted(p.name for p in tmp_path.rglob("*"))
        out = work / "exp"
        assert main(["export", str(copy), "--format", fmt, "-o", str(out)]) == 2
        line = _one_line_error(capsys, "split name", "forged")
        assert "\x00" not in line
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
        assert all(Path(f"{victim}.{e}").read_text() == "mine\n" for e in ("jsonl", "json"))
        for command in (["verify", str(copy)], ["inspect", str(copy)]):
            assert main(command) == 2
            _one_line_error(capsys, "split name")
        shutil.rmtree(work)


@pytest.mark.parametrize(
    "forgery",
    [
        {"side": "../../x"},
        {"side": "/abs/x"},
        {"shard_path": "/etc/passwd"},
        {"shard_path": "a/../../b"},
    ],
)
def test_forged_side_table_names_and_shard_paths_are_refused(bld, capsys, forgery):
    _forge(bld, **forgery)
    for command in (
        ["verify", str(bld)],
        ["inspect", str(bld)],
        ["export", str(bld), "-f", "jsonl"],
    ):
        assert main(command) == 2
        _one_line_error(capsys, "forged")
    assert not (bld / "exports").exists()


def test_verify_escapes_what_it_prints(bld, capsys):
    (bld / "data" / "evil\x1b[31mred\x07.arrow").write_bytes(b"x")
    assert main(["verify", str(bld)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b[31mred\\x07" in err


# ------------------------------------------------------------- item 4: a file added during a run


def test_a_file_added_to_the_output_during_a_run_is_kept(tmp_path, corpus):
    """`mb dedup -o TT --overwrite`, slowed at its commit; a file appears in TT meanwhile."""
    out = tmp_path / "TT"
    assert _mb("dedup", corpus, "-o", out).returncode == 0
    before = _snapshot(out)
    slow = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "dedup", str(corpus), "-o", str(out), "--overwrite"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "MBDEFENSE_FAULT_SLEEP": "filled:1.5"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.time() + 120
    while not any(p.name.startswith(".TT.partial-") for p in tmp_path.iterdir()):
        assert time.time() < deadline and slow.poll() is None
        time.sleep(0.01)
    (out / "mynotes.txt").write_text("notes\n")
    _, err = slow.communicate(timeout=120)
    assert slow.returncode == 2 and "did not write" in err and "Traceback" not in err, err
    assert (out / "mynotes.txt").read_text() == "notes\n"
    assert {k: v for k, v in _snapshot(out).items() if k.name != "mynotes.txt"} == before
    assert _hidden(tmp_path) == []


def test_a_folder_created_during_a_run_without_overwrite_is_kept(tmp_path):
    out = tmp_path / "o"

    def fill(tmp):
        (tmp / "v.txt").write_text("new")
        out.mkdir()
        (out / "mine.txt").write_text("mine")

    with pytest.raises(BuildError, match="already exists"):
        atomic.atomic_dir(out, fill)
    assert (out / "mine.txt").read_text() == "mine" and _hidden(tmp_path) == []


def test_a_file_added_between_the_last_check_and_the_renames_is_kept(tmp_path, capsys):
    """The narrowest window: after the check, before the old folder is moved aside. The moved
    folder is checked again and, being no longer ours, put back with the new output discarded."""
    out = tmp_path / "o"
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("old"))

    def add(step):
        if step == "journal-commit":
            (out / "mine.txt").write_text("mine")

    atomic._FAULT = add
    try:
        with pytest.raises(BuildError, match="files were added"):
            atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("new"), overwrite=True)
    finally:
        atomic._FAULT = None
    assert (out / "v.txt").read_text() == "old" and (out / "mine.txt").read_text() == "mine"
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------- item 5: never delete the only copy


def test_a_kill_then_removing_the_partial_by_hand_restores_the_old_build(bld, recipe, capsys):
    before = _snapshot(bld)
    proc = _mb(
        "build",
        recipe,
        "-o",
        bld,
        "--overwrite",
        "--quiet",
        env={"MBDEFENSE_FAULT_KILL": "moved-old:1"},
    )
    assert proc.returncode == -9, proc.stderr
    assert not bld.exists()
    for p in bld.parent.iterdir():
        if p.name.startswith(".bld.partial-"):
            shutil.rmtree(p)
    assert main(["inspect", str(bld)]) == 0
    err = capsys.readouterr().err
    assert "restored" in err and _snapshot(bld) == before
    assert _hidden(bld.parent) == [] and mbdata.verify_build(bld) == []


def test_an_old_folder_with_your_files_is_never_deleted_by_recovery(tmp_path, capsys):
    out = tmp_path / "o"
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("new"))
    stray = tmp_path / ".o.old-1-deadbeef"
    stray.mkdir()
    (stray / "mine.txt").write_text("mine")
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("newer"), overwrite=True)
    assert (stray / "mine.txt").read_text() == "mine"
    assert "kept" in capsys.readouterr().err


# ------------------------------------------------------------- item 7: audit outputs after a kill


def test_a_kill_between_the_audit_renames_is_as_documented(bld, tmp_path, corpus):
    """docs/safety.md: after a kill between the renames of a multi-output commit, the outputs may
    be a mix until the next mb command that touches any of them; the journal beside the first
    output lists them all, and that command completes the commit."""
    out, clean = tmp_path / "A", tmp_path / "A.jsonl"
    assert _mb("audit", bld, "-o", out, "--clean-out", clean, "--quiet").returncode == 0
    old_summary = json.loads((out / "summary.json").read_text())
    proc = _mb(
        "audit",
        corpus,
        "-o",
        out,
        "--clean-out",
        clean,
        "--overwrite",
        "--quiet",
        env={"MBDEFENSE_FAULT_KILL": "moved-new:1"},
    )
    assert proc.returncode == -9, proc.stderr
    new_summary = json.loads((out / "summary.json").read_text())
    assert new_summary["rows"] == 300 != old_summary["rows"]  # the new folder ...
    assert (
        clean.read_text().count("\n") + clean.with_name("A.removed.jsonl").read_text().count("\n")
        == old_summary["rows"]
    )  # ... beside the old corpus: the documented mix
    journal = json.loads((tmp_path / ".A.mbdefense-journal").read_text())
    assert journal["state"] == "commit"
    assert {e["target"] for e in journal["entries"]} == {
        str(out),
        str(clean),
        str(clean.with_name("A.removed.jsonl")),
    }
    # the next command touching only the corpus (a refusal) completes the commit first
    proc = _mb("audit", corpus, "-o", tmp_path / "B", "--clean-out", clean, "--quiet")
    assert proc.returncode == 2 and "completed an interrupted commit" in proc.stderr
    kept = clean.read_text().count("\n")
    removed = clean.with_name("A.removed.jsonl").read_text().count("\n")
    assert kept + removed == 300 and removed == new_summary["flagged"]
    assert _hidden(tmp_path) == []


# ------------------------------------------------------------- item 9: a read-only old output


def _unprivileged():
    """A command prefix that runs without the root capabilities that ignore file permissions."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner"]


def _mb_unprivileged(*args):
    return subprocess.run(
        [*_unprivileged(), sys.executable, "-m", "cli.main", *map(str, args)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_read_only_old_output_is_refused_up_front(bld, tmp_path):
    out = tmp_path / "E"
    assert main(["export", str(bld), "-f", "jsonl", "-o", str(out)]) == 0
    before = _snapshot(out)
    out.chmod(0o555)
    try:
        proc = _mb_unprivileged("export", bld, "-f", "jsonl", "-o", out, "--overwrite")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "read-only" in proc.stderr, proc.stderr
        assert _snapshot(out) == before and _hidden(tmp_path) == []
    finally:
        out.chmod(0o755)
    proc = _mb_unprivileged("export", bld, "-f", "jsonl", "-o", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr


def test_an_old_output_that_cannot_be_deleted_leaves_no_journal(tmp_path, monkeypatch, capsys):
    """Should deleting the old copy still fail after the check (it became read-only in between),
    the new output stays, the failure is one note, and no journal blocks the next command."""
    out = tmp_path / "o"
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("old"))
    real_remove = atomic._remove

    def refuse(path):
        if ".o.tmp-" in path.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        real_remove(path)

    monkeypatch.setattr(atomic, "_remove", refuse)
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("new"), overwrite=True)
    assert (out / "v.txt").read_text() == "new"
    assert "could not delete the old version" in capsys.readouterr().err
    assert not (tmp_path / ".o.mbdefense-journal").exists()
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("newer"), overwrite=True)
    assert "could not remove" in capsys.readouterr().err  # reported again, not a traceback
    monkeypatch.setattr(atomic, "_remove", real_remove)
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("newest"), overwrite=True)
    assert (out / "v.txt").read_text() == "newest" and _hidden(tmp_path) == []


def test_a_read_only_parent_is_a_one_line_error(tmp_path, corpus):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        proc = _mb_unprivileged("dedup", corpus, "-o", parent / "out")
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "permission denied" in proc.stderr.lower()
        assert "Traceback" not in proc.stderr and list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------- item 10: an open run folder


def test_build_overwrite_does_not_replace_a_run_folder(recipe, tmp_path, capsys):
    run = tmp_path / "RUN"
    run.mkdir()
    atomic.mark_dir(run, "run")  # what `mb run` leaves: an open record without entries
    (run / "notes.txt").write_text("mine\n")
    (run / "models").mkdir()
    (run / "models" / "weights.bin").write_bytes(b"\x00" * 10)
    for argv in (
        ["build", str(recipe), "-o", str(run), "--overwrite", "--quiet"],
        ["export", "{bld}", "-f", "jsonl", "-o", str(run), "--overwrite"],
    ):
        if "{bld}" in argv:
            bld = tmp_path / "b"
            assert main(["build", str(recipe), "-o", str(bld), "--quiet"]) == 0
            capsys.readouterr()
            argv = [str(bld) if a == "{bld}" else a for a in argv]
        assert main(argv) == 2
        _one_line_error(capsys, "run folder", "does not replace it")
        assert (run / "notes.txt").read_text() == "mine\n"
        assert (run / "models" / "weights.bin").exists()


# ------------------------------------------------------------- item 11: names, paths, disk full


@pytest.mark.parametrize("length", [216, 235, 250, 255, 300])
def test_an_output_name_too_long_for_its_hidden_siblings_is_one_line(
    tmp_path, corpus, capsys, length
):
    out = tmp_path / ("n" * length)
    assert main(["dedup", str(corpus), "-o", str(out)]) == 2
    # past the file system's own limit the OS says so first (still one line)
    _one_line_error(capsys, "at most 215 characters" if length <= 255 else "File name too long")
    assert list(tmp_path.iterdir()) == [corpus]
    out = tmp_path / ("n" * 215)
    assert main(["dedup", str(corpus), "-o", str(out)]) == 0
    assert out.is_dir()


def test_an_output_path_ending_in_dot_dot_is_refused_and_leaves_nothing(tmp_path, corpus, capsys):
    (tmp_path / "own" / "e" / "sub").mkdir(parents=True)
    for _ in range(2):  # a re-run meets no leftover journal
        assert main(["dedup", str(corpus), "-o", str(tmp_path / "own/e/sub/..")]) == 2
        _one_line_error(capsys, "'..'")
    assert sorted(p.name for p in (tmp_path / "own").rglob("*")) == ["e", "sub"]
    assert main(["dedup", str(corpus), "-o", str(tmp_path / "own/e/out")]) == 0


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("command", ["dedup", "build", "audit"])
def test_a_full_disk_while_writing_is_one_line_and_keeps_the_old_output(
    command, tmp_path, recipe, corpus
):
    """A file size limit (EFBIG, as a full disk gives ENOSPC) hit while the output is written."""
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows(3000)))
    out = tmp_path / "OUT"
    argv = {
        "dedup": ["dedup", corpus, "-o", out],
        "build": ["build", recipe, "-o", out, "--quiet"],
        "audit": ["audit", corpus, "-o", out, "--quiet"],
    }[command]
    assert _mb(*argv).returncode == 0
    before = _snapshot(out)
    argv = [big if a == corpus else a for a in argv] + ["--overwrite"]
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", *map(str, argv)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_limit_file_size(20_000 if command == "audit" else 60_000),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "File too large" in proc.stderr and "old output is unchanged" in proc.stderr
    assert _snapshot(out) == before
    assert _hidden(tmp_path) == []


@pytest.mark.parametrize("step", ["journal-filling", "filled", "committing"])
def test_a_full_disk_at_commit_removes_the_partial_copy(tmp_path, step, capsys):
    out, clean = tmp_path / "o", tmp_path / "clean.jsonl"

    def outputs(text):
        return [
            atomic.Output(out, lambda tmp: (tmp / "v.txt").write_text(text), is_dir=True),
            atomic.Output(clean, lambda tmp: tmp.write_text(text)),
        ]

    atomic.commit_outputs(outputs("old"))

    def full(s):
        if s == step:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    atomic._FAULT = full
    try:
        with pytest.raises(BuildError, match="No space left on device.*old output is unchanged"):
            atomic.commit_outputs(outputs("new"), overwrite=True)
    finally:
        atomic._FAULT = None
    assert (out / "v.txt").read_text() == "old" and clean.read_text() == "old"
    assert _hidden(tmp_path) == []


def test_an_os_error_outside_an_atomic_writer_is_one_line(monkeypatch, capsys, tmp_path, corpus):
    import mbdata.dedup.standalone as standalone

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/tmp/scratch")

    monkeypatch.setattr(standalone, "dedup_path", full)
    assert main(["dedup", str(corpus), "-o", str(tmp_path / "x")]) == 2
    _one_line_error(capsys, "No space left on device", "free some space")
    monkeypatch.setattr(standalone, "dedup_path", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        main(["dedup", str(corpus), "-o", str(tmp_path / "x")])


def test_an_output_that_cannot_be_moved_aside_leaves_no_journal(tmp_path, monkeypatch, capsys):
    """EBUSY (a mount point) when moving the old folder aside: one error, everything undone."""
    out = tmp_path / "o"
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("old"))
    real_rename = os.rename

    def busy(src, dst):
        if Path(src) == out:
            raise OSError(errno.EBUSY, "Device or resource busy", str(src))
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", busy)
    with pytest.raises(BuildError, match="Device or resource busy"):
        atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("new"), overwrite=True)
    assert (out / "v.txt").read_text() == "old" and _hidden(tmp_path) == []
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    atomic.atomic_dir(out, lambda tmp: (tmp / "v.txt").write_text("new"), overwrite=True)
    assert (out / "v.txt").read_text() == "new" and _hidden(tmp_path) == []
