"""The README's Python snippet runs as written from any folder, twice (issue 24 item 5): it named
"recipes/backdoorllm.yaml" relative to the repository root, and a re-run failed on the existing
build. Training is replaced by a recorder here (it is tested in test_train*); everything else is
the snippet's own code."""

from __future__ import annotations

import re
from pathlib import Path

import mbtrain

README = Path(__file__).resolve().parents[1] / "README.md"


def _snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no Python snippet"
    return blocks[0]


def test_readme_snippet_runs_from_another_folder_twice(tmp_path, monkeypatch):
    code = compile(_snippet(), "README.md", "exec")
    calls = []
    monkeypatch.setattr(mbtrain, "run_experiment", lambda *a, **k: calls.append((a, k)) or {})
    monkeypatch.chdir(tmp_path)  # not the repository root
    for _ in range(2):
        namespace: dict = {}
        exec(code, namespace)
        assert (tmp_path / "builds/bd/manifest.json").is_file()
    assert [a for a, _ in calls] == [(namespace["out"], "runs/bd")] * 2
