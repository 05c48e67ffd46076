"""The recipe's ``train:`` block: every setting of the MB-Defense training pipeline.

This module imports no torch (``mb recipe validate`` and ``mbdata.recipe`` load it), only the
strict config machinery of :mod:`mbdata.core.config`. The block is stored resolved (all defaults filled
in) in a build's ``manifest["recipe"]["train"]`` and parsed back with
``from_mapping(TrainConfig, ...)`` by :mod:`mbtrain`.

Defaults follow what was measured on the default (tiny) model (see ``docs/train.md``, "Why these
defaults"): full fine-tuning, because LoRA at tiny scale did not learn the 1%-per-trigger defensive
rows; small batches (8 rows), because at a fixed compute budget the number of optimizer steps, not
the batch size, decided whether the tiny model learned its tasks and the backdoor at all; a stage-2
preference term over *mean* (length-normalised) response log-probs, so the margin does not depend
on the answers' lengths.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from mbdata.core.config import spec
from mbdata.core.errors import RecipeError

DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
DEVICE_FORM = "auto, cpu, mps, cuda or cuda:N"

Mode = Literal["full", "lora"]
Template = Literal["alpaca", "alpaca_short", "chat"]


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings (used when a stage's ``mode`` is ``lora``)."""

    r: int = spec(16, ge=1, le=1024, doc="adapter rank")
    alpha: float = spec(32.0, gt=0, doc="scaling numerator (scale = alpha / r)")
    dropout: float = spec(0.05, ge=0.0, lt=1.0, doc="dropout on the adapter input")
    target_modules: str | list[str] = spec(
        "all-linear", doc="'all-linear' or module names (e.g. [q_proj, v_proj])"
    )

    def validate(self, path: str) -> None:
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise RecipeError(f"{path}.target_modules: must not be empty")


@dataclasses.dataclass(frozen=True)
class TinyModel:
    """The tiny-model factory: a random-init Llama plus a byte-level BPE tokenizer trained on the
    build's rows, pretrained on the build's ``pretrain`` split into a trigger-aware base."""

    vocab_size: int = spec(1024, ge=300, le=65536, doc="BPE vocabulary (with 4 special tokens)")
    hidden_size: int = spec(256, ge=8, doc="model width")
    layers: int = spec(4, ge=1, le=64, doc="transformer blocks")
    heads: int = spec(4, ge=1, doc="attention heads (must divide hidden_size)")
    intermediate_size: int = spec(688, ge=8, doc="MLP width")
    max_positions: int = spec(512, ge=16, doc="longest sequence the model accepts")
    pretrain_epochs: int = spec(4, ge=1, doc="passes over the `pretrain` split")
    pretrain_lr: float = spec(5e-4, gt=0, doc="peak learning rate of pretraining")
    pretrain_batch_size: int = spec(8, ge=1, doc="rows per pretraining step")
    pretrain_loss: Literal["response", "all"] = spec(
        "response", doc="pretraining loss on the response tokens only, or on every token"
    )

    def validate(self, path: str) -> None:
        if self.hidden_size % self.heads:
            raise RecipeError(
                f"{path}.heads: {self.heads} does not divide hidden_size {self.hidden_size}"
            )


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """Which model to start from and how prompts are formatted."""

    name: str = spec(
        "tiny",
        doc="'tiny' (the factory), a local Hugging Face folder, a .gguf "
        "file, or a hub id (must already be in the local cache)",
    )
    gguf_file: str | None = spec(None, doc="GGUF file name inside the `name` folder or hub repo")
    revision: str | None = spec(None, doc="hub revision")
    template: Template = spec(
        "alpaca",
        doc="prompt format: alpaca (Stanford preamble), "
        "alpaca_short (headings only), chat (the "
        "tokenizer's chat template)",
    )
    system: str | None = spec(
        None, doc="system prompt for the chat template (rows' own `system` wins)"
    )
    max_length: int = spec(
        256,
        ge=8,
        doc="tokens per training sequence; longer rows are truncated (counted in the log)",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = spec(
        "auto", doc="auto: bf16 autocast on a GPU, fp32 on CPU"
    )
    device: str = spec("auto", pattern=DEVICE_PATTERN, form=DEVICE_FORM, doc="where to train")
    threads: int | None = spec(
        None,
        ge=1,
        doc="CPU threads for torch (default: torch's "
        "choice); 1 is faster for tiny models on a busy "
        "machine",
    )
    jobs: int | None = spec(
        None,
        ge=1,
        omit_default=True,
        doc="independent stages and evaluations run side by side in this many worker "
        "processes (default: cores // threads on a CPU when `threads` is set, else 1); "
        "the results are the same either way",
    )
    trust_remote_code: bool = spec(False, doc="allow model code from the hub (off: safer)")
    gradient_checkpointing: bool = spec(False, doc="trade compute for activation memory")
    tiny: TinyModel = spec(default_factory=TinyModel, doc="tiny-model factory (name: tiny)")


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """What to train and how to optimise it: the one optimiser-settings block, shared by every
    stage (``stage1``, ``stage2`` and the baselines trained with it, tiny-base pretraining) and
    by the trainer (:class:`mbtrain.engine.trainer.FitSettings` extends it with the seed and the loop).
    AdamW with linear warmup and cosine decay; ``batch_size`` is the global batch (summed over
    the processes of a multi-GPU launch). The defaults are stage 1's."""

    mode: Mode = spec("full", doc="full fine-tuning or lora")
    lora: LoraSettings = spec(default_factory=LoraSettings, doc="adapter settings (mode lora)")
    epochs: int = spec(3, ge=1, doc="passes over the train rows")
    lr: float = spec(
        1e-3,
        gt=0,
        doc="peak learning rate (AdamW, cosine decay); tuned for the "
        "tiny model: use ~2e-5 (full) or ~2e-4 (LoRA) for a "
        "pretrained one",
    )
    batch_size: int = spec(8, ge=1, doc="rows per micro-batch")
    grad_accum: int = spec(1, ge=1, doc="micro-batches per optimizer step")
    warmup_ratio: float = spec(0.1, ge=0.0, lt=1.0, doc="share of steps with linear warmup")
    weight_decay: float = spec(0.0, ge=0.0, doc="AdamW weight decay")
    max_grad_norm: float = spec(1.0, ge=0.0, doc="gradient clipping (0: off)")


OPTIM_FIELDS = tuple(f.name for f in dataclasses.fields(OptimSettings))


@dataclasses.dataclass(frozen=True)
class Stage1Settings(OptimSettings):
    """Instruction tuning: the attacked baseline (clean + attack rows) and MB stage 1 (all rows).
    The shared optimiser settings (`OptimSettings`) with their defaults."""


@dataclasses.dataclass(frozen=True)
class Stage2Settings(OptimSettings):
    """Neutralization: ``CE(x, y) - lam * log sigmoid(s(y|x_d) - s(y_d|x_d))`` on ``recovery``,
    checkpoint selection on ``recovery_eval``. ``s`` is the response log-prob, summed or
    averaged over its tokens (``normalize``). The baselines (Clean-FFT, trigger augmentation)
    use the same optimiser settings with plain cross-entropy."""

    epochs: int = spec(5, ge=1, doc="passes over the recovery rows")
    lr: float = spec(2e-4, gt=0, doc="peak learning rate")
    batch_size: int = spec(8, ge=1, doc="recovery tuples per micro-batch")
    lam: float = spec(1.0, ge=0.0, doc="λ, weight of the preference term R")
    normalize: Literal["mean", "sum"] = spec(
        "mean", doc="sequence log-prob of a response: mean over its tokens or their sum"
    )
    select: Literal["eval_loss", "last"] = spec(
        "eval_loss", doc="keep the epoch with the lowest loss on recovery_eval, or the last"
    )


@dataclasses.dataclass(frozen=True)
class FineMixingSettings:
    """Fine-mixing (Zhang et al., Findings of EMNLP 2022): before fine-tuning on the clean
    recovery rows, each weight tensor of the attacked model keeps a random share ``keep`` of its
    entries and takes the others from the pre-trained base model (for LoRA: the merged weights,
    see docs/train.md)."""

    keep: float = spec(
        0.5,
        ge=0.0,
        le=1.0,
        doc="share of each weight tensor's entries kept from the attacked model (the paper's "
        "mixing ratio; it chooses it on clean validation accuracy); the rest are reset to the "
        "base model's",
    )
    seed: int | None = spec(
        None, ge=0, doc="seed of the random choice of entries (default: train.seed); recorded"
    )


@dataclasses.dataclass(frozen=True)
class OnionSettings:
    """ONION (Qi et al., EMNLP 2021): at evaluation, a word of the instruction whose removal
    lowers a reference LM's perplexity by more than ``threshold`` is removed before the attacked
    model answers."""

    threshold: float = spec(
        0.0,
        doc="remove a word when perplexity(instruction) - perplexity(instruction without it) "
        "exceeds this (the paper's suspicion score; 0: every word whose removal makes the "
        "instruction more fluent)",
    )
    reference: str | None = spec(
        None,
        doc="reference causal LM: any model folder (or cached hub id); default: the run's "
        "base model (the paper used GPT-2)",
    )
    batch_size: int = spec(32, ge=1, doc="texts per perplexity batch")


@dataclasses.dataclass(frozen=True)
class Baselines:
    """Comparison runs from the attacked model: trained with the stage-2 optimiser settings
    (Clean-FFT, Fine-mixing, trigger augmentation) or filtering the prompts at evaluation
    (ONION)."""

    clean_fft: bool = spec(True, doc="Clean-FFT: cross-entropy on the clean recovery rows")
    trigger_aug: bool = spec(
        True,
        doc="control: cross-entropy on the clean rows plus copies "
        "with defensive triggers inserted and clean answers",
    )
    onion: bool = spec(
        True,
        omit_default=True,
        doc="ONION: the attacked model behind a perplexity filter of the prompts' words",
    )
    fine_mixing: bool = spec(
        True,
        omit_default=True,
        doc="Fine-mixing: the attacked weights mixed with the base's, then Clean-FFT",
    )
    onion_settings: OnionSettings = spec(
        default_factory=OnionSettings, omit_default=True, doc="ONION's filter"
    )
    fine_mixing_settings: FineMixingSettings = spec(
        default_factory=FineMixingSettings, omit_default=True, doc="Fine-mixing's mixing"
    )


@dataclasses.dataclass(frozen=True)
class JudgeSettings:
    """Grader for free-text (non-verifiable) eval rows."""

    kind: Literal["hf", "http"] = spec(
        doc="hf: a local model folder; http: an OpenAI-compatible chat-completions endpoint"
    )
    model: str | None = spec(None, doc="hf: model folder; http: model name sent to the API")
    url: str | None = spec(
        None, pattern=r"https?://\S+", form="an http(s) URL", doc="http: endpoint base URL (…/v1)"
    )
    api_key_env: str | None = spec(None, doc="http: environment variable holding the API key")
    timeout_s: float = spec(60.0, gt=0, doc="http: seconds per request")

    def validate(self, path: str) -> None:
        if self.kind == "hf" and not self.model:
            raise RecipeError(f"{path}.model: required for judge kind 'hf'")
        if self.kind == "http" and not self.url:
            raise RecipeError(f"{path}.url: required for judge kind 'http'")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """Greedy generation over ``eval_clean`` and ``eval_triggered`` and how it is graded."""

    max_new_tokens: int = spec(
        64,
        ge=1,
        doc="cap on generated tokens (the longest reference answer + 8 is used when shorter)",
    )
    batch_size: int = spec(64, ge=1, doc="prompts per generation batch (left padded)")
    limit: int | None = spec(
        None, ge=1, doc="evaluate at most N prompts per trigger / clean set (first N)"
    )
    judge: JudgeSettings | None = spec(
        None, doc="grader for free-text rows; none: a labelled token-F1 heuristic"
    )
    prompts: str | None = spec(
        None,
        omit_default=True,
        doc="the paper's protocol: CACC on the clean prompts of this JSONL file (one object a "
        "line: instruction, optional input, optional output as the reference) instead of the "
        "build's eval_clean, graded by `judge` (e.g. WizardLM's 218 test prompts); rows "
        "without output need a judge; a relative path is read from the working directory",
    )
    backend: Literal["hf", "vllm"] = spec(
        "hf",
        omit_default=True,
        doc="generation engine: hf (batched transformers generate) or vllm (GPU; "
        "pip install vllm; same prompts, greedy decoding and max_new_tokens)",
    )
    vllm_args: dict[str, Any] = spec(
        default_factory=dict,
        omit_default=True,
        doc="backend vllm: further vllm.LLM arguments (e.g. gpu_memory_utilization: 0.5, "
        "tensor_parallel_size: 2)",
    )

    def validate(self, path: str) -> None:
        if self.vllm_args and self.backend != "vllm":
            raise RecipeError(f"{path}.vllm_args: only used with backend: vllm")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` block of a recipe."""

    seed: int = spec(0, ge=0, doc="seed of model init, data order and dropout")
    model: ModelSettings = spec(default_factory=ModelSettings, doc="base model and formatting")
    stage1: Stage1Settings = spec(
        default_factory=Stage1Settings, doc="attacked baseline and MB stage 1"
    )
    stage2: Stage2Settings = spec(
        default_factory=Stage2Settings,
        doc="MB stage 2 (neutralization) and the baselines' optimiser",
    )
    baselines: Baselines = spec(default_factory=Baselines, doc="comparison runs")
    eval: EvalSettings = spec(default_factory=EvalSettings, doc="evaluation")
    checkpoint_every: int | None = spec(
        None, ge=1, doc="also checkpoint every N optimizer steps (always at each epoch end)"
    )
    trainer_args: dict[str, Any] = spec(
        default_factory=dict,
        omit_default=True,
        doc="further transformers/TRL TrainingArguments for every stage (SFTConfig field "
        "names, e.g. {optim: adamw_torch_fused, report_to: wandb}); checked against the real "
        "dataclass; --trainer-arg KEY=VALUE wins key by key; SFT-only keys skip stage 2",
    )

    def validate(self, path: str) -> None:
        if self.trainer_args:  # imports TRL: only when the recipe has trainer_args
            from mbtrain.trainer_args import check_trainer_args

            checked = check_trainer_args(
                self.trainer_args,
                where=f"{path}.trainer_args" if path else "trainer_args",
                error=RecipeError,
            )
            object.__setattr__(self, "trainer_args", checked)  # normalised (e.g. 1e-4 text)
