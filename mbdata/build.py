"""``mb build``: a recipe becomes a build folder, as a pure function of (recipe, input bytes, seed).

The pipeline is one straight line of stages (:mod:`mbdata.pipeline`)::

    sources -> [audit] -> [dedup] -> holdout -> [attacks] -> [defense] -> [recovery] -> eval
            -> [pretrain_noise] -> leak_check -> shards + manifest + card

Bracketed stages run when the recipe has the block. Every stage's statistics go into the manifest.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pyarrow as pa

from .artifacts import SkippedRows, TriggerSets
from .core.atomic import (
    SPILL_TAG,
    check_output_dir,
    check_separate,
    output_path,
    temp_sibling,
)
from .core.errors import BuildError, RecipeError
from .core.memory import build_memory_pool
from .io.card import dataset_card
from .io.manifest import MANIFEST_VERSION, library_versions
from .io.rows import SplitRows, split_rows
from .io.schema import SCHEMA_VERSION, empty_table
from .io.shards import write_build
from .io.spill import spilling
from .pipeline import BuildContext, Stage, StageStats, check_wiring, run_stage
from .recipe import LoadedRecipe, Recipe, load_recipe


def pipeline(recipe: Recipe) -> list[Stage]:
    """The stages a recipe runs, in order."""
    from .stages.attacks import AttackStage
    from .stages.defense import DefenseStage
    from .stages.evalsets import EvalStage
    from .stages.noise import PretrainNoiseStage
    from .stages.recovery import RecoveryStage
    from .stages.sources import SourcesStage
    from .stages.splits import HoldoutStage, LeakCheckStage

    stages: list[Stage] = [SourcesStage(recipe)]
    if recipe.audit is not None:
        from .audit import AuditStage

        stages.append(AuditStage(recipe.audit))
    if recipe.dedup is not None:
        from .dedup import DedupStage

        stages.append(DedupStage(recipe.dedup))
    stages.append(HoldoutStage(recipe))
    if recipe.attacks:
        stages.append(AttackStage(recipe.attacks))
    if recipe.defense is not None:
        stages.append(DefenseStage(recipe.defense))
    if recipe.recovery is not None:
        stages.append(RecoveryStage(recipe.recovery))
    stages.append(EvalStage(recipe.eval))
    if recipe.pretrain is not None:
        stages.append(PretrainNoiseStage(recipe.pretrain))
    stages.append(LeakCheckStage())
    check_wiring(stages)
    return stages


@dataclasses.dataclass
class BuildResult:
    """The corpus of a build before it is written (every row names its ``split``), with everything
    the manifest needs. The writer takes each split's rows from ``corpus`` one shard at a time
    (:attr:`splits`); :attr:`tables` materialises whole split tables for a Python caller."""

    corpus: pa.Table
    stats: list[StageStats]
    context: BuildContext

    @functools.cached_property
    def splits(self) -> dict[str, SplitRows]:
        """Each split's rows by position (in corpus order), without copying them."""
        return split_rows(self.corpus)

    @functools.cached_property
    def tables(self) -> dict[str, pa.Table]:
        """Each split as one table (a copy of its rows; the build itself never makes these)."""
        return {name: rows.table() for name, rows in self.splits.items()}

    def skipped_rows(self) -> list[dict[str, Any]]:
        found = self.context.artifacts.get(SkippedRows)
        return list(found.records) if found else []

    def trigger_records(self) -> list[dict[str, Any]]:
        planted = self.context.artifacts.get(TriggerSets)
        return planted.manifest_records() if planted else []


def build_in_memory(
    loaded: LoadedRecipe,
    *,
    skip_bad_rows: bool = False,
    progress: bool = False,
    engine: str | None = None,
) -> BuildResult:
    """Run every stage in memory and return the tables per split (nothing is written).

    ``engine`` (default: the recipe's ``engine``, itself ``local`` by default) names the executor
    the per-batch steps run on (:mod:`mbdata.executors`: ``local``, ``process``, or ``ray`` with
    ``RAY_ADDRESS`` or a private local Ray), with the same tables on every one."""
    from .executors import check_engine, open_executor

    engine = check_engine(engine or loaded.recipe.engine)
    with open_executor(engine):
        return _run_stages(loaded, skip_bad_rows, progress, engine)


def _run_stages(
    loaded: LoadedRecipe, skip_bad_rows: bool, progress: bool, engine: str
) -> BuildResult:
    recipe = loaded.recipe
    ctx = BuildContext(
        seed=recipe.seed,
        base_dir=loaded.base_dir,
        skip_bad_rows=skip_bad_rows,
        progress=progress,
        engine=engine,
    )
    table = empty_table()
    stats = []
    stages = pipeline(recipe)
    bar = None
    from .core.progress import show_progress

    if show_progress(progress):  # no \r into a file or pipe
        from tqdm import tqdm

        bar = tqdm(stages, desc="build", unit="stage", leave=False)
    try:
        for stage in stages:
            if bar is not None:
                bar.set_postfix_str(stage.name)
            owned = [table]  # handed over: the stage may free the old columns as it goes
            del table
            table, stage_stats = run_stage(stage, owned, ctx)
            stats.append(stage_stats)
            if bar is not None:
                bar.update(1)
    finally:
        # Cleared before an error is printed, so the message gets a line of its own.
        if bar is not None:
            bar.close()
    return BuildResult(corpus=table, stats=stats, context=ctx)


def with_seed(loaded: LoadedRecipe, seed: int | None) -> LoadedRecipe:
    """The same recipe with its seed replaced (the resolved recipe records the new seed)."""
    if seed is None or seed == loaded.recipe.seed:
        return loaded
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecipeError(f"seed: must be an integer >= 0, got {seed!r}")
    return dataclasses.replace(loaded, recipe=dataclasses.replace(loaded.recipe, seed=seed))


SKIPPED_FILE = "skipped.jsonl"


def skipped_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``skipped_rows``: how many rows ``--skip-bad-rows`` dropped, per source and
    reason, and the file listing each one."""
    by: dict[str, int] = {}
    for r in records:
        key = f"{r['source']}:{r['reason']}"
        by[key] = by.get(key, 0) + 1
    import hashlib

    return {
        "rows": len(records),
        "by_reason": dict(sorted(by.items())),
        "file": SKIPPED_FILE,
        "sha256": hashlib.sha256(skipped_jsonl(records)).hexdigest(),
    }


def skipped_jsonl(records: list[dict[str, Any]]) -> bytes:
    import json

    return "".join(
        json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records
    ).encode("utf-8")


def make_manifest(loaded: LoadedRecipe, result: BuildResult, skip_bad_rows: bool) -> dict[str, Any]:
    recipe = loaded.recipe
    skipped = result.skipped_rows()
    # Only present when rows were skipped, so builds without skipped rows keep their content hash.
    extra = {"skipped_rows": skipped_summary(skipped)} if skipped else {}
    return {
        "manifest_version": MANIFEST_VERSION,
        "schema_version": SCHEMA_VERSION,
        "name": recipe.name,
        "version": recipe.version,
        "recipe": loaded.resolved,
        "fingerprint": loaded.fingerprint,
        "seed": recipe.seed,
        "inputs": dict(sorted(result.context.inputs.items())),
        "versions": library_versions(),
        "options": {"skip_bad_rows": skip_bad_rows},
        "stages": [s.as_manifest() for s in result.stats],
        "triggers": result.trigger_records(),
        **extra,
    }


def recipe_inputs(loaded: LoadedRecipe) -> list[Path]:
    """The recipe file and its local source files (what an output must never overwrite)."""
    paths = [loaded.path] if loaded.path is not None else []
    for source in loaded.recipe.sources:
        if source.kind not in ("synthetic", "hub") and source.path:
            p = Path(source.path).expanduser()
            paths.append(p if p.is_absolute() else loaded.base_dir / p)
    return paths


def build(
    recipe: LoadedRecipe | str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    skip_bad_rows: bool = False,
    seed: int | None = None,
    progress: bool = False,
    hooks: bool = True,
    engine: str | None = None,
) -> Path:
    """Build a recipe into ``out_dir`` (atomically) and return the folder.

    ``recipe`` is a :class:`LoadedRecipe` or a path to a recipe file. ``seed`` overrides the
    recipe's seed (and is recorded in the resolved recipe). ``skip_bad_rows`` drops malformed input
    rows instead of failing: they are counted in the manifest (``skipped_rows``) and the card, and
    each is listed with its reason in ``skipped.jsonl``. A recipe with a rewrite hook
    (``function: module:fn``) runs that code; ``hooks=False`` refuses such a recipe.
    ``engine`` overrides the recipe's ``engine`` (``local`` or ``ray``; the same shards either way).
    """
    loaded = recipe if isinstance(recipe, LoadedRecipe) else load_recipe(recipe, hooks=hooks)
    if not hooks:
        from .behaviors import check_hooks

        check_hooks(loaded.recipe, loaded.base_dir, allow=False)
    loaded = with_seed(loaded, seed)
    out_dir = Path(out_dir)
    check_separate(recipe_inputs(loaded), [out_dir])
    check_output_dir(out_dir, overwrite, kind="build")
    # The corpus lives in a hidden sibling of the output while it is built (mbdata.io.spill).
    spill = temp_sibling(output_path(out_dir), SPILL_TAG)
    with build_memory_pool(), spilling(spill):  # jemalloc where available: mbdata.core.memory
        return _build_and_write(loaded, out_dir, overwrite, skip_bad_rows, progress, engine)


def _build_and_write(
    loaded: LoadedRecipe,
    out_dir: Path,
    overwrite: bool,
    skip_bad_rows: bool,
    progress: bool,
    engine: str | None,
) -> Path:
    result = build_in_memory(loaded, skip_bad_rows=skip_bad_rows, progress=progress, engine=engine)
    train = result.splits.get("train")
    if train is None or not train.num_rows:
        raise BuildError(
            "the build has no train rows; add rows to the sources or lower "
            "eval/recovery/pretrain sizes"
        )
    manifest = make_manifest(loaded, result, skip_bad_rows)
    timings = {s.name: round(s.seconds, 4) for s in result.stats}
    skipped = result.skipped_rows()
    extra = {SKIPPED_FILE: skipped_jsonl(skipped)} if skipped else None
    return write_build(
        out_dir,
        result.splits,
        manifest,
        side_tables=result.context.side_tables,
        overwrite=overwrite,
        shard_rows=loaded.recipe.output.shard_rows,
        card=build_card,
        timings=timings,
        extra_files=extra,
    )


def build_card(manifest: dict[str, Any], root: Path) -> str:
    """The card of a build. ``datasets`` records a split's ``num_bytes`` as the Arrow
    size of the rows it read, so the sizes are taken from the shards as written (the in-memory
    tables may carry validity buffers the IPC writer leaves out)."""
    split_bytes = {}
    for name, split in manifest["splits"].items():
        total = 0
        for shard in split["shards"]:
            with pa.memory_map(str(root / shard["path"])) as source:
                total += pa.ipc.open_file(source).read_all().nbytes
        split_bytes[name] = total
    return dataset_card(manifest, split_bytes)
