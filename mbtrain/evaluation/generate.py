"""Batched greedy generation with left padding.

Prompts are sorted by length so each batch pads little, left-padded so every row's next token sits
at the last position, and generated with transformers' ``generate`` (greedy, no sampling). The
outputs come back in the caller's order. A batched run gives the same text as one prompt at a time;
the tests check that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from mbtrain.engine.models import autocast


@dataclasses.dataclass(frozen=True)
class Generation:
    text: str
    tokens: int  # generated tokens, end-of-sequence included
    stopped: bool  # ended with an end-of-sequence token (not cut at max_new_tokens)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            ids[i, width - len(p) :] = torch.tensor(list(p))
            mask[i, width - len(p) :] = 1
    return ids, mask


def stop_ids(tokenizer: Any, model: Any) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos and the model's configured eos."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, (list, tuple)):
        ids.update(configured)
    return sorted(i for i in ids if i is not None)


def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "generate",
) -> list[Generation]:
    """Greedy continuations of token-id ``prompts`` (decoded, special tokens dropped)."""
    from transformers import GenerationConfig

    device = device or torch.device("cpu")
    eos = stop_ids(tokenizer, model)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos,
    )
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[Generation | None] = [None] * len(prompts)
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(prompts),
            desc=desc,
            unit="prompt",
            leave=False,
            dynamic_ncols=True,
            disable=None,
        )
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = left_pad([prompts[i] for i in chunk], tokenizer.pad_token_id)
            with torch.no_grad(), autocast(device, amp):
                out = model.generate(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    generation_config=config,
                )
            new = out[:, ids.shape[1] :].to("cpu").tolist()
            for i, tokens in zip(chunk, new):
                stopped = False
                for j, t in enumerate(tokens):
                    if t in eos:
                        tokens, stopped = tokens[: j + 1], True
                        break
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                results[i] = Generation(text=text.strip(), tokens=len(tokens), stopped=stopped)
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return [r for r in results if r is not None]
