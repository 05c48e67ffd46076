"""The training loop: AdamW, linear warmup + cosine decay, gradient accumulation, clipping, optional
bf16 autocast, per-epoch evaluation with checkpoint selection, a JSONL log, and resumable
checkpoints.

Kept deliberately small: transformers/peft provide the models; this loop only orders the data,
steps the optimiser and writes state. Everything it does is reproducible from the seed: the data
order of epoch ``e`` is a permutation drawn from ``(seed, e)``, so a resumed run skips the batches
it already saw and continues exactly as an uninterrupted one would.

Checkpoints (``WORK/checkpoint/``) hold only safetensors and JSON: the trainable parameters, the
optimiser moments, the RNG states and the position (epoch, micro-batch, step), plus the caller's
``resume_key``: a checkpoint is resumed only by a run with the same key. One is written (with
:func:`mbdata.atomic.atomic_dir`) at every epoch end, every ``checkpoint_every`` steps, and when
Ctrl-C is pressed (the first Ctrl-C finishes the current step, saves, then raises
``KeyboardInterrupt``; a second one aborts at once).
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mbdata.atomic import atomic_dir, atomic_write
from mbdata.errors import BuildError

from .models import autocast

CHECKPOINT = "checkpoint"
BEST = "best.safetensors"
LOG = "train_log.jsonl"


@dataclasses.dataclass(frozen=True)
class FitSettings:
    """Optimiser and loop settings of one training run."""

    epochs: int
    lr: float
    batch_size: int
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int | None = None
    select: str = "last"  # "last" or "eval_loss"

    @classmethod
    def from_stage(cls, stage: Any, seed: int, checkpoint_every: int | None = None,
                   select: str = "last", epochs: int | None = None) -> "FitSettings":
        return cls(epochs=epochs or stage.epochs, lr=stage.lr, batch_size=stage.batch_size,
                   grad_accum=stage.grad_accum, warmup_ratio=stage.warmup_ratio,
                   weight_decay=stage.weight_decay, max_grad_norm=stage.max_grad_norm,
                   seed=seed, checkpoint_every=checkpoint_every, select=select)


@dataclasses.dataclass
class FitResult:
    history: list[dict[str, Any]]  # one summary per epoch (train and eval figures)
    selected_epoch: int  # 1-based epoch whose weights the model holds now
    steps: int
    seconds: float
    tokens: int


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warmup to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


GROUP = 16  # micro-batches per length-sorted window


def micro_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int
                  ) -> list[np.ndarray]:
    """The micro-batches of one epoch: a seeded shuffle, then, within windows of ``GROUP``
    batches, rows sorted by length so each batch pads little, then the batches shuffled again.
    Every row appears exactly once; the order depends only on (seed, epoch, lengths)."""
    n = len(lengths)
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    order = rng.permutation(n)
    window = batch_size * GROUP
    batches = []
    for start in range(0, n, window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu").contiguous().clone()
            for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: Any, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [k for k in state if k not in params]
    if missing:
        raise RuntimeError(f"checkpoint parameter {missing[0]!r} not in the model")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def _save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slot in state["state"].items():
        for key, value in slot.items():
            if torch.is_tensor(value):
                tensors[f"{idx}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{idx}/{key}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps(
        {"param_groups": state["param_groups"], "scalars": scalars}), encoding="utf-8")


def _load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text(encoding="utf-8"))
    slots: dict[int, dict[str, Any]] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = flat.split("/", 1)
        slots.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


def _rng_state() -> dict[str, torch.Tensor]:
    out = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        cuda = [state[k] for k in sorted(k for k in state if k.startswith("cuda"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(work: Path, model: Any, optimizer: Any, position: dict[str, Any]) -> None:
    """Write ``work/checkpoint`` atomically (the previous one stays until the new one is
    complete)."""
    def fill(folder: Path) -> None:
        save_file(trainable_state(model), str(folder / "trainable.safetensors"))
        _save_optimizer(optimizer, folder)
        save_file(_rng_state(), str(folder / "rng.safetensors"))
        (folder / "state.json").write_text(json.dumps(position, indent=1), encoding="utf-8")

    atomic_dir(work / CHECKPOINT, fill, overwrite=True, kind="checkpoint")


def load_checkpoint(work: Path, model: Any, optimizer: Any, resume_key: str | None = None
                    ) -> dict[str, Any] | None:
    """The saved position (and the weights, optimiser and RNG states restored), or ``None``
    when there is no checkpoint. A checkpoint written with another ``resume_key`` is an error:
    it belongs to another run and continuing it would silently mix two trainings."""
    folder = work / CHECKPOINT
    if not (folder / "state.json").is_file():
        return None
    position = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    if "resume_key" not in position and resume_key is not None:
        raise BuildError(f"{work}: holds a checkpoint written by an older mbtrain (no resume key), "
                         f"which cannot be checked against this run; delete {work} to start "
                         "this stage over")
    if position.get("resume_key") != resume_key:
        raise BuildError(f"{work}: holds a checkpoint of another run (other parent, rows, "
                         f"settings or seed); delete {work} to start this one over")
    load_trainable(model, load_file(str(folder / "trainable.safetensors")))
    _load_optimizer(optimizer, folder)
    _set_rng_state(load_file(str(folder / "rng.safetensors")))
    return position


class _Interrupt:
    """First Ctrl-C: ask the loop to stop at the next step boundary. Second: abort now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_Interrupt":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: no graceful stop, Ctrl-C acts as usual
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class JsonlLog:
    """Append-only JSONL training log (one object per line)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _add(total: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0.0) + v


def evaluate_loss(model: Any, objective: Any, items: Sequence[Any], batch_size: int,
                  device: torch.device, amp: torch.dtype | None) -> dict[str, float]:
    """The objective's summary over ``items`` without gradients (each batch normalised by its own
    totals; sums are aggregated, so the result does not depend on the batching)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = _to_device(objective.collate(list(items[start:start + batch_size])), device)
            with autocast(device, amp):
                _, part = objective.forward(model, batch, objective.counts(batch))
            _add(sums, part)
    if was_training:
        model.train()
    return objective.summarize(sums)


def fit(model: Any, items: Sequence[Any], objective: Any, settings: FitSettings, work: Path, *,
        eval_items: Sequence[Any] | None = None, device: torch.device | None = None,
        amp: torch.dtype | None = None, progress: bool = True, desc: str = "train",
        on_step: Callable[[int], None] | None = None,
        resume_key: str | None = None) -> FitResult:
    """Train ``model`` in place on ``items``; resume from ``work/checkpoint`` if present and
    written with the same ``resume_key`` (another key is an error, see
    :func:`load_checkpoint`).

    With ``settings.select == "eval_loss"`` (needs ``eval_items``) the weights of the epoch with
    the lowest eval loss are restored at the end; otherwise the last epoch's are kept.
    ``on_step(global_step)`` is called after every optimizer step (tests use it to interrupt).
    """
    device = device or torch.device("cpu")
    work.mkdir(parents=True, exist_ok=True)
    if settings.select == "eval_loss" and not eval_items:
        raise ValueError("select='eval_loss' needs eval_items")
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr)
    groups_per_epoch = math.ceil(math.ceil(len(items) / settings.batch_size) /
                                 settings.grad_accum)
    total_steps = groups_per_epoch * settings.epochs
    warmup = int(round(settings.warmup_ratio * total_steps))
    log = JsonlLog(work / LOG)
    lengths = [objective.length(item) for item in items]

    position = load_checkpoint(work, model, optimizer, resume_key)
    if position is None:
        position = {"epoch": 0, "micro": 0, "step": 0, "history": [], "best": None,
                    "tokens": 0, "seconds": 0.0, "sums": {}, "resume_key": resume_key}
        torch.manual_seed(settings.seed)
        log.write({"event": "start", "desc": desc, "rows": len(items),
                   "eval_rows": len(eval_items or []), "steps": total_steps,
                   "settings": dataclasses.asdict(settings)})
    else:
        log.write({"event": "resume", "epoch": position["epoch"] + 1, "step": position["step"]})

    model.train()
    started = time.perf_counter() - position["seconds"]
    bar = None
    if progress:
        from .progress import step_progress

        # A bar on a terminal, periodic lines with an ETA elsewhere (never minutes of silence).
        bar = step_progress(total_steps, position["step"], desc, file=sys.stderr)
    interrupt = _Interrupt()
    try:
        with interrupt:
            for epoch in range(position["epoch"], settings.epochs):
                batches = micro_batches(lengths, settings.batch_size, settings.seed, epoch)
                epoch_sums: dict[str, float] = position["sums"] if position["epoch"] == epoch \
                    else {}
                micro = position["micro"] if position["epoch"] == epoch else 0
                while micro < len(batches):
                    group = [objective.collate([items[i] for i in batches[j]])
                             for j in range(micro, min(micro + settings.grad_accum,
                                                       len(batches)))]
                    totals: dict[str, int] = {}
                    for b in group:
                        for k, v in objective.counts(b).items():
                            totals[k] = totals.get(k, 0) + v
                    lr = lr_at(position["step"], total_steps, warmup, settings.lr)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    step_sums: dict[str, float] = {}
                    t0 = time.perf_counter()
                    for b in group:
                        b = _to_device(b, device)
                        with autocast(device, amp):
                            loss, part = objective.forward(model, b, totals)
                        loss.backward()
                        _add(step_sums, part)
                    grad_norm = None
                    if settings.max_grad_norm > 0:
                        grad_norm = float(torch.nn.utils.clip_grad_norm_(
                            params, settings.max_grad_norm))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    dt = time.perf_counter() - t0
                    micro += len(group)
                    position["step"] += 1
                    position["tokens"] += totals.get("seen", 0)
                    _add(epoch_sums, step_sums)
                    summary = objective.summarize(step_sums)
                    tok_s = totals.get("seen", 0) / dt if dt > 0 else 0.0
                    log.write({"event": "step", "epoch": epoch + 1, "step": position["step"],
                               "lr": lr, "grad_norm": grad_norm, "tokens": totals.get("seen", 0),
                               "tok_s": round(tok_s, 1),
                               **{k: round(v, 6) for k, v in summary.items()}})
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{summary['loss']:.3f}", tok_s=f"{tok_s:.0f}")
                    position.update(epoch=epoch, micro=micro, sums=epoch_sums,
                                    seconds=time.perf_counter() - started)
                    if on_step is not None:
                        on_step(position["step"])
                    if interrupt.requested:
                        save_checkpoint(work, model, optimizer, position)
                        log.write({"event": "interrupted", "epoch": epoch + 1,
                                   "step": position["step"]})
                        raise KeyboardInterrupt
                    if (settings.checkpoint_every and micro < len(batches)
                            and position["step"] % settings.checkpoint_every == 0):
                        save_checkpoint(work, model, optimizer, position)
                record: dict[str, Any] = {"epoch": epoch + 1,
                                          "train": objective.summarize(epoch_sums)}
                if eval_items:
                    record["eval"] = evaluate_loss(model, objective, eval_items,
                                                   settings.batch_size, device, amp)
                    best = position["best"]
                    if best is None or record["eval"]["loss"] < best["loss"]:
                        position["best"] = {"epoch": epoch + 1, "loss": record["eval"]["loss"]}
                        if settings.select == "eval_loss":
                            state = trainable_state(model)
                            atomic_write(work / BEST, lambda tmp: save_file(state, str(tmp)))
                position["history"].append(record)
                log.write({"event": "epoch", **record})
                position.update(epoch=epoch + 1, micro=0, sums={},
                                seconds=time.perf_counter() - started)
                save_checkpoint(work, model, optimizer, position)
    finally:
        if bar is not None:
            bar.close()
    selected = settings.epochs
    if settings.select == "eval_loss" and position["best"] is not None:
        selected = position["best"]["epoch"]
        if selected != settings.epochs:
            load_trainable(model, load_file(str(work / BEST)))
    seconds = time.perf_counter() - started
    log.write({"event": "done", "selected_epoch": selected, "steps": position["step"],
               "seconds": round(seconds, 3), "tokens": position["tokens"]})
    model.eval()
    return FitResult(history=position["history"], selected_epoch=selected,
                     steps=position["step"], seconds=seconds, tokens=position["tokens"])
