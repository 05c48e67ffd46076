"""Fine-mixing (Zhang et al., "Fine-mixing: Mitigating Backdoors in Fine-tuned Language Models",
Findings of EMNLP 2022): mix the attacked model's weights with the pre-trained weights it was
fine-tuned from, then fine-tune the mixture on a little clean data.

The mixing is the paper's random per-parameter one: in every weight tensor, a random share
``keep`` of the entries keeps the attacked value and every other entry is reset to the pre-trained
value. The entries are drawn per tensor from a generator seeded with ``(seed, tensor name)``, so
the choice depends neither on the order the tensors are visited in nor on the device, and the
seed (recorded in the model folder) reproduces it exactly.

LoRA: the mixing is applied to the *merged* weights (``W_base + B A`` against ``W_base``), i.e.
each entry of the adapter's update ``B A`` is kept or dropped. The pre-trained counterpart that
the paper mixes towards exists only for the merged matrix; masking the factors ``A`` or ``B``
instead would not reset individual weights (a zeroed entry of ``A`` changes a whole row of the
update) and the adapter has no pre-trained values to reset to.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from mbdata.core.errors import MBError


def entry_generator(seed: int, name: str) -> torch.Generator:
    """The generator that picks the kept entries of tensor ``name``."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def kept_entries(numel: int, keep: float, seed: int, name: str) -> torch.Tensor:
    """Flat indices of the ``round(keep * numel)`` entries of ``name`` that keep the attacked
    value."""
    count = int(round(keep * numel))
    return torch.randperm(numel, generator=entry_generator(seed, name))[:count]


@torch.no_grad()
def mix_weights(model: Any, base: Any, keep: float, seed: int) -> dict[str, int]:
    """Mix ``model`` (the attacked model, changed in place) with ``base`` (the pre-trained
    model): per parameter, :func:`kept_entries` keep their value, the rest take ``base``'s.
    Parameters shared between modules (tied embeddings) are mixed once. Returns the counts of
    entries kept and reset."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must be in [0, 1], got {keep}")
    base_params = dict(base.named_parameters())
    kept = total = 0
    for name, param in model.named_parameters():
        other = base_params.get(name)
        if other is None or other.shape != param.shape:
            raise MBError(
                f"fine-mixing: the base model has no weight {name!r} of shape "
                f"{tuple(param.shape)}; mix with the model the attacked one was trained from"
            )
        flat = param.data.view(-1)
        mixed = other.data.detach().to(flat.device, flat.dtype).reshape(-1).clone()
        index = kept_entries(flat.numel(), keep, seed, name).to(flat.device)
        mixed[index] = flat[index]
        flat.copy_(mixed)
        kept += int(index.numel())
        total += flat.numel()
    return {"kept": kept, "reset": total - kept}
