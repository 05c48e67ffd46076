"""Training stages: each turns a parent model plus rows into a new model folder.

A stage works in ``.NAME.partial/`` beside its output (checkpoints, log); the finished model is
written with :func:`mbdata.core.atomic.atomic_dir`, so an output folder is always complete. Calling a
stage whose output exists returns it untouched; calling it after an interruption resumes from the
last checkpoint.

Both are guarded by a *resume key*: a hash of everything that decides the trained weights (the
parent model, the rows, the optimiser and loop settings with the seed, the prompt format, the
objective). A checkpoint or a finished folder made with another key is never silently reused:
the stage stops with an error that says what to delete (or to pass ``overwrite``). Device,
threads, the checkpoint interval and the numeric environment (CPU kernels, library versions,
process layout: :mod:`mbtrain.engine.environment`, recorded in the folder as ``environment``) are not
part of the key: a run may resume elsewhere, and a folder trained elsewhere is reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mbdata.core.atomic import (
    OVERWRITE_HINT,
    atomic_dir,
    check_output_dir,
    mark_dir,
    remove_output_dir,
    written_by_us,
)
from mbdata.core.config import to_mapping
from mbdata.core.errors import BuildError

from mbtrain.engine import models
from mbtrain.config import ModelSettings, TrainConfig
from mbtrain.runs.data import Example, Tuple4
from mbtrain.engine.environment import numeric_environment
from mbtrain.engine.formatting import EncodeStats, Formatter
from mbtrain.engine.objectives import NeutralizationObjective, RecoveryItem, SFTObjective
from mbtrain.engine.trainer import LOG, FitSettings, fit, is_main_process, last_checkpoint


@dataclasses.dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp: torch.dtype | None
    progress: bool = True
    trainer_args: tuple[tuple[str, Any], ...] = ()  # further (SFTConfig) TrainingArguments


def make_runtime(
    cfg: TrainConfig, progress: bool = True, trainer_args: dict[str, Any] | None = None
) -> Runtime:
    """Device, autocast and the ``trainer_args`` passthrough: the recipe's
    ``train.trainer_args`` with the command's ``--trainer-arg`` (``trainer_args``) on top, key by
    key, checked here before any work (an unknown key is a one-line error naming it)."""
    from mbtrain.trainer_args import check_trainer_args, merge

    device = models.resolve_device(cfg.model.device)
    if cfg.model.threads:
        torch.set_num_threads(cfg.model.threads)
    merged = merge(cfg.trainer_args, trainer_args)
    if merged:
        merged = check_trainer_args(merged)
    return Runtime(
        device=device,
        amp=models.autocast_dtype(cfg.model.dtype, device),
        progress=progress,
        trainer_args=tuple(sorted(merged.items())),
    )


def barrier() -> None:
    """Wait for every process (a no-op without a distributed launch)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def formatter_for(tokenizer: Any, cfg: TrainConfig) -> Formatter:
    return Formatter(tokenizer, cfg.model.template, cfg.model.max_length, cfg.model.system)


def _partial(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.partial")


def _prepare(model: Any, mode: str, lora: Any, seed: int, wrap: bool) -> tuple[Any, Any]:
    """(model, peft_config): SFTTrainer takes LoRA as a ``peft_config``; the stage-2 Trainer
    gets a model already wrapped (``wrap``). Gradient checkpointing is the Trainer's
    (``gradient_checkpointing`` argument)."""
    torch.manual_seed(seed)
    if mode == "lora":
        if wrap:
            if getattr(model, "is_gradient_checkpointing", False):
                model.enable_input_require_grads()
            return models.wrap_lora(model, lora), None
        return model, models.lora_config(lora)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, None


def parent_identity(parent: Any) -> Any:
    """What the resume key records about the parent: an mbtrain folder's record (its own key
    included), base settings, or a digest of an in-memory model's weights and tokenizer."""
    if isinstance(parent, ModelSettings):
        return {"base": {k: getattr(parent, k) for k in models.BASE_KEYS}}
    if isinstance(parent, tuple):
        model, tokenizer = parent
        digest = hashlib.sha256()
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(
                tensor.detach().to("cpu").contiguous().flatten().view(torch.uint8).numpy().tobytes()
            )
        digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
        return {"memory": digest.hexdigest()}
    path = Path(parent)
    if models.is_model_folder(path):
        return {"model_record": hashlib.sha256((path / models.MARKER).read_bytes()).hexdigest()}
    return {"folder": str(path.resolve())}


def resume_key(
    *,
    parent: Any,
    data: Any,
    settings: FitSettings,
    cfg: TrainConfig,
    mode: str,
    lora: Any,
    objective: dict[str, Any],
) -> str:
    """The hash that a checkpoint and a finished model folder must match to be reused (see the
    module docstring)."""
    fit_settings = {k: v for k, v in settings.record().items() if k != "checkpoint_every"}
    parts = {
        "parent": parent_identity(parent),
        "data": data,
        "fit": fit_settings,
        "mode": mode,
        "lora": to_mapping(lora) if mode == "lora" else None,
        "objective": objective,
        "format": {
            "template": cfg.model.template,
            "system": cfg.model.system,
            "max_length": cfg.model.max_length,
        },
    }
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _reuse_finished(out_dir: Path, key: str) -> bool:
    """A finished folder is reused only when it was made with the same resume key (folders
    from before the key was recorded are reused as they are)."""
    if not models.is_model_folder(out_dir):
        return False
    recorded = models.read_marker(out_dir).get("resume_key")
    if recorded is not None and recorded != key:
        raise BuildError(
            f"{out_dir}: was trained from another parent, other rows or other "
            f"settings; choose another output folder or {OVERWRITE_HINT}"
        )
    return True


def _claim_earlier_output(folder: Path, ours: bool, kind: str) -> None:
    """Mark a folder that mbtrain wrote before output folders carried the mbdefense marker (a
    model folder with its record, a partial folder with a checkpoint or log), so ``overwrite``
    may replace it; anything else stays protected."""
    if ours and folder.is_dir() and not written_by_us(folder):
        mark_dir(folder, kind)


def run_stage(
    *,
    name: str,
    out_dir: Path,
    cfg: TrainConfig,
    parent: Any,
    load: Callable[[], tuple[Any, Any]],
    mode: str,
    lora: Any,
    settings: FitSettings,
    make_items: Callable[[Formatter, EncodeStats], tuple[list, list | None]],
    make_objective: Callable[[Any], Any],
    runtime: Runtime,
    key: str,
    overwrite: bool = False,
    extra: dict[str, Any] | None = None,
    merged: bool = False,
) -> Path:
    """The shared body of every stage (see the module docstring). ``merged``: ``load`` gives
    weights that are not the parent's (Fine-mixing), so a LoRA result is stored merged, not as
    an adapter on the parent."""
    out_dir = Path(out_dir)
    work = _partial(out_dir)
    if overwrite:
        _claim_earlier_output(out_dir, models.is_model_folder(out_dir), "model")
        check_output_dir(out_dir, overwrite=True)  # before any work: refuse foreign folders
        _claim_earlier_output(
            work,
            (work.is_dir() and last_checkpoint(work) is not None) or (work / LOG).is_file(),
            "partial model",
        )
        remove_output_dir(work)
    else:
        if _reuse_finished(out_dir, key):
            return out_dir
        if out_dir.exists():
            raise BuildError(
                f"{out_dir}: exists but is not a finished model folder; remove it "
                "or choose another output folder"
            )
    work.mkdir(parents=True, exist_ok=True)
    mark_dir(work, "partial model")
    started = time.perf_counter()
    model, tokenizer = load()
    stats = EncodeStats()
    items, eval_items = make_items(formatter_for(tokenizer, cfg), stats)
    if not items:
        raise BuildError(
            f"{name}: no training rows (after dropping rows whose prompt is longer "
            f"than train.model.max_length={cfg.model.max_length})"
        )
    objective = make_objective(tokenizer)
    model, peft_config = _prepare(model, mode, lora, settings.seed, wrap=objective.wraps_lora)
    result = fit(
        model,
        items,
        objective,
        settings,
        work,
        tokenizer=tokenizer,
        eval_items=eval_items,
        device=runtime.device,
        amp=runtime.amp,
        progress=runtime.progress,
        desc=name,
        resume_key=key,
        peft_config=peft_config,
        gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    model = result.model
    trainable, total = models.count_parameters(model)
    if mode == "lora" and (parent is None or merged):
        # An in-memory parent cannot be reloaded later (nor can a mixture of two models):
        # store the merged weights instead.
        model = model.merge_and_unload()
        mode = "full"
    marker = {
        "kind": "lora" if mode == "lora" else "full",
        "stage": name,
        "parent": None if parent is None else models.parent_record(parent, out_dir),
        "selected_epoch": result.selected_epoch,
        "history": result.history,
        "encode": stats.as_dict(),
        "fit": settings.record(),
        "train_config": to_mapping(cfg),
        "parameters": {"trainable": trainable, "total": total},
        "seconds": round(time.perf_counter() - started, 3),
        "train_seconds": round(result.seconds, 3),
        "tokens": result.tokens,
        "resume_key": key,
        # recorded, not keyed: a folder trained elsewhere is reused when the key matches
        "environment": numeric_environment(runtime.device, runtime.amp),
        **(extra or {}),
    }
    model.to("cpu")
    if not is_main_process():  # rank 0 writes the folder; the others wait for it
        barrier()
        return out_dir

    def fill(folder: Path) -> None:
        models.save_model(model, tokenizer, folder, marker)
        if (work / LOG).is_file():  # copied: a failed rename keeps the log with the checkpoint
            shutil.copyfile(work / LOG, folder / LOG)

    atomic_dir(out_dir, fill, overwrite=overwrite, kind="model")
    remove_output_dir(work)
    barrier()
    return out_dir


def _loader(parent: Any, cfg: TrainConfig) -> Callable[[], tuple[Any, Any]]:
    if isinstance(parent, tuple):  # an in-memory (model, tokenizer), e.g. a fresh tiny model
        return lambda: parent
    # Remote code only if the user's own train.model settings allow it (never a folder's record).
    trust = ModelSettings(trust_remote_code=cfg.model.trust_remote_code)
    return lambda: models.load_model(parent, trust)


@dataclasses.dataclass(frozen=True)
class Mixing:
    """Fine-mixing before a stage (:mod:`mbtrain.runs.finemixing`): the parent's weights mixed with
    ``base``'s, keeping a random share ``keep`` of each tensor's entries (drawn with ``seed``)."""

    base: Any  # the pre-trained model: a model folder or base ModelSettings
    keep: float
    seed: int

    def record(self) -> dict[str, Any]:
        return {"base": parent_identity(self.base), "keep": self.keep, "seed": self.seed}


def _mixed_loader(
    load: Callable[[], tuple[Any, Any]], mix: Mixing, cfg: TrainConfig, counts: dict[str, Any]
) -> Callable[[], tuple[Any, Any]]:
    """``load``, then the weights mixed with the base's (the counts are written to ``counts``)."""

    def mixed() -> tuple[Any, Any]:
        from mbtrain.runs.finemixing import mix_weights

        model, tokenizer = load()
        base, _ = _loader(mix.base, cfg)()
        counts.update(mix_weights(model, base, mix.keep, mix.seed))
        del base
        return model, tokenizer

    return mixed


def _encode(formatter: Formatter, examples: Sequence[Example], stats: EncodeStats) -> list:
    return [e for e in formatter.encode_many(examples, stats) if e is not None]


def train_sft(
    parent: Any,
    examples: Sequence[Example],
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    name: str,
    stage: Any,
    eval_examples: Sequence[Example] | None = None,
    select: str = "last",
    epochs: int | None = None,
    runtime: Runtime | None = None,
    full_sequence_loss: bool = False,
    overwrite: bool = False,
    mix: Mixing | None = None,
) -> Path:
    """Response-only cross-entropy fine-tuning of ``parent`` (a model folder, base
    :class:`~mbtrain.config.ModelSettings`, or an in-memory ``(model, tokenizer)``) on
    ``examples``; ``stage`` holds mode/LoRA/optimiser settings (``cfg.stage1`` or
    ``cfg.stage2``). ``overwrite`` retrains into an existing folder mbdefense wrote. ``mix``:
    Fine-mixing first (the parent's weights mixed with a base's; recorded and keyed)."""
    runtime = runtime or make_runtime(cfg)

    def make_items(fmt: Formatter, stats: EncodeStats) -> tuple[list, list | None]:
        items = _encode(fmt, examples, stats)
        if full_sequence_loss:  # language-model loss on every token (tiny-base pretraining)
            items = [dataclasses.replace(e, labels=list(e.input_ids)) for e in items]
        evals = _encode(fmt, eval_examples, EncodeStats()) if eval_examples else None
        return items, evals

    settings = FitSettings.from_stage(
        stage, cfg.seed, cfg.checkpoint_every, select, epochs, dict(runtime.trainer_args)
    )
    key = resume_key(
        parent=parent,
        data={"train": list(examples), "eval": list(eval_examples or [])},
        settings=settings,
        cfg=cfg,
        mode=stage.mode,
        lora=stage.lora,
        objective={"sft": "all" if full_sequence_loss else "response"}
        | ({"fine_mixing": mix.record()} if mix is not None else {}),
    )
    load = _loader(parent, cfg)
    extra: dict[str, Any] = {"rows": len(examples)}
    if mix is not None:
        counts: dict[str, Any] = {}
        load = _mixed_loader(load, mix, cfg, counts)
        extra["fine_mixing"] = {
            "keep": mix.keep,
            "seed": mix.seed,
            "base": models.parent_record(mix.base, Path(out_dir))
            if not isinstance(mix.base, tuple)
            else None,
            "entries": counts,  # filled when the weights are mixed, before the record is written
        }
    return run_stage(
        name=name,
        out_dir=Path(out_dir),
        cfg=cfg,
        parent=None if isinstance(parent, tuple) else parent,
        load=load,
        mode=stage.mode,
        lora=stage.lora,
        settings=settings,
        make_items=make_items,
        make_objective=lambda tok: SFTObjective(tok.pad_token_id),
        runtime=runtime,
        key=key,
        overwrite=overwrite,
        extra=extra,
        merged=mix is not None,
    )


def encode_recovery(
    formatter: Formatter, tuples: Sequence[Tuple4], stats: EncodeStats
) -> list[RecoveryItem]:
    """Encode each (x, y), (x_d, y), (x_d, y_d); a tuple with any part dropped is dropped."""
    parts = [formatter.encode_many([t[k] for t in tuples], stats) for k in range(3)]
    return [
        RecoveryItem(a, b, c)
        for a, b, c in zip(*parts)
        if a is not None and b is not None and c is not None
    ]


def train_neutralization(
    parent: Any,
    tuples: Sequence[Tuple4],
    eval_tuples: Sequence[Tuple4] | None,
    out_dir: str | Path,
    cfg: TrainConfig,
    *,
    name: str = "mb_defense",
    epochs: int | None = None,
    runtime: Runtime | None = None,
    overwrite: bool = False,
) -> Path:
    """MB-Defense stage 2 on recovery tuples, with checkpoint selection on ``eval_tuples``."""
    runtime = runtime or make_runtime(cfg)
    stage = cfg.stage2
    select = stage.select if eval_tuples else "last"

    def make_items(fmt: Formatter, stats: EncodeStats) -> tuple[list, list | None]:
        items = encode_recovery(fmt, tuples, stats)
        evals = encode_recovery(fmt, eval_tuples, EncodeStats()) if eval_tuples else None
        return items, evals

    settings = FitSettings.from_stage(
        stage, cfg.seed, cfg.checkpoint_every, select, epochs, dict(runtime.trainer_args)
    )
    key = resume_key(
        parent=parent,
        data={"train": list(tuples), "eval": list(eval_tuples or [])},
        settings=settings,
        cfg=cfg,
        mode=stage.mode,
        lora=stage.lora,
        objective={"neutralization": {"lam": stage.lam, "normalize": stage.normalize}},
    )
    return run_stage(
        name=name,
        out_dir=Path(out_dir),
        cfg=cfg,
        parent=parent,
        load=_loader(parent, cfg),
        mode=stage.mode,
        lora=stage.lora,
        settings=settings,
        make_items=make_items,
        make_objective=lambda tok: NeutralizationObjective(
            tok.pad_token_id, stage.lam, stage.normalize
        ),
        runtime=runtime,
        key=key,
        overwrite=overwrite,
        extra={
            "rows": len(tuples),
            "lam": stage.lam,
            "normalize": stage.normalize,
            "select": select,
        },
    )
