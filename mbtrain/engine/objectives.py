"""Training objectives: response-only cross-entropy, and the MB-Defense stage-2 loss.

An objective turns a list of encoded items into a padded batch and a batch into a loss. It also
owns how it is trained (so no caller dispatches on its type): ``trainer_class()`` (the Trainer
subclass), ``dataset(items)`` (what that Trainer takes as a dataset), ``trainer_kwargs(...)`` (its
further constructor arguments), ``sft_config`` (``SFTConfig`` or plain ``TrainingArguments``) and
``wraps_lora`` (whether the stage wraps a LoRA adapter itself or hands the Trainer a
``peft_config``). A new trainer backend is an objective with these five members
(docs/extending.md). Losses are
computed from *sums* normalised by totals over the whole optimizer step (all gradient-accumulation
micro-batches), so accumulating k micro-batches gives exactly the gradient of one big batch.

Stage 2 (neutralization), per recovery tuple (x, y, x_d, y_d)::

    L = CE(x, y) - lam * log sigmoid( s(y | x_d) - s(y_d | x_d) )

``CE`` is the token-mean cross-entropy of the clean answer (as in ordinary fine-tuning); ``s`` is a
sequence log-prob over the response tokens only (prompt tokens never count): their mean
(``normalize="mean"``, the default) or their sum. The mean makes the margin independent of answer
length: with sums, a long defensive response the model never learned sits so far below the clean
answer that the sigmoid saturates and the term's gradient is about zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from mbtrain.engine.formatting import IGNORE, Encoded


def pad_batch(seqs: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` (labels ``IGNORE`` on padding)."""
    width = max(len(s.input_ids) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        n = len(s.input_ids)
        ids[i, :n] = torch.tensor(s.input_ids)
        labels[i, :n] = torch.tensor(s.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def token_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position negative log-likelihood of the next token and its response mask, both
    ``[rows, positions]``, over the positions that predict a response token.

    Only positions from the earliest response start onward go through the output layer
    (``logits_to_keep``): prompt positions never enter the loss, and skipping them saves the
    vocabulary projection there.
    """
    labels = batch["labels"]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    first = int(mask.float().argmax(dim=1).min()) if mask.any() else 0
    width = labels.shape[1]
    keep = torch.arange(first, width - 1, device=labels.device)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=keep,
        use_cache=False,
    ).logits
    targets = targets[:, first:]
    mask = mask[:, first:]
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="none",
    ).view(targets.shape)
    return nll, mask


def response_token_count(labels: torch.Tensor) -> int:
    return int((labels[:, 1:] != IGNORE).sum())


class SFTObjective:
    """Response-only cross-entropy, token-mean over the optimizer step; trained by TRL's
    ``SFTTrainer`` (``MBSFTTrainer``), which takes LoRA as a ``peft_config``."""

    sft_config = True
    wraps_lora = False

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    @staticmethod
    def trainer_class() -> type:
        from mbtrain.engine.trainer import sft_trainer_class

        return sft_trainer_class()

    @staticmethod
    def dataset(items: list[Encoded]) -> Any:
        from mbtrain.engine.trainer import sft_dataset

        return sft_dataset(items)

    def trainer_kwargs(self, tokenizer: Any, peft_config: Any) -> dict[str, Any]:
        return {"processing_class": tokenizer, "peft_config": peft_config}

    def collate(self, items: list[Encoded]) -> dict[str, torch.Tensor]:
        return pad_batch(items, self.pad_id)

    @staticmethod
    def length(item: Encoded) -> int:
        return len(item.input_ids)

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        return {
            "tokens": response_token_count(batch["labels"]),
            "seen": int(batch["attention_mask"].sum()),
        }

    def forward(
        self, model: Any, batch: dict[str, torch.Tensor], totals: dict[str, int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        nll, mask = token_nll(model, batch)
        ce_sum = (nll * mask).sum()
        loss = ce_sum / max(totals["tokens"], 1)
        return loss, {"ce_sum": float(ce_sum.detach()), "tokens": float(mask.sum())}

    @staticmethod
    def summarize(sums: dict[str, float]) -> dict[str, float]:
        ce = sums.get("ce_sum", 0.0) / max(sums.get("tokens", 0.0), 1.0)
        return {"loss": ce, "ce": ce}


@dataclasses.dataclass(frozen=True)
class RecoveryItem:
    """One stage-2 tuple, encoded: (x, y), (x_d, y) and (x_d, y_d)."""

    clean: Encoded
    triggered_clean: Encoded
    triggered_defense: Encoded


class NeutralizationObjective:
    """The MB-Defense stage-2 loss (see the module docstring); trained by
    ``NeutralizationTrainer`` on a model the stage has already wrapped with LoRA (if any)."""

    sft_config = False
    wraps_lora = True

    def __init__(self, pad_id: int, lam: float, normalize: str):
        if normalize not in ("mean", "sum"):
            raise ValueError(f"normalize must be 'mean' or 'sum', got {normalize!r}")
        self.pad_id = pad_id
        self.lam = lam
        self.normalize = normalize

    @staticmethod
    def trainer_class() -> type:
        from mbtrain.engine.trainer import neutralization_trainer_class

        return neutralization_trainer_class()

    @staticmethod
    def dataset(items: list[RecoveryItem]) -> Any:
        return list(items)

    def trainer_kwargs(self, tokenizer: Any, peft_config: Any) -> dict[str, Any]:
        return {"lam": self.lam, "normalize": self.normalize, "pad_id": self.pad_id}

    def collate(self, items: list[RecoveryItem]) -> dict[str, torch.Tensor]:
        seqs = (
            [it.clean for it in items]
            + [it.triggered_clean for it in items]
            + [it.triggered_defense for it in items]
        )
        batch = pad_batch(seqs, self.pad_id)
        batch["rows"] = torch.tensor(len(items))
        return batch

    @staticmethod
    def length(item: RecoveryItem) -> int:
        return max(len(item.clean.input_ids), len(item.triggered_defense.input_ids))

    def counts(self, batch: dict[str, torch.Tensor]) -> dict[str, int]:
        b = int(batch["rows"])
        return {
            "tokens": response_token_count(batch["labels"][:b]),
            "rows": b,
            "seen": int(batch["attention_mask"].sum()),
        }

    def sequence_scores(self, nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """s = response log-prob per sequence, summed or mean over its tokens."""
        logp = -(nll * mask).sum(dim=1)
        if self.normalize == "mean":
            logp = logp / mask.sum(dim=1).clamp(min=1)
        return logp

    def terms(
        self, model: Any, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(CE sum over the clean responses, log sigmoid(margin) per tuple, float sums for the
        log) of one batch; the loss divides them by the step's totals."""
        b = int(batch["rows"])
        nll, mask = token_nll(model, {k: v for k, v in batch.items() if k != "rows"})
        ce_sum = (nll[:b] * mask[:b]).sum()
        scores = self.sequence_scores(nll[b:], mask[b:])
        s_clean, s_defense = scores[:b], scores[b:]
        margin = s_clean - s_defense
        r = F.logsigmoid(margin)
        return (
            ce_sum,
            r,
            {
                "ce_sum": float(ce_sum.detach()),
                "tokens": float(mask[:b].sum()),
                "r_sum": float(r.detach().sum()),
                "rows": float(b),
                "margin_sum": float(margin.detach().sum()),
                "s_clean_sum": float(s_clean.detach().sum()),
                "s_defense_sum": float(s_defense.detach().sum()),
            },
        )

    def forward(
        self, model: Any, batch: dict[str, torch.Tensor], totals: dict[str, int]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        ce_sum, r, sums = self.terms(model, batch)
        loss = ce_sum / max(totals["tokens"], 1) - self.lam * r.sum() / max(totals["rows"], 1)
        return loss, sums

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        rows = max(sums.get("rows", 0.0), 1.0)
        ce = sums.get("ce_sum", 0.0) / max(sums.get("tokens", 0.0), 1.0)
        r = sums.get("r_sum", 0.0) / rows
        return {
            "loss": ce - self.lam * r,
            "ce": ce,
            "r": r,
            "margin": sums.get("margin_sum", 0.0) / rows,
            "s_clean": sums.get("s_clean_sum", 0.0) / rows,
            "s_defense": sums.get("s_defense_sum", 0.0) / rows,
        }
