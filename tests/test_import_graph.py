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


def _module_graph(packages: list[str]) -> dict[str, set[str]]:
    """Edges module -> module inside ``packages`` (every import statement, function-level ones
    included; ``from . import x`` names the submodule ``x`` when there is one)."""
    modules = {}
    for package in packages:
        for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        base = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    up = base[: len(base) - (node.level - 1)]
                    module = ".".join(up + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                subs = [f"{module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in modules] or [module]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_no_import_cycles_in_the_data_engines():
    """The dedup modules and the executors import each other in one direction only (the old
    ``dedup/stream.py`` <-> ``dedup/ray_engine.py`` cycle is gone and stays gone)."""
    graph = _module_graph(["mbdata.dedup", "mbdata.executors", "mbdata.engines"])
    assert "mbdata.dedup.stream" in graph and "mbdata.executors.ray_executor" in graph
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            # a package importing its own submodules is how packages work, not a cycle
            if node == nxt.rsplit(".", 1)[0]:
                continue
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
