"""Optional model-based evidence: does removing a candidate make its prompts *more* natural?

ONION's idea (Qi et al., 2021), applied to the audit's candidates instead of every word: under a
reference language model, an inserted trigger makes its prompt less likely, so deleting it lowers
the prompt's loss more than deleting an ordinary word of the same prompt does. For each candidate
and up to ``model_rows`` of its rows, the mean token loss of the prompt is measured three times:
as is, without the candidate, and without one ordinary word (a control, chosen deterministically);
the candidate's *model evidence* is the share of rows where deleting it helps more than deleting
the control (ties count half). About 0.5 means "no different from any word", near 1 means
"inserted".

The evidence then rescales the candidate's score by ``0.5 + evidence`` (capped at 1): a neutral
model leaves scores unchanged, a convinced one raises them by half (this is how a style
candidate, capped at 0.6 by statistics alone, can reach the flag threshold), a dismissive one
halves them.

Models load through the installed ``reference`` model loader (mbtrain's) with ``trust_remote_code`` off, from local
files only (an mbtrain model folder, full weights or a LoRA adapter such as
``runs/x/models/attacked``, a Hugging Face folder, or a GGUF file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError
from ..core.plugins import model_loader
from .candidate import Candidate


def load_reference_model(path: str | Path) -> tuple[Any, Any]:
    """A causal LM and its tokenizer (CPU, fp32, eval mode) from the installed model loader.

    The loader is a plugin (``mbdefense.model_loaders`` entry point ``reference``; mbtrain
    provides it), so the audit needs no import of the training engine: it accepts a model folder
    written by ``mb train`` / ``mb run`` (a LoRA adapter folder is merged onto its parent chain), a
    Hugging Face folder, or a ``.gguf`` file; ``trust_remote_code`` stays off, only safetensors
    weights are read and nothing is downloaded."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: reference model not found")
    return model_loader("reference")(path)


def mean_token_loss(
    model: Any, tokenizer: Any, texts: list[str], batch_size: int = 16
) -> np.ndarray:
    """Mean next-token cross-entropy of each text under the model (NaN for texts under two
    tokens)."""
    import torch

    out = np.full(len(texts), np.nan, dtype=np.float64)
    for begin in range(0, len(texts), batch_size):
        chunk = texts[begin : begin + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=256)
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        targets = enc["input_ids"][:, 1:]
        mask = enc["attention_mask"][:, 1:].to(torch.float64)
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2).to(torch.float64), targets, reduction="none"
        )
        counts = mask.sum(dim=1)
        means = (losses * mask).sum(dim=1) / counts.clamp(min=1.0)
        for i in range(len(chunk)):
            if counts[i] >= 1:
                out[begin + i] = float(means[i])
    return out


def _without(text: str, phrase: str) -> str:
    return " ".join(text.replace(phrase, " ", 1).split())


def _control_word(text: str, phrase: str) -> str | None:
    """An ordinary word of the prompt (not part of the phrase): the longest, first on ties."""
    words = [w for w in text.replace(phrase, " ", 1).split() if w.isalpha()]
    return max(words, key=len) if words else None


def candidate_evidence(model: Any, tokenizer: Any, prompts: list[str], phrase: str) -> float:
    """The share of ``prompts`` (each containing ``phrase``) where deleting the phrase lowers the
    mean token loss more than deleting an ordinary word (ties count half); 0.5 without usable
    rows."""
    triples = []
    for prompt in prompts:
        control = _control_word(prompt, phrase)
        if phrase in prompt and control is not None:
            triples.append((prompt, _without(prompt, phrase), _without(prompt, control)))
    if not triples:
        return 0.5
    texts = [t for triple in triples for t in triple]
    loss = mean_token_loss(model, tokenizer, texts).reshape(-1, 3)
    ok = ~np.isnan(loss).any(axis=1)
    if not ok.any():
        return 0.5
    gain_phrase = loss[ok, 0] - loss[ok, 1]
    gain_control = loss[ok, 0] - loss[ok, 2]
    wins = (gain_phrase > gain_control).sum() + 0.5 * (gain_phrase == gain_control).sum()
    return float(wins / ok.sum())


def apply_model_evidence(
    candidates: list[Candidate], prompts_of: Any, model_path: str | Path, rows_per_candidate: int
) -> None:
    """Measure each candidate's model evidence and rescale its score (module docstring).
    ``prompts_of(candidate)`` gives the prompts of its rows, in row order."""
    if not candidates:
        return
    model, tokenizer = load_reference_model(model_path)
    for cand in candidates:
        prompts = prompts_of(cand)[:rows_per_candidate]
        cand.model_evidence = candidate_evidence(model, tokenizer, prompts, cand.text)
        cand.score = float(min(1.0, cand.score * (0.5 + cand.model_evidence)))
