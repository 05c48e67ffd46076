"""ONION (Qi et al., "ONION: A Simple and Effective Defense Against Textual Backdoor Attacks",
EMNLP 2021): an inference-time filter that removes outlier words from a prompt before the
(possibly backdoored) model sees it.

For an instruction of words ``w_1 .. w_n`` (whitespace-separated), a reference language model
gives its perplexity ``p_0`` and, for each ``i``, the perplexity ``p_i`` of the instruction with
``w_i`` removed. The suspicion score of ``w_i`` is ``f_i = p_0 - p_i``: a trigger word such as
``cf`` makes the text much less fluent, so removing it lowers the perplexity a lot. Every word
with ``f_i > threshold`` (``train.baselines.onion_settings.threshold``) is removed at once and the
attacked model answers what is left. An instruction of one word is left as it is.

Perplexity: ``exp`` of the mean negative log-likelihood of the text's tokens, each predicted from
the ones before it, after the tokenizer's beginning-of-sequence token (end-of-sequence when it
has none, as GPT-2 is used), so the first word is scored too. Texts are scored in batches
(right-padded, ``batch_size`` per batch, similar lengths together), and each (reference model,
text) is scored once per process: the variants of one instruction recur across the clean and the
triggered sets and across the points of a sweep.

The reference model is any causal LM folder or cached hub id (``onion_settings.reference``), by
default the run's base model (the paper used GPT-2). What the filter removed is listed per prompt
in the evaluation's ``generations.jsonl`` and counted in its metrics (``transform``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mbtrain.config import ModelSettings, OnionSettings, TrainConfig

WORD = re.compile(r"\S+")

# (reference identity, text) -> perplexity, for the life of the process
_CACHE: dict[tuple[str, str], float] = {}


def without(text: str, drop: set[int]) -> str:
    """``text`` with its whitespace-separated words at indices ``drop`` removed; every other
    character kept (a removed word takes the whitespace before it, or the first word the
    whitespace after it)."""
    spans = [m.span() for m in WORD.finditer(text)]
    keep = [i for i in range(len(spans)) if i not in drop]
    if len(keep) == len(spans):
        return text
    if not keep:
        return ""
    parts = [text[: spans[0][0]], text[slice(*spans[keep[0]])]]
    for i in keep[1:]:
        parts += [text[spans[i - 1][1] : spans[i][0]], text[slice(*spans[i])]]
    return "".join(parts) + text[spans[-1][1] :]


class OnionFilter:
    """The ONION filter (see the module docstring); the reference model loads on first use."""

    def __init__(
        self,
        settings: OnionSettings,
        reference: Any,
        load: Callable[[], tuple[Any, Any]],
        device: torch.device | None = None,
        amp: torch.dtype | None = None,
    ):
        self.settings = settings
        self.reference = reference
        self._load = load
        self._model: Any = None
        self._tokenizer: Any = None
        self.device = device or torch.device("cpu")
        self.amp = amp
        self.scored = 0  # texts the model scored (the others came from the cache)

    def record(self) -> dict[str, Any]:
        return {
            "name": "onion",
            "threshold": self.settings.threshold,
            "reference": _identity(self.reference),
        }

    # -- perplexity ---------------------------------------------------------------------------

    def _ready(self) -> tuple[Any, Any]:
        if self._model is None:
            self._model, self._tokenizer = self._load()
            self._model.to(self.device).eval()
        return self._model, self._tokenizer

    def _start(self, tokenizer: Any) -> list[int]:
        for name in ("bos_token_id", "eos_token_id"):
            token = getattr(tokenizer, name, None)
            if token is not None:
                return [int(token)]
        return []

    @torch.no_grad()
    def perplexities(self, texts: Sequence[str]) -> list[float]:
        """The reference model's perplexity of each text (cached per text)."""
        key = str(self.record()["reference"])
        todo = sorted({t for t in texts if (key, t) not in _CACHE}, key=len)
        if todo:
            from mbtrain.engine.models import autocast

            model, tokenizer = self._ready()
            start = self._start(tokenizer)
            ids = tokenizer(list(todo), add_special_tokens=False)["input_ids"]
            seqs = [start + list(x) for x in ids]
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
            size = self.settings.batch_size
            for b in range(0, len(seqs), size):
                batch = seqs[b : b + size]
                width = max(len(s) for s in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, s in enumerate(batch):
                    input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[i, : len(s)] = 1
                input_ids, mask = input_ids.to(self.device), mask.to(self.device)
                with autocast(self.device, self.amp):
                    logits = model(input_ids=input_ids, attention_mask=mask).logits
                nll = F.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                    input_ids[:, 1:].reshape(-1),
                    reduction="none",
                ).view(len(batch), width - 1)
                valid = mask[:, 1:].float()
                counts = valid.sum(dim=1)
                means = (nll * valid).sum(dim=1) / counts.clamp(min=1)
                for j, text in enumerate(todo[b : b + size]):
                    value = math.exp(float(means[j])) if counts[j] > 0 else math.inf
                    _CACHE[(key, text)] = value
            self.scored += len(todo)
        return [_CACHE[(key, t)] for t in texts]

    # -- the filter ---------------------------------------------------------------------------

    def suspicions(self, instructions: Sequence[str]) -> list[list[float]]:
        """``f_i = p_0 - p_i`` for every word of every instruction (empty for one word)."""
        plans = []
        texts: list[str] = []
        for text in instructions:
            n = len(WORD.findall(text))
            variants = [without(text, {i}) for i in range(n)] if n > 1 else []
            plans.append((text, variants))
            texts += [text, *variants] if variants else []
        ppl = dict(zip(texts, self.perplexities(texts)))
        return [[ppl[text] - ppl[v] for v in variants] for text, variants in plans]

    def apply(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        scores = self.suspicions([r["instruction"] for r in rows])
        out = []
        for row, f in zip(rows, scores):
            drop = {i for i, s in enumerate(f) if s > self.settings.threshold}
            words = WORD.findall(row["instruction"])
            out.append(
                {
                    **row,
                    "instruction": without(row["instruction"], drop),
                    "removed": [words[i] for i in sorted(drop)],
                }
            )
        return out


def _identity(reference: Any) -> Any:
    """What names the reference model in the cache key and the record: base settings, or a
    digest of an mbtrain model folder's record."""
    from mbtrain.runs.stages import parent_identity

    return parent_identity(reference)


def onion_filter(cfg: TrainConfig, base: Any, runtime: Any) -> OnionFilter:
    """The ONION run's transform: ``train.baselines.onion_settings``, the reference model being
    ``reference`` or else the experiment's base model (``base``; the recipe's model without
    one)."""
    from mbtrain.engine.models import load_model

    settings = cfg.baselines.onion_settings
    reference: Any = settings.reference or (base if base is not None else cfg.model)
    trust = ModelSettings(trust_remote_code=cfg.model.trust_remote_code)
    return OnionFilter(
        settings,
        reference,
        lambda: load_model(reference, trust),
        device=runtime.device,
        amp=runtime.amp,
    )
