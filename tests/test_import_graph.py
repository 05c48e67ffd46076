"""mbdata never imports mbtrain (nor cli): the data layer stands alone; mbtrain plugs in through
entry points (mbdata/core/plugins.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(path: Path) -> set[str]:
    """Modules a file imports, by statement, by ``import_module("...")`` or by a "module:attr"
    string constant (docstrings aside)."""
    names: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and ":" in node.value
            and node.value.split(":")[0].replace(".", "").replace("_", "").isalnum()
            and " " not in node.value
        ):
            names.add(node.value.split(":")[0])
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", "") == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def test_no_module_of_mbdata_imports_mbtrain_or_cli():
    offenders = []
    for path in sorted((ROOT / "mbdata").rglob("*.py")):
        for name in _imported_modules(path):
            if name.split(".")[0] in ("mbtrain", "cli"):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_a_build_runs_with_mbtrain_unimportable(tmp_path):
    code = f"""
import sys
sys.modules["mbtrain"] = None          # any import of mbtrain now fails
sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
from conftest import small_recipe
import mbdata
from mbdata.recipe import recipe_from_dict
out = mbdata.build(recipe_from_dict(small_recipe()), {str(tmp_path / "b")!r})
print(sorted(p.name for p in out.iterdir() if p.suffix == ".json"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "manifest.json" in done.stdout


def test_mbdata_and_mbtrain_export_no_name_twice():
    """One name, one meaning: ``mbdata.open_build`` (lenient reader) and
    ``mbtrain.open_training_build`` (a missing split is an error) must not share a name again."""
    import mbdata
    import mbtrain

    assert set(mbdata.__all__) & set(mbtrain.__all__) == set()
