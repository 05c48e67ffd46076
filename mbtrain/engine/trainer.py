"""Training on the field's stack: TRL's ``SFTTrainer`` (attacked model, MB stage 1, tiny-base
pretraining and the SFT baselines) and a ``transformers.Trainer`` subclass whose ``compute_loss`` is
the MB-Defense stage-2 loss (:class:`NeutralizationTrainer`).

Why the stock trainers: they bring what users of this field expect for free (``accelerate launch``
/ ``torchrun`` DDP, DeepSpeed/FSDP through an accelerate config, bf16, fused AdamW, gradient
checkpointing, LoRA through peft, ``report_to``), and a trainer a TRL user already knows. What this
module adds is small:

- :func:`training_arguments`: our stage settings (``train.stage1``/``stage2``) mapped onto
  ``SFTConfig`` / ``TrainingArguments`` (cosine schedule with linear warmup, clipping, gradient
  accumulation, eval-loss checkpoint selection with ``load_best_model_at_end``), plus the user's
  ``trainer_args`` passed through, each checked against the real dataclass fields;
- :class:`LengthWindowSampler`: the data order (a permutation drawn from ``(seed, epoch)``; within
  windows of ``GROUP`` global batches rows sorted by length so a batch pads little; the batches
  shuffled). It is defined in units of the *global* batch, so N processes with ``batch/N`` rows each
  see exactly the rows one process sees with ``batch`` rows: the same loss curve;
- the stage-2 loss, normalised over the whole optimizer step (all gradient-accumulation
  micro-batches and all processes): the CE term by the step's response tokens, the preference term
  by the step's rows, as before the move;
- a JSONL log, and Ctrl-C handling: the first Ctrl-C finishes the step, writes a Trainer checkpoint
  (``WORK/checkpoint-N``, weights in safetensors) and raises ``KeyboardInterrupt``; the next run
  resumes from it (a second Ctrl-C aborts at once; under torchrun / accelerate launch the
  launcher's echo of the first one, within ``LAUNCHER_ECHO_S``, is not a second one). All
  processes stop at the same step.

Checkpoints carry a *resume key* (``WORK/resume_key.json``): a checkpoint is resumed only by a run
with the same key, as before.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mbdata.core.errors import BuildError, MBError
from mbtrain.config import OPTIM_FIELDS, OptimSettings
from mbtrain.engine.objectives import NeutralizationObjective, response_token_count
from mbtrain.trainer_args import check_trainer_args, for_trainer

LOG = "train_log.jsonl"
KEY_FILE = "resume_key.json"
CHECKPOINT_PREFIX = "checkpoint-"
GROUP = 16  # global batches per length-sorted window


@dataclasses.dataclass(frozen=True)
class FitSettings(OptimSettings):
    """One training run: a stage's :class:`~mbtrain.config.OptimSettings` (``batch_size`` is the
    global batch: rows per micro-batch summed over all processes) plus the seed and the loop
    settings. ``mode`` and ``lora`` are carried along but applied by the stage, not here."""

    seed: int = 0
    checkpoint_every: int | None = None
    select: str = "last"  # "last" or "eval_loss"
    trainer_args: tuple[tuple[str, Any], ...] = ()  # further TrainingArguments, validated

    def record(self) -> dict[str, Any]:
        """The settings as logged, stored in the model folder and keyed for resuming: without
        ``mode`` and ``lora``, which the stage records (and keys) itself."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("mode", "lora")}

    @classmethod
    def from_stage(
        cls,
        stage: OptimSettings,
        seed: int,
        checkpoint_every: int | None = None,
        select: str = "last",
        epochs: int | None = None,
        trainer_args: dict[str, Any] | None = None,
    ) -> FitSettings:
        optim = {name: getattr(stage, name) for name in OPTIM_FIELDS}
        return cls(
            **{**optim, "epochs": epochs or stage.epochs},
            seed=seed,
            checkpoint_every=checkpoint_every,
            select=select,
            trainer_args=tuple(sorted((trainer_args or {}).items())),
        )


@dataclasses.dataclass
class FitResult:
    history: list[dict[str, Any]]  # one summary per epoch (train and eval figures)
    selected_epoch: int  # 1-based epoch whose weights the model holds now
    steps: int
    seconds: float
    tokens: int
    model: Any = None  # the trained model (a peft model in LoRA mode)


# ---- settings --------------------------------------------------------------------------------


def _world_size() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def training_arguments(
    settings: FitSettings,
    work: Path,
    *,
    steps_per_epoch: int,
    has_eval: bool,
    device: torch.device,
    bf16: bool,
    progress: bool,
    gradient_checkpointing: bool,
    sft: bool,
) -> Any:
    """``SFTConfig`` (``sft``) or ``TrainingArguments`` for one stage."""
    from transformers import TrainingArguments

    world = _world_size()
    if settings.batch_size % world:
        raise MBError(
            f"batch_size {settings.batch_size} is not divisible by the {world} "
            "processes; choose a multiple"
        )
    total = steps_per_epoch * settings.epochs
    select = settings.select == "eval_loss" and has_eval
    per_epoch = "epoch"
    save = per_epoch
    save_steps = None
    if settings.checkpoint_every and not select:
        save, save_steps = "steps", settings.checkpoint_every
    kwargs: dict[str, Any] = dict(
        output_dir=str(work),
        num_train_epochs=settings.epochs,
        learning_rate=settings.lr,
        per_device_train_batch_size=settings.batch_size // world,
        per_device_eval_batch_size=max(settings.batch_size // world, 1),
        gradient_accumulation_steps=settings.grad_accum,
        lr_scheduler_type="cosine",
        warmup_steps=int(round(settings.warmup_ratio * total)),
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        seed=settings.seed,
        data_seed=settings.seed,
        optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
        logging_strategy="steps",
        logging_steps=1,
        logging_first_step=True,
        eval_strategy=per_epoch if has_eval else "no",
        save_strategy=save,
        save_total_limit=1 if not select else 2,
        load_best_model_at_end=select,
        metric_for_best_model="eval_loss" if select else None,
        greater_is_better=False if select else None,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=device.type == "cpu",
        bf16=bf16,
        activation_checkpointing=gradient_checkpointing,
        remove_unused_columns=sft,
        prediction_loss_only=True,
        average_tokens_across_devices=True,
        ddp_find_unused_parameters=False,
        save_only_model=False,
    )
    if save_steps:
        kwargs["save_steps"] = save_steps
    extra = check_trainer_args(for_trainer(settings.trainer_args, sft), sft)
    kwargs.update(extra)
    if sft:
        from trl import SFTConfig

        sft_kwargs = dict(
            max_length=None,
            completion_only_loss=True,
            packing=False,
            padding_free=False,
            shuffle_dataset=False,
            dataset_num_proc=None,
        )
        for k, v in sft_kwargs.items():
            kwargs.setdefault(k, v)
        return SFTConfig(**kwargs)
    return TrainingArguments(**kwargs)


# ---- data order --------------------------------------------------------------------------------


def batch_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The global batches of one epoch: a seeded shuffle, then, within windows of ``GROUP``
    batches, rows sorted by length so each batch pads little, then the batches shuffled again
    (the one short batch, if any, last). Every row appears exactly once; the order depends only
    on (seed, epoch, lengths, batch_size)."""
    n = len(lengths)
    rng = np.random.Generator(np.random.PCG64([seed, epoch]))
    order = rng.permutation(n)
    window = batch_size * GROUP
    batches = []
    for start in range(0, n, window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([-lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) != batch_size]
    return [full[i] for i in rng.permutation(len(full))] + short


class LengthWindowSampler(torch.utils.data.Sampler):
    """Row indices in :func:`batch_order` order; ``set_epoch`` (called by the Trainer/accelerate
    at every epoch, also on resume) selects the epoch's permutation."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        for batch in batch_order(self.lengths, self.batch_size, self.seed, self.epoch):
            yield from (int(i) for i in batch)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over ``warmup`` steps (the first step already at 1/warmup of the peak, so
    no step is spent at lr 0), then cosine decay to 0 at ``total``: the schedule mbtrain used
    before the move to the Trainer, kept so the same recipe trains the same model."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


if TYPE_CHECKING:  # the mixin is only ever mixed into a Trainer (SFTTrainer or Trainer)
    from transformers import Trainer as _TrainerBase
else:
    _TrainerBase = object


class _OrderedMixin(_TrainerBase):
    """Replaces the Trainer's sampler with :class:`LengthWindowSampler` over the global batch,
    and its cosine schedule with :func:`lr_factor` (``mb_warmup`` set by :func:`build_trainer`
    when the schedule is mbtrain's cosine)."""

    mb_lengths: list[int]
    mb_global_batch: int
    mb_warmup: int | None = None

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.lr_scheduler is None and self.mb_warmup is not None:
            from torch.optim.lr_scheduler import LambdaLR

            warmup = self.mb_warmup
            opt = optimizer or self.optimizer
            assert opt is not None  # the Trainer creates the optimizer before the schedule
            self.lr_scheduler = LambdaLR(
                opt,
                lambda step: lr_factor(step, num_training_steps, warmup),
            )
            self._created_lr_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if not getattr(self, "mb_lengths", None):  # used on its own: the Trainer's sampler
            return super()._get_train_sampler(train_dataset)
        return LengthWindowSampler(self.mb_lengths, self.mb_global_batch, self.args.seed)


# ---- stage 1: SFTTrainer -----------------------------------------------------------------------


def sft_dataset(items: Sequence[Any]) -> Any:
    """Tokenised rows as TRL's processed-dataset format: ``input_ids`` and ``completion_mask``
    (1 on the response tokens). ``SFTTrainer`` turns the mask into labels (-100 on the prompt),
    exactly the response-only labels the formatter made."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "input_ids": [list(e.input_ids) for e in items],
            "completion_mask": [[0 if x == -100 else 1 for x in e.labels] for e in items],
        }
    )


def sft_trainer_class() -> type:
    from trl import SFTTrainer

    class MBSFTTrainer(_OrderedMixin, SFTTrainer):
        """``SFTTrainer`` with the seeded length-window data order (see the module docstring)."""

    return MBSFTTrainer


# ---- stage 2: the MB-Defense loss as a Trainer -------------------------------------------------


def neutralization_trainer_class() -> type:
    from transformers import Trainer

    class NeutralizationTrainer(_OrderedMixin, Trainer):
        """``Trainer`` whose loss is MB-Defense stage 2::

            L = CE(x, y) - lam * log sigmoid(s(y | x_d) - s(y_d | x_d))

        over batches made by :meth:`NeutralizationObjective.collate` (rows x, then x_d with y,
        then x_d with y_d; ``rows`` = the tuple count). Usable on its own: pass ``lam`` and
        ``normalize`` (``mean``: ``s`` is the mean response log-prob, ``sum``: the sum), a list
        of :class:`~mbtrain.engine.objectives.RecoveryItem` as the dataset and
        ``data_collator=objective.collate``.
        """

        loss_is_scaled_for_ga = True

        def __init__(
            self,
            *args: Any,
            lam: float = 1.0,
            normalize: str = "mean",
            pad_id: int = 0,
            **kwargs: Any,
        ):
            self.objective: NeutralizationObjective = NeutralizationObjective(
                pad_id, lam, normalize
            )
            self.mb_sums: dict[str, dict[str, float]] = {"train": {}, "eval": {}}
            kwargs.setdefault("data_collator", self.objective.collate)
            super().__init__(*args, **kwargs)

        def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> Any:
            """(response tokens of x, rows) over the optimizer step, summed over processes."""
            tokens = sum(response_token_count(b["labels"][: int(b["rows"])]) for b in batch_samples)
            rows = sum(int(b["rows"]) for b in batch_samples)
            counts = torch.tensor([tokens, rows], dtype=torch.float64, device=device)
            if self.args.world_size > 1:
                counts = self.accelerator.gather(counts[None]).view(-1, 2).sum(0)
            return counts

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            ce_sum, r, local = self.objective.terms(model, inputs)
            mode = "train" if model.training else "eval"
            sums = self.mb_sums[mode]
            for k, v in local.items():
                sums[k] = sums.get(k, 0.0) + v
            if model.training and num_items_in_batch is not None:
                tokens, rows = (float(x) for x in num_items_in_batch)
                scale = self.accelerator.num_processes  # DDP averages gradients over ranks
            else:
                tokens, rows, scale = local["tokens"], local["rows"], 1
            loss = (
                ce_sum / max(tokens, 1.0) - self.objective.lam * r.sum() / max(rows, 1.0)
            ) * scale
            return (loss, {}) if return_outputs else loss

        def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
            self.mb_sums["eval"] = {}
            return super().evaluate(*args, **kwargs)

        def evaluation_loop(self, *args: Any, **kwargs: Any) -> Any:
            """The eval loss from summed parts (does not depend on the batching), with its
            components (ce, r, margin) as ``eval_*`` metrics."""
            output = super().evaluation_loop(*args, **kwargs)
            prefix = kwargs.get("metric_key_prefix", args[3] if len(args) > 3 else "eval")
            summary = self.reduced_summary("eval")
            assert output.metrics is not None  # evaluation_loop always returns a metrics dict
            for k, v in summary.items():
                output.metrics[f"{prefix}_{k}"] = v
            return output

        def reduced_summary(self, mode: str) -> dict[str, float]:
            keys = sorted(self.mb_sums[mode])
            if not keys:
                return {}
            values = torch.tensor(
                [self.mb_sums[mode][k] for k in keys], dtype=torch.float64, device=self.args.device
            )
            if self.args.world_size > 1:
                values = self.accelerator.reduce(values, reduction="sum")
            return self.objective.summarize(dict(zip(keys, values.tolist(), strict=True)))

    return NeutralizationTrainer


def __getattr__(name: str) -> Any:
    """``mbtrain.engine.trainer.NeutralizationTrainer`` / ``MBSFTTrainer`` (built on first use, so
    importing this module does not import transformers)."""
    if name == "NeutralizationTrainer":
        return neutralization_trainer_class()
    if name == "MBSFTTrainer":
        return sft_trainer_class()
    raise AttributeError(name)


# ---- callbacks -----------------------------------------------------------------------------------


def _callbacks(
    work: Path, on_step: Callable[[int], None] | None, log_path: Path, trainer_ref: list
) -> tuple[list, Any]:
    from transformers import TrainerCallback

    class MBCallback(TrainerCallback):
        """JSONL log, per-epoch history, Ctrl-C → checkpoint and stop, test hook."""

        def __init__(self) -> None:
            self.requested = False
            self.first = 0.0
            self._previous: Any = None

        def handle(self, signum: int, frame: Any) -> None:
            # Under torchrun / accelerate launch a Ctrl-C reaches a process twice: from the
            # terminal and, a moment later, forwarded by the launcher. A repeat within
            # LAUNCHER_ECHO_S is that echo, not the user's second Ctrl-C.
            now = time.monotonic()
            if self.requested and not (_launched() and now - self.first < LAUNCHER_ECHO_S):
                raise KeyboardInterrupt
            if not self.requested:
                self.requested, self.first = True, now

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            try:
                self._previous = signal.signal(signal.SIGINT, self.handle)
            except ValueError:  # not the main thread: Ctrl-C acts as usual
                self._previous = None

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self._previous is not None:
                signal.signal(signal.SIGINT, self._previous)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if state.is_world_process_zero and logs:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(
                        json.dumps(
                            {
                                "event": "log",
                                "step": state.global_step,
                                **{
                                    k: v
                                    for k, v in logs.items()
                                    if isinstance(v, (int, float, str))
                                },
                            },
                            sort_keys=True,
                        )
                        + "\n"
                    )

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if on_step is not None:
                on_step(state.global_step)
            if args.world_size > 1 and torch.distributed.is_initialized():
                # Every process stops at the same step: a Ctrl-C (or a scheduler's SIGINT)
                # reaches the processes at slightly different steps, and one that stopped alone
                # would leave the others waiting in the next step's all-reduce.
                flag = torch.tensor([float(self.requested)], device=args.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                self.requested = bool(flag.item())
            if self.requested:
                control.should_save = True
                control.should_training_stop = True

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            """Stage 2: the epoch's summed training figures (ce, r, margin) go into the
            Trainer's log history, which checkpoints carry across a resume."""
            trainer = trainer_ref[0]
            if hasattr(trainer, "mb_sums"):
                summary = trainer.reduced_summary("train")
                trainer.mb_sums["train"] = {}
                state.log_history.append(
                    {
                        "epoch": round(float(state.epoch or 0)),
                        "mb_train": summary,
                        "step": state.global_step,
                    }
                )

    cb = MBCallback()
    return [cb], cb


def epoch_history(log_history: list[dict[str, Any]], epochs: int) -> list[dict[str, Any]]:
    """One record per epoch from the Trainer's log history: ``train`` (stage 2: summed ce, r,
    margin; SFT: the mean of the logged step losses) and ``eval`` (the ``eval_*`` metrics)."""
    out = []
    skip = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
    for n in range(1, epochs + 1):
        train: dict[str, float] = {}
        ev: dict[str, float] = {}
        losses = []
        for rec in log_history:
            e = float(rec.get("epoch") or 0.0)
            if "mb_train" in rec and round(e) == n:
                train = dict(rec["mb_train"])
            elif "loss" in rec and n - 1 < e <= n + 1e-9:
                losses.append(float(rec["loss"]))
            elif "eval_loss" in rec and abs(e - n) < 1e-6:
                ev = {
                    k[len("eval_") :]: float(v)
                    for k, v in rec.items()
                    if k.startswith("eval_") and k not in skip and isinstance(v, (int, float))
                }
        if not train and losses:
            train = {"loss": float(np.mean(losses))}
        out.append({"epoch": n, "train": train, "eval": ev})
    return out


def _quiet_logs(trainer: Any, desc: str = "train") -> None:
    """Replace the Trainer's tqdm bar and per-step printout with :func:`mbtrain.engine.progress.
    step_progress`: a bar on a terminal, periodic lines with an ETA elsewhere (``make demo | tee``,
    CI), so a long stage never looks hung. The numbers themselves go to the JSONL log."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback, TrainerCallback

    from mbtrain.engine.progress import step_progress

    class StepProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                self.bar = step_progress(state.max_steps, state.global_step, desc)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(StepProgress())
    trainer.pop_callback(PrinterCallback)


# ---- resume ----------------------------------------------------------------------------------


def last_checkpoint(work: Path) -> Path | None:
    """The newest *complete* checkpoint: the Trainer writes ``trainer_state.json`` last, so a
    folder without it was cut off while being written (a process killed mid-save) and the one
    before it is resumed instead."""
    found = [
        p
        for p in work.glob(f"{CHECKPOINT_PREFIX}*")
        if p.is_dir()
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / "trainer_state.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :])) if found else None


def check_resume(work: Path, resume_key: str | None) -> Path | None:
    """The checkpoint to resume from (``None``: start fresh). A checkpoint written with another
    ``resume_key`` is an error: continuing it would silently mix two trainings."""
    checkpoint = last_checkpoint(work)
    if checkpoint is None:
        return None
    key_file = work / KEY_FILE
    if not key_file.is_file():
        raise BuildError(
            f"{work}: holds a checkpoint written by an older mbtrain (no resume key), "
            f"which cannot be checked against this run; delete {work} to start "
            "this stage over"
        )
    recorded = json.loads(key_file.read_text(encoding="utf-8")).get("resume_key")
    if recorded != resume_key:
        raise BuildError(
            f"{work}: holds a checkpoint of another run (other parent, rows, "
            f"settings or seed); delete {work} to start this one over"
        )
    return checkpoint


LAUNCHER_ECHO_S = 2.0  # a second SIGINT this soon after the first, under a launcher, is its echo


def _launched() -> bool:
    """Started by torchrun / accelerate launch (which forward a Ctrl-C to their processes)."""
    import os

    return os.environ.get("LOCAL_RANK") is not None


def is_main_process() -> bool:
    """Rank 0 (or no distributed launch): the one process that writes outputs."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


# ---- the one entry point -----------------------------------------------------------------------


def fit(
    model: Any,
    items: Sequence[Any],
    objective: Any,
    settings: FitSettings,
    work: Path,
    *,
    tokenizer: Any,
    eval_items: Sequence[Any] | None = None,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
    progress: bool = True,
    desc: str = "train",
    on_step: Callable[[int], None] | None = None,
    resume_key: str | None = None,
    peft_config: Any = None,
    gradient_checkpointing: bool = False,
) -> FitResult:
    """Train ``model`` on ``items`` with the objective's trainer (``SFTTrainer`` for an
    :class:`~mbtrain.engine.objectives.SFTObjective`, :class:`NeutralizationTrainer` for a
    :class:`NeutralizationObjective`); resume from the last checkpoint in ``work`` if written
    with the same ``resume_key``.

    With ``settings.select == "eval_loss"`` (needs ``eval_items``) the weights of the epoch with
    the lowest eval loss are loaded at the end (``load_best_model_at_end``); otherwise the last
    epoch's are kept. ``on_step(global_step)`` is called after every optimizer step (tests use it
    to interrupt). The trained model is ``result.model``.
    """
    from datasets.utils.logging import disable_progress_bar

    from mbtrain.engine.models import quiet_transformers

    disable_progress_bar()
    quiet_transformers()
    device = device or torch.device("cpu")
    work.mkdir(parents=True, exist_ok=True)
    if settings.select == "eval_loss" and not eval_items:
        raise ValueError("select='eval_loss' needs eval_items")
    resume = check_resume(work, resume_key)
    if is_main_process():
        (work / KEY_FILE).write_text(json.dumps({"resume_key": resume_key}), encoding="utf-8")
    lengths = [objective.length(item) for item in items]
    steps_per_epoch = math.ceil(math.ceil(len(items) / settings.batch_size) / settings.grad_accum)
    args = training_arguments(
        settings,
        work,
        steps_per_epoch=steps_per_epoch,
        has_eval=bool(eval_items),
        device=device,
        bf16=amp == torch.bfloat16,
        progress=progress,
        gradient_checkpointing=gradient_checkpointing,
        sft=objective.sft_config,
    )
    log_path = work / LOG
    ref: list = []
    callbacks, cb = _callbacks(work, on_step, log_path, ref)
    if is_main_process():
        with open(log_path, "a", encoding="utf-8") as fh:
            event = (
                {"event": "resume", "checkpoint": resume.name}
                if resume
                else {
                    "event": "start",
                    "desc": desc,
                    "rows": len(items),
                    "eval_rows": len(eval_items or []),
                    "steps": steps_per_epoch * settings.epochs,
                    "settings": settings.record(),
                }
            )
            fh.write(json.dumps(event, sort_keys=True, default=list) + "\n")
    trainer = build_trainer(
        model,
        items,
        objective,
        args,
        tokenizer=tokenizer,
        eval_items=eval_items,
        peft_config=peft_config,
        callbacks=callbacks,
        lengths=lengths,
        global_batch=settings.batch_size,
        desc=desc,
    )
    ref.append(trainer)
    refuse_unsharded(trainer)
    if sharded(trainer) and (peft_config is not None or hasattr(model, "peft_config")):
        raise MBError(
            "LoRA under DeepSpeed/FSDP is not supported by mbtrain (the adapter would be saved "
            "from sharded weights); run LoRA with plain DDP (torchrun), where the frozen base "
            "fits on every GPU"
        )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    if cb.requested:
        if is_main_process():
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(
                    json.dumps({"event": "interrupted", "step": trainer.state.global_step}) + "\n"
                )
        raise KeyboardInterrupt
    history = epoch_history(trainer.state.log_history, settings.epochs)
    selected = settings.epochs
    best = trainer.state.best_model_checkpoint
    if args.load_best_model_at_end and best:
        best_step = int(Path(best).name[len(CHECKPOINT_PREFIX) :])
        selected = min(settings.epochs, max(1, math.ceil(best_step / steps_per_epoch)))
    tokens = int(sum(lengths)) * settings.epochs
    if is_main_process():
        with open(log_path, "a", encoding="utf-8") as fh:
            fh.write(
                json.dumps(
                    {
                        "event": "done",
                        "selected_epoch": selected,
                        "steps": trainer.state.global_step,
                        "seconds": round(seconds, 3),
                        "tokens": tokens,
                        # what the Trainer really ran (the record's `distributed` reads the
                        # launch variables): processes and whether the weights were sharded
                        "processes": trainer.accelerator.num_processes,
                        "sharded": sharded(trainer),
                    }
                )
                + "\n"
            )
    out = gathered_model(trainer, work) if sharded(trainer) else trainer.model
    out.eval()
    return FitResult(
        history=history,
        selected_epoch=selected,
        steps=trainer.state.global_step,
        seconds=seconds,
        tokens=tokens,
        model=out,
    )


def sharded(trainer: Any) -> bool:
    """DeepSpeed or FSDP (from an accelerate config): each process holds a shard of the weights."""
    return bool(
        getattr(trainer, "is_deepspeed_enabled", False)
        or getattr(trainer, "is_fsdp_enabled", False)
    )


def refuse_unsharded(trainer: Any) -> None:
    """A launch that asks for FSDP or DeepSpeed (``accelerate launch`` sets
    ``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``) but whose Trainer does not shard is an
    error before any step. Measured with accelerate 1.16: an FSDP config with ``use_cpu: true``
    runs as plain DDP over gloo (accelerate enables FSDP only on GPU-type devices), every process
    holding the whole model; silently training that way would record a sharded run that was not
    and, on a model sized for sharding, run out of memory."""
    import os

    for var, what in (("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")):
        asked = os.environ.get(var, "").strip().lower() in ("1", "true", "yes")
        if asked and not sharded(trainer):
            device = trainer.args.device.type
            raise MBError(
                f"--accelerate-config asks for {what}, but accelerate runs it as plain DDP on "
                f"{device} (accelerate {_version('accelerate')} shards only on GPUs): the weights "
                "would not be sharded; use a DDP config on CPU (`distributed_type: MULTI_GPU`, "
                "`use_cpu: true`), or run on GPUs"
            )


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def gathered_model(trainer: Any, work: Path) -> Any:
    """The trained weights as one ordinary model, for the stage to save. Under DeepSpeed ZeRO-3
    or FSDP ``trainer.model`` holds only this process's shard: the Trainer's ``save_model``
    gathers the full weights (a collective: every process calls it) and rank 0 writes them
    (safetensors) to ``WORK/gathered``, which rank 0 reloads (fp32, as every mbtrain model
    folder). Other ranks get their shard back; they do not write the model folder."""
    folder = work / "gathered"
    trainer.save_model(str(folder))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return trainer.model
    if not any(
        (folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")
    ):
        raise MBError(
            f"{folder}: the sharded weights were not gathered into safetensors; set "
            "`zero3_save_16bit_model: true` (DeepSpeed) or `fsdp_state_dict_type: "
            "FULL_STATE_DICT` (FSDP) in the accelerate config"
        )
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, use_safetensors=True
    )
    return model.eval()


def build_trainer(
    model: Any,
    items: Sequence[Any],
    objective: Any,
    args: Any,
    *,
    tokenizer: Any,
    eval_items: Sequence[Any] | None = None,
    peft_config: Any = None,
    callbacks: list | None = None,
    lengths: Sequence[int] | None = None,
    global_batch: int | None = None,
    desc: str = "train",
) -> Any:
    """The configured trainer (the objective's ``trainer_class()``: ``MBSFTTrainer`` or
    ``NeutralizationTrainer``) without training: what :func:`fit` runs, and what tests and the
    benchmark inspect."""
    cls = objective.trainer_class()
    trainer = cls(
        model=model,
        args=args,
        train_dataset=objective.dataset(items),
        eval_dataset=objective.dataset(eval_items) if eval_items else None,
        callbacks=callbacks,
        **objective.trainer_kwargs(tokenizer, peft_config),
    )
    trainer.mb_lengths = list(
        lengths if lengths is not None else [objective.length(item) for item in items]
    )
    trainer.mb_global_batch = global_batch or args.per_device_train_batch_size * max(
        args.world_size, 1
    )
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    if schedule == "cosine" and not args.lr_scheduler_kwargs and lengths is not None:
        trainer.mb_warmup = int(args.warmup_steps)
    _quiet_logs(trainer, desc)
    return trainer
