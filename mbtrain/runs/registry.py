"""The runs of an experiment: the one authority for what ``mb run`` trains, evaluates and reports.

Each :class:`Run` says everything the rest of mbtrain needs to know about it:

- ``name`` (model and eval folder, report key), ``label`` (report table), ``short`` (plans and
  column heads), ``alias`` (the
  ``mb train stage1 --rows`` / ``mb train stage2 --method`` choice; ``None``: not trainable on its
  own);
- ``parent``: the run whose model it starts from (:data:`BASE`: the experiment's base model);
- ``split``: the rows it trains on: ``train`` (stage 1) or ``recovery`` (stage 2, epoch selection
  on ``recovery_eval``);
- ``train``: a function of a :class:`TrainContext` returning the model folder, whose objective
  brings its own trainer class and dataset builder (:mod:`mbtrain.engine.objectives`); ``None`` for a
  run that trains nothing and evaluates its parent's model (an inference-time defence);
- ``transform``: an optional inference-time input filter, made per evaluation
  (:class:`EvalTransform`), e.g. ONION;
- ``switch``: the ``train.baselines`` flag that turns it off (``None``: always on);
- ``uses_base``: it needs the experiment's base model besides its parent (Fine-mixing; ``mb
  train stage2`` then takes ``--base``);
- ``share``: which settings decide its model, for ``mb sweep``'s sharing between grid points
  (``stage1``: data + model + stage 1; ``baseline``: + the stage-2 optimiser and the baselines
  block; ``stage2``: + the whole stage-2 block).

:func:`mbtrain.experiment.pipeline.run_experiment` (its job graph), :func:`mbtrain.experiment.pipeline.train_run`, the
report, ``mb sweep``, :mod:`mbtrain.api` and the CLI all read :data:`RUNS`; a new defence is one
``RUNS.register(...)`` (docs/extending.md, "A new defence"). Registration order is report order.

This module imports no torch (the CLI reads it to build its choices).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from mbdata.core.registry import Registry

from mbtrain.runs.data import ATTACKED_ROLES, clean_examples, trigger_aug_examples

if TYPE_CHECKING:
    from mbtrain.config import TrainConfig
    from mbtrain.runs.stages import Runtime

BASE = "base"  # the parent of the stage-1 runs: the experiment's base model

Split = Literal["train", "recovery"]
Share = Literal["stage1", "baseline", "stage2"]


@dataclasses.dataclass(frozen=True)
class TrainContext:
    """What a run's ``train`` function is given."""

    name: str  # the run's name (the stage's name in its model record and log)
    parent: Any  # the model it starts from: a model folder, ModelSettings, or (model, tokenizer)
    base: Any  # the experiment's base model (what the stage-1 runs started from)
    rows: list[dict[str, Any]]  # its split's rows
    held_out: list[dict[str, Any]]  # recovery_eval rows (stage-2 runs): select the epoch
    out_dir: Path
    cfg: TrainConfig
    runtime: Runtime
    overwrite: bool = False


class EvalTransform(Protocol):
    """An inference-time filter of the evaluation prompts (an input-side defence)."""

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows as the defended model sees them (``instruction`` rewritten; the grading
        fields untouched), each with a ``removed`` list of what was taken out."""
        ...

    def record(self) -> dict[str, Any]:
        """Its settings, for the evaluation's cache key and the report."""
        ...


TransformFactory = Callable[["TrainConfig", Any, "Runtime"], EvalTransform]


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of the experiment (see the module docstring)."""

    name: str
    label: str
    parent: str
    split: Split
    train: Callable[[TrainContext], Path] | None
    share: Share
    alias: str | None = None
    switch: str | None = None
    transform: TransformFactory | None = None
    short: str = ""  # a short name for plans and column heads (default: the name)
    uses_base: bool = False  # it needs the experiment's base model besides its parent

    def enabled(self, cfg: TrainConfig) -> bool:
        return self.switch is None or bool(getattr(cfg.baselines, self.switch))

    @property
    def model(self) -> str:
        """The run whose model folder this run evaluates (itself, unless it trains nothing)."""
        return self.name if self.train is not None else self.parent


class RunRegistry(Registry[Run]):
    """The runs, in registration order (report order), looked up by name or CLI alias."""

    def register_run(self, run: Run) -> Run:
        """Add ``run`` (its parent first; its switch a ``train.baselines`` flag)."""
        from mbtrain.config import Baselines

        if run.parent != BASE and run.parent not in self:
            raise ValueError(f"run {run.name!r}: parent {run.parent!r} is not registered")
        if run.train is None and run.parent != BASE and self.get(run.parent).train is None:
            raise ValueError(f"run {run.name!r}: its parent {run.parent!r} trains no model")
        flags = {f.name for f in dataclasses.fields(Baselines) if f.type in (bool, "bool")}
        if run.switch is not None and run.switch not in flags:
            raise ValueError(
                f"run {run.name!r}: switch {run.switch!r} is not a train.baselines flag "
                f"({', '.join(sorted(flags))})"
            )
        return self.register(run.name, run)

    def in_order(self) -> list[Run]:
        return list(self._items.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def enabled(self, cfg: TrainConfig) -> list[Run]:
        """The runs ``cfg`` asks for (a switched-off run and the runs below it are left out)."""
        out: list[Run] = []
        names = {BASE}
        for run in self.in_order():
            if run.enabled(cfg) and run.parent in names:
                out.append(run)
                names.add(run.name)
        return out

    def aliases(self, split: Split) -> dict[str, str]:
        """CLI alias -> run name, for the trainable runs on ``split``."""
        return {
            r.alias: r.name
            for r in self.in_order()
            if r.alias and r.split == split and r.train is not None
        }

    def labels(self) -> dict[str, str]:
        return {r.name: r.label for r in self.in_order()}

    def shorts(self) -> dict[str, str]:
        return {r.name: r.short or r.name for r in self.in_order()}

    def sharing(self, share: Share, evaluated: bool = False) -> tuple[str, ...]:
        """The model folders ``mb sweep`` shares between points with the same ``share`` key
        (``evaluated``: also the runs that train nothing, whose evaluations it shares)."""
        return tuple(
            r.name
            for r in self.in_order()
            if r.share == share and (evaluated or r.train is not None)
        )


RUNS = RunRegistry("run")


# ---- the shipped runs ----------------------------------------------------------------------------


def sft_on_train(roles: tuple[str, ...] | None) -> Callable[[TrainContext], Path]:
    """Stage-1 fine-tuning (response-only cross-entropy, ``train.stage1``) on the ``train`` rows
    with one of ``roles`` (``None``: every row)."""

    def train(ctx: TrainContext) -> Path:
        from mbtrain.runs.data import train_examples
        from mbtrain.runs.stages import train_sft

        return train_sft(
            ctx.parent,
            train_examples(ctx.rows, roles),
            ctx.out_dir,
            ctx.cfg,
            name=ctx.name,
            stage=ctx.cfg.stage1,
            runtime=ctx.runtime,
            overwrite=ctx.overwrite,
        )

    return train


def sft_on_recovery(
    pick: Callable[[Any], list[Any]], fine_mixing: bool = False
) -> Callable[[TrainContext], Path]:
    """Cross-entropy with the stage-2 optimiser settings on ``pick(recovery rows)``, the epoch
    selected on ``pick(recovery_eval rows)`` (the last without them). ``fine_mixing``: the
    parent's weights are first mixed with the base model's (``train.baselines.
    fine_mixing_settings``, :mod:`mbtrain.runs.finemixing`)."""

    def train(ctx: TrainContext) -> Path:
        from mbtrain.runs.stages import Mixing, train_sft

        mix = None
        if fine_mixing:
            settings = ctx.cfg.baselines.fine_mixing_settings
            seed = ctx.cfg.seed if settings.seed is None else settings.seed
            mix = Mixing(ctx.base, settings.keep, seed)

        return train_sft(
            ctx.parent,
            pick(ctx.rows),
            ctx.out_dir,
            ctx.cfg,
            name=ctx.name,
            stage=ctx.cfg.stage2,
            eval_examples=pick(ctx.held_out) or None,
            select=ctx.cfg.stage2.select if ctx.held_out else "last",
            runtime=ctx.runtime,
            overwrite=ctx.overwrite,
            mix=mix,
        )

    return train


def neutralization(ctx: TrainContext) -> Path:
    """MB-Defense stage 2 on the recovery tuples (:class:`~mbtrain.engine.objectives.
    NeutralizationObjective`)."""
    from mbtrain.runs.data import recovery_tuples
    from mbtrain.runs.stages import train_neutralization

    return train_neutralization(
        ctx.parent,
        recovery_tuples(ctx.rows),
        recovery_tuples(ctx.held_out, "recovery_eval") or None,
        ctx.out_dir,
        ctx.cfg,
        name=ctx.name,
        runtime=ctx.runtime,
        overwrite=ctx.overwrite,
    )


RUNS.register_run(
    Run(
        "attacked",
        "Attacked (no defence)",
        parent=BASE,
        split="train",
        train=sft_on_train(ATTACKED_ROLES),
        share="stage1",
        alias="attacked",
        short="attacked",
    )
)
RUNS.register_run(
    Run(
        "clean_fft",
        "Attacked + Clean-FFT",
        parent="attacked",
        split="recovery",
        train=sft_on_recovery(clean_examples),
        share="baseline",
        alias="clean-fft",
        switch="clean_fft",
        short="Clean-FFT",
    )
)


def onion(cfg: TrainConfig, base: Any, runtime: Runtime) -> EvalTransform:
    """ONION's perplexity filter (:mod:`mbtrain.runs.onion`) in front of the attacked model."""
    from mbtrain.runs.onion import onion_filter

    return onion_filter(cfg, base, runtime)


RUNS.register_run(
    Run(
        "onion",
        "Attacked + ONION (filtered prompts)",
        parent="attacked",
        split="recovery",
        train=None,
        share="baseline",
        switch="onion",
        transform=onion,
        short="ONION",
    )
)
RUNS.register_run(
    Run(
        "fine_mixing",
        "Attacked + Fine-mixing",
        parent="attacked",
        split="recovery",
        train=sft_on_recovery(clean_examples, fine_mixing=True),
        share="baseline",
        alias="fine-mixing",
        switch="fine_mixing",
        uses_base=True,
        short="Fine-mixing",
    )
)
RUNS.register_run(
    Run(
        "trigger_aug",
        "Attacked + trigger-aug CE (control)",
        parent="attacked",
        split="recovery",
        train=sft_on_recovery(trigger_aug_examples),
        share="baseline",
        alias="trigger-aug",
        switch="trigger_aug",
        short="trigger-aug",
    )
)
RUNS.register_run(
    Run(
        "mb_stage1",
        "MB stage 1 only",
        parent=BASE,
        split="train",
        train=sft_on_train(None),
        share="stage1",
        alias="all",
        short="MB stage 1",
    )
)
RUNS.register_run(
    Run(
        "mb_defense",
        "MB-Defense (stage 1 + 2)",
        parent="mb_stage1",
        split="recovery",
        train=neutralization,
        share="stage2",
        alias="mb",
        short="MB stage 2",
    )
)


# ---- plugins -------------------------------------------------------------------------------------

RUN_PLUGINS = "mbdefense.runs"


def load_plugins() -> list[str]:
    """Register the runs of installed packages: each ``mbdefense.runs`` entry point names a
    module (registering its runs on import) or a callable taking :data:`RUNS`::

        [project.entry-points."mbdefense.runs"]
        my_defence = "my_package.defence:register"

    Done when this module is imported, so a plugin's runs exist in every process (the worker
    processes of ``train.model.jobs`` included); returns the entry points loaded."""
    from importlib.metadata import entry_points

    from mbdata.core.errors import RecipeError

    loaded = []
    for point in entry_points(group=RUN_PLUGINS):
        try:
            target = point.load()
            if callable(target):
                target(RUNS)
        except Exception as exc:  # a broken plugin: one line naming it, not a traceback
            raise RecipeError(
                f"{RUN_PLUGINS} entry point {point.name} ({point.value}): {exc}"
            ) from exc
        loaded.append(point.name)
    return loaded


load_plugins()
