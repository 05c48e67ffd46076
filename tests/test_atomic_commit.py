"""The commit protocol of mbdata.core.atomic: ownership, locks, journal, kills at every step, races."""

from __future__ import annotations

import json
import os
import time

import pytest

from mbdata.core import atomic
from mbdata.core.atomic import Output, commit_outputs, output_lock, recover, written_by_us
from mbdata.core.errors import BuildError


def _fill_dir(text):
    def fill(tmp):
        (tmp / "v.txt").write_text(text)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.txt").write_text(text * 2)

    return fill


def _fill_file(text):
    return lambda tmp: tmp.write_text(text)


def _outputs(root, text):
    return [
        Output(root / "folder", _fill_dir(text), is_dir=True, kind="test"),
        Output(root / "clean.jsonl", _fill_file(text)),
        Output(root / "clean.removed.jsonl", _fill_file(text + "-removed")),
    ]


def _state(root):
    """'old', 'new', or a description of a mixed state."""
    folder = root / "folder"
    seen = set()
    if folder.is_dir():
        seen.add(("folder", (folder / "v.txt").read_text(), (folder / "sub" / "w.txt").read_text()))
    else:
        seen.add(("folder", None, None))
    for name in ("clean.jsonl", "clean.removed.jsonl"):
        p = root / name
        seen.add((name, p.read_text() if p.exists() else None))
    for label in ("old", "new"):
        if seen == {
            ("folder", label, label * 2),
            ("clean.jsonl", label),
            ("clean.removed.jsonl", label + "-removed"),
        }:
            return label
    return repr(sorted(seen, key=str))


def _hidden(root):
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- ownership (finding 1)


def test_a_manifest_file_alone_is_no_proof_of_ownership(tmp_path):
    x = tmp_path / "x"
    x.mkdir()
    (x / "manifest.json").write_text('{"manifest_version": 3}')
    (x / "keep.txt").write_text("precious")
    assert not written_by_us(x)
    with pytest.raises(BuildError, match="did not write"):
        atomic.atomic_dir(x, _fill_dir("new"), overwrite=True)
    assert (x / "keep.txt").read_text() == "precious"


def test_a_marker_file_by_name_only_is_no_proof(tmp_path):
    x = tmp_path / "x"
    x.mkdir()
    (x / ".mbdefense").write_text("build\n")
    (x / "keep.txt").write_text("precious")
    assert not written_by_us(x)
    (x / ".mbdefense").write_text(json.dumps({"kind": "build", "id": "not-random"}))
    assert not written_by_us(x)


def test_a_file_added_to_our_folder_makes_it_foreign(tmp_path):
    x = tmp_path / "x"
    atomic.atomic_dir(x, _fill_dir("old"))
    assert written_by_us(x)
    record = json.loads((x / ".mbdefense").read_text())
    assert len(record["id"]) == 32 and record["entries"] == ["sub", "v.txt"]
    # a nested folder that mbdefense wrote (e.g. exports/jsonl) keeps it ours
    atomic.atomic_dir(x / "exports" / "jsonl", _fill_dir("e"))
    assert written_by_us(x)
    (x / "keep.txt").write_text("precious")
    assert not written_by_us(x)
    with pytest.raises(BuildError, match="did not write"):
        atomic.atomic_dir(x, _fill_dir("new"), overwrite=True)
    assert (x / "keep.txt").exists()


def test_check_separate_refuses_equal_containing_and_inside_paths(tmp_path):
    inp = tmp_path / "bld"
    inp.mkdir()
    link = tmp_path / "link"
    link.symlink_to(inp)
    for out, what in (
        (inp, "is the input"),
        (link, "is the input"),
        (tmp_path, "contains"),
        (inp / "manifest.json", "inside"),
        (link / "sub", "inside"),
    ):
        with pytest.raises(BuildError, match=what):
            atomic.check_separate([inp], [out])
    atomic.check_separate([inp], [tmp_path / "other"])
    atomic.check_separate([inp], [inp / "exports" / "jsonl"], inside_ok=inp / "exports")


# ---------------------------------------------------------------- commit protocol (finding 3)


def _steps(tmp_path):
    """Every fault-injection point a commit over existing outputs passes, in order."""
    root = tmp_path / "probe"
    root.mkdir()
    commit_outputs(_outputs(root, "old"))
    seen = []
    atomic._FAULT = seen.append
    try:
        commit_outputs(_outputs(root, "new"), overwrite=True)
    finally:
        atomic._FAULT = None
    return seen


def test_kill_at_every_step_leaves_old_or_new(tmp_path):
    steps = _steps(tmp_path)
    assert {
        "journal-filling",
        "pointer",
        "filled",
        "journal-commit",
        "moved-old",
        "moved-new",
        "removed-old",
        "removed-journal",
    } <= set(steps)
    outcomes = {}
    for k in range(len(steps) + 1):
        root = tmp_path / f"k{k}"
        root.mkdir()
        commit_outputs(_outputs(root, "old"))
        pid = os.fork()
        if pid == 0:  # the child is "killed" (no cleanup at all) at the k-th step
            try:
                calls: list[str] = []

                def die(step, calls=calls, k=k):
                    calls.append(step)
                    if len(calls) == k + 1:
                        os._exit(9)

                atomic._FAULT = die
                commit_outputs(_outputs(root, "new"), overwrite=True)
                os._exit(0)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) in (0, 9)
        with output_lock([root / "folder"]):
            recover(root / "folder", quiet=True)
        with output_lock([root / "clean.jsonl", root / "clean.removed.jsonl"]):
            recover(root / "clean.jsonl", quiet=True)
            recover(root / "clean.removed.jsonl", quiet=True)
        state = _state(root)
        assert state in ("old", "new"), (k, steps[k] if k < len(steps) else "end", state)
        assert _hidden(root) == [], (k, _hidden(root))
        outcomes[k] = state
    # killed at step k (after steps[k] happened): old until the journal says "commit", then new
    first_new = steps.index("journal-commit")
    assert all(outcomes[k] == "old" for k in range(first_new))
    assert all(outcomes[k] == "new" for k in range(first_new, len(steps) + 1))


def test_recovery_from_any_output_of_the_set(tmp_path):
    """A kill after the commit point, repaired from the clean file's side only (its pointer)."""
    commit_outputs(_outputs(tmp_path, "old"))
    pid = os.fork()
    if pid == 0:
        try:

            def die(step):
                if step == "moved-old":
                    os._exit(9)

            atomic._FAULT = die
            commit_outputs(_outputs(tmp_path, "new"), overwrite=True)
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    assert not (tmp_path / "folder").exists()  # the window the journal repairs
    commit_outputs(
        [Output(tmp_path / "clean.removed.jsonl", _fill_file("new-removed"))], overwrite=True
    )
    assert _state(tmp_path) == "new" and _hidden(tmp_path) == []


def test_interrupt_during_fill_rolls_back(tmp_path):
    commit_outputs(_outputs(tmp_path, "old"))

    def boom(tmp):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        commit_outputs(
            _outputs(tmp_path, "new")[:2] + [Output(tmp_path / "clean.removed.jsonl", boom)],
            overwrite=True,
        )
    assert _state(tmp_path) == "old" and _hidden(tmp_path) == []


def test_leftovers_of_an_old_kill_are_reported_and_cleaned(tmp_path, capsys):
    out = tmp_path / "o"
    atomic.atomic_dir(out, _fill_dir("old"))
    (tmp_path / ".o.partial-999999-deadbeef").mkdir()
    (tmp_path / ".o.old-999999-deadbeef").mkdir()
    (tmp_path / ".o.tmp-1-2").write_text("x")
    (tmp_path / ".o.mbdefense-lock").write_text("999999\n")
    atomic.atomic_dir(out, _fill_dir("new"), overwrite=True)
    err = capsys.readouterr().err
    assert "stale lock" in err and err.count("left by an interrupted run") == 3
    assert _hidden(tmp_path) == [] and (out / "v.txt").read_text() == "new"
    # an old folder whose replacement never arrived (a kill between the two renames of an
    # earlier version) is restored, not deleted
    out.rename(tmp_path / ".o.old-1234-abcdef12")
    assert not out.exists()
    with pytest.raises(BuildError, match="already exists"):
        atomic.atomic_dir(out, _fill_dir("newer"))
    assert (out / "v.txt").read_text() == "new" and "restored" in capsys.readouterr().err


def test_a_forged_journal_cannot_rename_other_paths(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "o"
    (tmp_path / ".o.mbdefense-journal").write_text(
        json.dumps(
            {
                "state": "commit",
                "entries": [
                    {
                        "target": str(out),
                        "partial": str(victim),
                        "old": str(tmp_path / "x"),
                        "dir": True,
                    }
                ],
            }
        )
    )
    atomic.atomic_dir(out, _fill_dir("new"))
    assert victim.is_dir() and (out / "v.txt").read_text() == "new"


# ---------------------------------------------------------------- races and a slowed writer


def _race(tmp_path, overwrite_second):
    out = tmp_path / "o"
    pid = os.fork()
    if pid == 0:
        try:

            def slow(tmp):
                time.sleep(1.0)
                _fill_dir("first")(tmp)

            atomic.atomic_dir(out, slow)
            os._exit(0)
        finally:
            os._exit(2)
    deadline = time.time() + 10
    while not any(p.name.startswith(".o.partial-") for p in tmp_path.iterdir()):
        assert time.time() < deadline
        time.sleep(0.01)
    try:
        atomic.atomic_dir(out, _fill_dir("second"), overwrite=overwrite_second)
        second = "ok"
    except BuildError as exc:
        second = str(exc)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    return out, second


def test_a_slow_writer_is_not_replaced_without_overwrite(tmp_path, capsys):
    out, second = _race(tmp_path, overwrite_second=False)
    assert "already exists" in second
    assert (out / "v.txt").read_text() == "first" and _hidden(tmp_path) == []
    assert "waiting for pid" in capsys.readouterr().err


def test_with_overwrite_the_later_writer_wins_whole(tmp_path):
    out, second = _race(tmp_path, overwrite_second=True)
    assert second == "ok" and (out / "v.txt").read_text() == "second"
    assert (out / "sub" / "w.txt").read_text() == "secondsecond" and _hidden(tmp_path) == []


def test_lock_timeout_gives_one_line_error(tmp_path, monkeypatch):
    out = tmp_path / "o"
    monkeypatch.setenv("MBDEFENSE_LOCK_TIMEOUT", "0.2")
    import fcntl

    fd = os.open(atomic.lock_path(out), os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    pid = os.fork()
    if pid == 0:  # another process holds the lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            time.sleep(2)
        finally:
            os._exit(0)
    time.sleep(0.3)
    try:
        with pytest.raises(BuildError, match=r"another mbdefense process \(pid 4242\) is writing"):
            atomic.atomic_dir(out, _fill_dir("x"))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(fd)
    assert not out.exists()


def test_a_single_file_killed_mid_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.json"
    atomic.atomic_write_text(path, "old")
    for step in ("filled", "moved-new"):
        pid = os.fork()
        if pid == 0:
            try:

                def die(s, step=step):
                    if s == step:
                        os._exit(9)

                atomic._FAULT = die
                atomic.atomic_write_text(path, "new")
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        assert path.read_text() == ("old" if step == "filled" else "new")
        atomic.atomic_write_text(path, "old")  # the next write cleans the leftover partial
        assert _hidden(tmp_path) == []
