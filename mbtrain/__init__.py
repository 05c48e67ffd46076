"""mbtrain: train and evaluate MB-Defense on mbdata build folders.

A thin layer over the field's trainer stack: TRL's ``SFTTrainer`` for every cross-entropy stage and
a ``transformers.Trainer`` subclass (``NeutralizationTrainer``) for MB stage 2, so ``torchrun`` /
``accelerate launch``, DeepSpeed/FSDP, LoRA through peft and ``report_to`` work as users expect.
It reads only build folders (Arrow shards plus
``manifest.json``) and takes its settings from the recipe's ``train:`` block
(:class:`mbtrain.config.TrainConfig`). Importing this package is cheap: torch and transformers load
only when a training or evaluation function is first used (``mb recipe validate`` imports
``mbtrain.config`` and must stay light).

Public API::

    open_training_build(dir) -> TrainingBuild  # strict: a missing split is an error
    build_tiny_base(build, cfg, out_dir) -> Path
    train_sft(parent, examples, out_dir, cfg, name=..., stage=cfg.stage1) -> Path
    train_neutralization(parent, tuples, eval_tuples, out_dir, cfg) -> Path
    evaluate(model_dir, build, cfg, out_dir=...) -> metrics
    NeutralizationTrainer(model=, args=, train_dataset=[RecoveryItem], lam=, pad_id=)  # stage 2
    run_experiment(build_dir, out_dir) -> report      # every run of RUNS + report files
    RUNS  # mbtrain.runs.registry: the runs of the experiment (register a new defence there)
    run_recipe(recipe, out_dir) -> report             # `mb run`: mbdata.build, then run_experiment

:mod:`mbtrain.api` has one function per ``mb`` training command (``train_stage1``, ``run``, ...).
"""

from __future__ import annotations

import importlib
from typing import Any

from mbtrain.config import TrainConfig

_LAZY = {
    "open_training_build": "engine.builds",
    "TrainingBuild": "engine.builds",
    "build_tiny_base": "experiment.pipeline",
    "run_experiment": "experiment.pipeline",
    "run_recipe": "experiment.pipeline",
    "train_sft": "runs.stages",
    "train_neutralization": "runs.stages",
    "evaluate": "evaluation.evaluate",
    "load_model": "engine.models",
    "NeutralizationTrainer": "engine.trainer",
    "RUNS": "runs.registry",
}

__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'mbtrain' has no attribute {name!r}")
