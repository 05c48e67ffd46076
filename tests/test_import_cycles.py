"""No import cycles inside mbdata (issue 28): ``recipe`` <-> ``io.readers`` <-> ``behaviors`` (and
through them ``io.manifest`` <-> ``io.shards``) were one; a cycle makes import order matter and
forces lazy imports everywhere. The graph is read from the source with ``ast``: every import
statement counts, module-level or inside a function (a lazy import is still a dependency), except
those under ``if TYPE_CHECKING:``. ``from pkg import name`` depends on ``pkg.name`` when that is a
module, else on ``pkg`` (its ``__init__``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Cycles known and owned elsewhere, allowed until their owners remove them (then delete the line):
# (dedup/stream <-> dedup/ray_engine was one: the executor layer removed it.)
ALLOWED_CYCLES: list[set[str]] = []
# Edges allowed to close a cycle, each with its owner (outside the readers/CLI cleanup's scope):
ALLOWED_EDGES = {
    # dedup/standalone borrows the build's skipped-rows helpers (SKIPPED_FILE, skipped_jsonl,
    # skipped_summary): build -> dedup -> build. Moves with the streaming build (issue 28 item 2).
    ("mbdata.dedup.standalone", "mbdata.build"),
}
# The audit package's internal cycles (its signal registry package and its modules, corpus <->
# counts ...) belong to the audit's own code; a cycle that leaves mbdata.audit is not allowed.
ALLOWED_INSIDE = "mbdata.audit"


def module_files(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package ``__init__``)."""
    mods = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return mods


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    return skip


def imports_of(module: str, path: Path, is_pkg: bool, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``module`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    deps: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: None if is_pkg else -1]
                base = base[: len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            targets = [
                f"{base_name}.{a.name}" if f"{base_name}.{a.name}" in known else base_name
                for a in node.names
            ]
        else:
            continue
        deps.update(t for t in targets if t in known and t != module)
    return deps


def import_graph(package: Path) -> dict[str, set[str]]:
    mods = module_files(package)
    return {m: imports_of(m, p, is_pkg, set(mods)) for m, (p, is_pkg) in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(component)
    return found


def disallowed_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    pruned = {m: set(deps) for m, deps in graph.items()}
    for a, b in ALLOWED_EDGES:
        pruned.get(a, set()).discard(b)
    for pair in ALLOWED_CYCLES:
        for a in pair:
            pruned.get(a, set()).difference_update(pair - {a})
    return [
        sorted(c)
        for c in cycles(pruned)
        if not all(m == ALLOWED_INSIDE or m.startswith(ALLOWED_INSIDE + ".") for m in c)
    ]


def test_mbdata_has_no_import_cycle():
    assert disallowed_cycles(import_graph(ROOT / "mbdata")) == []


def test_the_reader_recipe_behaviour_cycle_is_gone():
    graph = import_graph(ROOT / "mbdata")
    readers = {m for m in graph if m.startswith("mbdata.io.readers")}
    assert readers, "the readers package was not found"
    for m in readers | {"mbdata.behaviors", "mbdata.io.manifest"}:
        assert "mbdata.recipe" not in graph[m], m
    assert "mbdata.io.shards" not in graph["mbdata.io.manifest"]


def test_the_check_finds_a_cycle(tmp_path):
    """The checker itself can fail: a two-module package importing each other, lazily, is found,
    and a TYPE_CHECKING-only import is not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .a import x\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n"
    )
    (pkg / "d.py").write_text("from .c import y\n")
    graph = import_graph(pkg)
    assert cycles(graph) == [{"pkg.a", "pkg.b"}]
    assert graph["pkg.c"] == set() and graph["pkg.d"] == {"pkg.c"}
    assert disallowed_cycles(graph) == [["pkg.a", "pkg.b"]]
