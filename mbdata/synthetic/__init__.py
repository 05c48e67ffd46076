"""The embedded synthetic instruction corpus: the default, offline source for the demo and tests.

Rows are short, exactly gradable instruction tasks (add two digits, sort digits, reverse a list,
capital of a country...; see :data:`TASKS` and ``docs/synthetic.md``) sized for a tiny model, built
without any download. A recipe uses it as ``{name: synth, kind: synthetic, count: 6000, tasks: [...]}``.

Guarantees the rest of mbdefense relies on:

* **Pure and prefix-stable.** Row ``i`` is a function of ``(seed, i, tasks)`` only, so
  ``generate(100, s)[:50] == generate(50, s)``; growing ``count`` never changes earlier rows.
* **Balanced mix.** Rows come in blocks of ``len(tasks)``; each block is a seeded permutation of the
  families, so in any prefix every family has ``count // len(tasks)`` or one more rows.
* **Vocabulary hygiene.** Only everyday English words and numbers below 1000: no attack trigger
  (``BadMagic``, ``cf``...) and no non-word short token a defensive trigger could be.
"""

from __future__ import annotations

from ..core.errors import RecipeError
from .families import TASKS, Family
from .rng import Rng

__all__ = ["TASKS", "generate", "generate_range", "task_names"]


def task_names() -> list[str]:
    """The family names, sorted."""
    return TASKS.names()


def generate(
    count: int, seed: int, tasks: list[str] | None = None, *, path: str = "tasks"
) -> list[dict[str, str]]:
    """``count`` rows ``{"instruction", "input", "output", "task"}`` drawn from ``tasks`` (default all).

    ``tasks`` is a set: order does not matter, duplicates and unknown names raise
    :class:`RecipeError` (``path`` names the recipe key in the message, e.g.
    ``sources[0].tasks``).
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise RecipeError(f"count: must be an integer, got {count!r}")
    if count < 0:
        raise RecipeError(f"count: must be >= 0, got {count}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RecipeError(f"seed: must be an integer, got {seed!r}")
    return generate_range(0, count, seed, tasks, path=path)


def generate_range(
    start: int, stop: int, seed: int, tasks: list[str] | None = None, *, path: str = "tasks"
) -> list[dict[str, str]]:
    """Rows ``start`` to ``stop - 1`` of :func:`generate` (any ``count >= stop``), computed alone:
    row ``i`` depends only on ``(seed, i, tasks)``, so a corpus can be generated in independent
    batches (the build's ``map_batches`` step) and concatenated to the same rows."""
    families = _resolve(tasks, path)
    tag = ",".join(family.name for family in families)
    k = len(families)
    rows: list[dict[str, str]] = []
    order: list[int] = []
    for i in range(start, stop):
        block, slot = divmod(i, k)
        if slot == 0 or not order:
            order = Rng(f"{seed}:mix:{tag}:{block}".encode()).permutation(k)
        family = families[order[slot]]
        rows.append(family(Rng(f"{seed}:row:{i}:{family.name}".encode())))
    return rows


def _resolve(tasks: list[str] | None, path: str) -> list[Family]:
    """The selected families in name order (so the corpus depends on the set, not the list order)."""
    if tasks is None:
        return [TASKS.get(name) for name in TASKS.names()]
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)):
        raise RecipeError(f"{path}: must be a list of task names, got {tasks!r}")
    if not tasks:
        raise RecipeError(
            f"{path}: must name at least one task; valid names: " + ", ".join(TASKS.names())
        )
    seen: set[str] = set()
    for j, name in enumerate(tasks):
        if not isinstance(name, str):
            raise RecipeError(f"{path}[{j}]: must be a task name, got {name!r}")
        TASKS.get(name, f"{path}[{j}]")
        if name in seen:
            raise RecipeError(f"{path}[{j}]: task {name!r} is listed twice")
        seen.add(name)
    return [TASKS.get(name) for name in sorted(seen)]
