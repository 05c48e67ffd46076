"""One function per training command: what ``mb train base|stage1|stage2``, ``mb eval``,
``mb run``, ``mb demo`` and ``mb sweep`` do, callable from Python with the same arguments.

The click commands in ``cli/commands/`` only parse options, call one of these and print the
result. Settings come from the build's ``manifest["recipe"]["train"]`` (or the recipe); the
keyword arguments override a few of them (``None`` keeps the recipe's value). Which rows and
settings each run trains with is its entry in :data:`mbtrain.runs.registry.RUNS`, read by
:func:`mbtrain.experiment.pipeline.train_run` for these commands and :func:`mbtrain.experiment.pipeline.run_experiment`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbdata.core.atomic import check_separate
from mbdata.core.errors import MBError
from mbtrain.config import ModelSettings, TrainConfig
from mbtrain.engine.builds import TrainingBuild, open_training_build
from mbtrain.experiment.overrides import shipped_recipe, with_overrides
from mbtrain.runs.registry import RUNS

# ``mb train stage1 --rows`` and ``mb train stage2 --method``: the run each choice trains (the
# registry's CLI aliases; read when called, so a run registered later is offered too).


def stage1_rows() -> dict[str, str]:
    return RUNS.aliases("train")


def stage2_methods() -> dict[str, str]:
    return RUNS.aliases("recovery")


def _run_named(aliases: dict[str, str], alias: str, option: str) -> str:
    if alias not in aliases:
        raise MBError(f"{option}: unknown run {alias!r}; valid names: {', '.join(aliases)}")
    return aliases[alias]


def _quiet(msg: str) -> None:
    """A log that says nothing."""


def load_for_training(
    build_dir: str | Path,
    *,
    out: str | Path | None = None,
    models: tuple[str | Path | None, ...] = (),
    device: str | None = None,
    threads: int | None = None,
    **overrides: Any,
) -> tuple[TrainingBuild, TrainConfig]:
    """The build and its train config with the command's overrides; first refuses an output
    that is, holds or lies inside the build or an input model folder (``overwrite`` would
    destroy it)."""
    check_separate([build_dir, *models], [out])
    build = open_training_build(build_dir)
    cfg = with_overrides(build.train_config(), device=device, threads=threads, **overrides)
    return build, cfg


def start_model(cfg: TrainConfig, base: str | Path | None) -> str | Path | ModelSettings:
    """The model a stage-1 run starts from: ``base`` when given, else the recipe's model; the
    tiny model has to be built first (``mb train base``)."""
    if base:
        return base
    if cfg.model.name == "tiny":
        raise MBError(
            "the recipe's model is 'tiny': build it first with `mb train base BUILD "
            "-o DIR` and pass --base DIR"
        )
    return cfg.model


def train_base(
    build_dir: str | Path,
    out: str | Path,
    *,
    epochs: int | None = None,
    overwrite: bool = False,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    trainer_args: dict[str, Any] | None = None,
) -> Path:
    """``mb train base``: the tiny base model (tokenizer + small Llama pretrained on the
    ``pretrain`` split); ``epochs`` overrides ``train.model.tiny.pretrain_epochs``."""
    from mbtrain.experiment.pipeline import build_tiny_base
    from mbtrain.runs.stages import make_runtime

    build, cfg = load_for_training(
        build_dir, out=out, device=device, threads=threads, pretrain_epochs=epochs
    )
    runtime = make_runtime(cfg, progress, trainer_args)
    return build_tiny_base(build, cfg, out, runtime, overwrite=overwrite)


def train_stage1(
    build_dir: str | Path,
    out: str | Path,
    *,
    base: str | Path | None = None,
    rows: str = "all",
    epochs: int | None = None,
    overwrite: bool = False,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    trainer_args: dict[str, Any] | None = None,
) -> Path:
    """``mb train stage1``: instruction-tune on the build's train split with the stage-1
    settings; ``rows`` is ``all`` (MB stage 1) or ``attacked`` (clean + attack rows: the
    attacked baseline)."""
    from mbtrain.experiment.pipeline import train_run
    from mbtrain.runs.stages import make_runtime

    build, cfg = load_for_training(
        build_dir, out=out, models=(base,), device=device, threads=threads, stage1_epochs=epochs
    )
    train = build.rows("train")
    parent = start_model(cfg, base)
    runtime = make_runtime(cfg, progress, trainer_args)
    name = _run_named(stage1_rows(), rows, "--rows")
    return train_run(name, parent, train, out, cfg, runtime, overwrite=overwrite)


def train_stage2(
    build_dir: str | Path,
    model_dir: str | Path,
    out: str | Path,
    *,
    method: str = "mb",
    base: str | Path | None = None,
    epochs: int | None = None,
    lam: float | None = None,
    overwrite: bool = False,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    trainer_args: dict[str, Any] | None = None,
) -> Path:
    """``mb train stage2``: neutralize (``method="mb"``, MB stage 2) or train a baseline
    (``clean-fft``, ``fine-mixing``, ``trigger-aug``) from ``model_dir`` on the recovery split.
    ``base``: the pre-trained model Fine-mixing mixes with (default: the recipe's model)."""
    from mbtrain.experiment.pipeline import train_run
    from mbtrain.runs.stages import make_runtime

    build, cfg = load_for_training(
        build_dir,
        out=out,
        models=(model_dir, base),
        device=device,
        threads=threads,
        stage2_epochs=epochs,
        lam=lam,
    )
    name = _run_named(stage2_methods(), method, "--method")
    pretrained = start_model(cfg, base) if RUNS.get(name).uses_base else None
    recovery = build.rows("recovery")
    recovery_eval = build.rows("recovery_eval") if build.has("recovery_eval") else []
    runtime = make_runtime(cfg, progress, trainer_args)
    return train_run(
        name,
        model_dir,
        recovery,
        out,
        cfg,
        runtime,
        recovery_eval=recovery_eval,
        base=pretrained,
        overwrite=overwrite,
    )


def evaluate_model(
    model_dir: str | Path,
    build_dir: str | Path,
    *,
    out: str | Path | None = None,
    limit: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``mb eval``: generate on eval_clean / eval_triggered and score (CACC, ASR, AACC,
    defensive rates); ``out`` also gets metrics.json and generations.jsonl."""
    from mbtrain.evaluation.evaluate import evaluate
    from mbtrain.runs.stages import make_runtime

    build, cfg = load_for_training(
        build_dir, out=out, models=(model_dir,), device=device, threads=threads, limit=limit
    )
    runtime = make_runtime(cfg, progress)
    return evaluate(model_dir, build, cfg, out_dir=out, runtime=runtime, name=Path(model_dir).name)


def run(
    recipe: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    limit: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    trainer_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``mb run``: build the recipe into ``out/data``, train every run, evaluate, write
    ``out/report.*`` (:func:`mbtrain.experiment.pipeline.run_recipe`); resumes an interrupted run."""
    from mbtrain.experiment.pipeline import run_recipe

    return run_recipe(
        recipe,
        out,
        overwrite=overwrite,
        progress=progress,
        cfg_override=lambda cfg: with_overrides(cfg, device=device, threads=threads, limit=limit),
        log=log or _quiet,
        trainer_args=trainer_args,
    )


def demo(
    out: str | Path,
    *,
    overwrite: bool = False,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``mb demo``: :func:`run` on the shipped demo recipe (a tiny model, synthetic data)."""
    return run(
        str(shipped_recipe("demo")),
        out,
        overwrite=overwrite,
        device=device,
        threads=threads,
        progress=progress,
        log=log,
    )


def sweep_plan(recipe: str | Path, sets: list[str] | tuple[str, ...]) -> str:
    """``mb sweep --plan``: every point validated, and what the grid will train, as text."""
    from mbtrain.experiment.sweep import describe, parse_set, plan

    return describe(plan(recipe, [parse_set(s) for s in sets])[1])


def sweep(
    recipe: str | Path,
    sets: list[str] | tuple[str, ...],
    out: str | Path,
    *,
    limit: int | None = None,
    device: str | None = None,
    threads: int | None = None,
    diagnostics: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """``mb sweep``: MB-Defense over a grid of recipe settings (``KEY=V1,V2`` per entry of
    ``sets``), one table in ``out/sweep.*``; finished points are skipped on a re-run."""
    from mbtrain.experiment.sweep import parse_set, run_sweep

    return run_sweep(
        recipe,
        [parse_set(s) for s in sets],
        out,
        cfg_override=lambda cfg: with_overrides(cfg, device=device, threads=threads, limit=limit),
        diagnostics=diagnostics,
        progress=progress,
        log=log or _quiet,
    )


def relaunch(config: str | Path, argv: list[str] | tuple[str, ...]) -> int | None:
    """``--accelerate-config FILE``: run ``argv`` (``sys.argv``) again under ``accelerate launch
    --config_file FILE`` and return its exit code; ``None`` inside an already launched process
    (the option is then a no-op). A config that cannot run here is a one-line :class:`MBError`
    before anything starts (:mod:`mbtrain.engine.launch`)."""
    from mbtrain.engine.launch import launched
    from mbtrain.engine.launch import relaunch as run_launched

    if launched():
        return None
    return run_launched(config, argv)


def finished_model_line(path: str | Path) -> str | None:
    """What a training command prints when its model is written (``None`` on every rank but the
    main one: under torchrun / accelerate launch, rank 0 speaks)."""
    from mbtrain.engine.models import read_marker
    from mbtrain.runs.stages import is_main_process

    if not is_main_process():
        return None
    marker = read_marker(path)
    return (
        f"wrote {path} ({marker['kind']}, stage {marker['stage']}, epoch "
        f"{marker['selected_epoch']} kept, {marker['seconds']:.1f} s)"
    )
