"""mbtrain's layers stay layers: a module imports only from its own layer or the ones below it.

config (the recipe's ``train:`` block) < engine (how a model trains) < runs (what an experiment
trains) < evaluation (how a model is scored) < experiment (``mb run``, the report, ``mb sweep``) <
the package itself and :mod:`mbtrain.api`. Imports inside functions count too: a lazy import
upwards is still a dependency upwards."""

from __future__ import annotations

import ast
from pathlib import Path

import mbtrain

ROOT = Path(mbtrain.__file__).parent
ORDER = ["config", "engine", "runs", "evaluation", "experiment", "api"]
#: The modules outside the four layer packages, and the layer each ranks with.
TOP_LEVEL = {"config": "config", "trainer_args": "config", "api": "api"}


def layer_of(module: str) -> str:
    """``mbtrain.engine.trainer`` -> ``engine``; the package itself ranks with the API."""
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    return TOP_LEVEL.get(parts[1], parts[1])


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every mbtrain module a file imports, resolving relative imports."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mbtrain"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name == "mbtrain":  # from mbtrain import x: x is the module imported
                found.update(f"mbtrain.{a.name}" for a in node.names)
            elif name.startswith("mbtrain"):
                found.add(name)
    return found


def test_every_mbtrain_module_sits_in_a_known_layer():
    for path in ROOT.rglob("*.py"):
        assert layer_of(module_name(path)) in ORDER, f"{path}: not in a layer {ORDER}"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(ROOT.rglob("*.py")):
        mine = ORDER.index(layer_of(module_name(path)))
        for name in sorted(imported(path)):
            theirs = layer_of(name)
            if theirs in ORDER and ORDER.index(theirs) > mine:
                upward.append(f"{module_name(path)} imports {name}")
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_check_sees_lazy_and_relative_imports():
    """The walker finds imports inside functions and resolves relative ones (so the test above
    can fail): the engine's trainer imports its progress display lazily, and the runs package
    re-exports its registry."""
    assert "mbtrain.engine.progress" in imported(ROOT / "engine" / "trainer.py")
    assert "mbtrain.runs.registry" in imported(ROOT / "runs" / "__init__.py")
    assert layer_of("mbtrain.experiment.sweep") == "experiment"
    assert layer_of("mbtrain.trainer_args") == "config"
