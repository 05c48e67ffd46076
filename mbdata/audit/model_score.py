"""Optional model-based evidence: does removing a candidate make its prompts *more* natural?

ONION's idea (Qi et al., 2021), applied to the audit's candidates instead of every word: under a
reference language model, an inserted trigger makes its prompt less likely, so deleting it lowers
the prompt's loss more than deleting an ordinary part of the same prompt does. For each candidate
and up to ``model_rows`` of its rows, the mean token loss of the prompt is measured three times:
as is, without the candidate, and without a *control* of the same kind, chosen deterministically;
the candidate's *model evidence* is the share of rows where deleting it helps more than deleting
the control (ties count half). About 0.5 means "no different from the control", near 1 means
"inserted".

What is removed is the candidate's :data:`Removal`, one function per kind of candidate:

* a phrase (:func:`phrase_removal`): the phrase, against one ordinary word of the prompt (its
  longest, first on ties);
* a leading span such as the ``structure`` signal's opening clause (:func:`leading_span_removal`,
  the span found by the signal): the span, against the prompt's *last* words, as many as the span
  has. Both cut the prompt at one of its edges, so a natural adjunct ("If possible, ...") is
  compared with a cut that costs about as much: with SmolLM2-135M on the real Alpaca rows' own
  opening clauses, a control span from the middle, which breaks the sentence, gave .93 (as if
  inserted), the tail .61 (bench/audit_model.py, bench/results-audit.md).

The evidence then rescales the candidate's score by ``0.5 + evidence`` (capped at 1): a neutral
model leaves scores unchanged, a convinced one raises them by half (this is how a style
candidate, capped at 0.6 by statistics alone, can reach the flag threshold), a dismissive one
halves them.

Models load through the installed ``reference`` model loader (mbtrain's) with ``trust_remote_code`` off, from local
files only (an mbtrain model folder, full weights or a LoRA adapter such as
``runs/x/models/attacked``, a Hugging Face folder, or a GGUF file).
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


# From a prompt: (the prompt without the candidate, the prompt without the control), or None when
# the prompt offers no such pair (the candidate is absent, or nothing is left to be a control).
Removal = Callable[[str], "tuple[str, str] | None"]

_WORD = re.compile(r"\w")
_SPACED = re.compile(r"\S+")


def _without(text: str, phrase: str) -> str:
    return " ".join(text.replace(phrase, " ", 1).split())


def _control_word(text: str, phrase: str) -> str | None:
    """An ordinary word of the prompt (not part of the phrase): the longest, first on ties."""
    words = [w for w in text.replace(phrase, " ", 1).split() if w.isalpha()]
    return max(words, key=len) if words else None


def phrase_removal(phrase: str) -> Removal:
    """The phrase (its first occurrence) against the prompt's longest ordinary word."""

    def remove(prompt: str) -> tuple[str, str] | None:
        control = _control_word(prompt, phrase)
        if phrase not in prompt or control is None:
            return None
        return _without(prompt, phrase), _without(prompt, control)

    return remove


def tail_control(prompt: str, end: int, words: int) -> tuple[int, int] | None:
    """The character span of the prompt's last ``words`` whitespace-separated words, all after
    ``end``, or None unless at least one more word lies between ``end`` and them (the control
    never touches the span, and removing it leaves something of the rest)."""
    rest = [m for m in _SPACED.finditer(prompt) if m.start() >= end]
    if words < 1 or len(rest) <= words:
        return None
    return rest[-words].start(), rest[-1].end()


def leading_span_removal(end_of: Callable[[str], int | None]) -> Removal:
    """The prompt's leading span ``[0, end_of(prompt))`` against its last words, as many as the
    span holds (:func:`tail_control`; the module doc says why the tail). Without the span, the
    rest's first letter is upper-cased when the prompt's was (a rewriter that prepends a clause
    lower-cases it: "If you can, add 3 and 5." -> "Add 3 and 5.")."""

    def remove(prompt: str) -> tuple[str, str] | None:
        end = end_of(prompt)
        if end is None:
            return None
        words = sum(1 for m in _SPACED.finditer(prompt[:end]) if _WORD.search(m.group()))
        control = tail_control(prompt, end, words)
        if control is None:
            return None
        rest = prompt[end:].lstrip()
        if prompt[:1].isupper():
            rest = rest[:1].upper() + rest[1:]
        return " ".join(rest.split()), " ".join(
            (prompt[: control[0]] + prompt[control[1] :]).split()
        )

    return remove


def removal_evidence(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    removal: Removal,
    losses: dict[str, float] | None = None,
) -> float:
    """The share of ``prompts`` where ``removal``'s candidate cut lowers the mean token loss more
    than its control cut (ties count half); 0.5 without usable rows. ``losses`` caches each
    text's loss across calls (a row shared by several shapes is measured once)."""
    losses = {} if losses is None else losses
    triples = []
    for prompt in prompts:
        pair = removal(prompt)
        if pair is not None:
            triples.append((prompt, *pair))
    if not triples:
        return 0.5
    todo = list(dict.fromkeys(t for triple in triples for t in triple if t not in losses))
    if todo:
        losses.update(zip(todo, mean_token_loss(model, tokenizer, todo).tolist()))
    loss = np.array([[losses[t] for t in triple] for triple in triples], dtype=np.float64)
    ok = ~np.isnan(loss).any(axis=1)
    if not ok.any():
        return 0.5
    gain_candidate = loss[ok, 0] - loss[ok, 1]
    gain_control = loss[ok, 0] - loss[ok, 2]
    wins = (gain_candidate > gain_control).sum() + 0.5 * (gain_candidate == gain_control).sum()
    return float(wins / ok.sum())


def candidate_evidence(model: Any, tokenizer: Any, prompts: list[str], phrase: str) -> float:
    """:func:`removal_evidence` of a phrase (:func:`phrase_removal`)."""
    return removal_evidence(model, tokenizer, prompts, phrase_removal(phrase))


def apply_model_evidence(
    candidates: list[Candidate],
    prompts_of: Callable[[Candidate], list[str]],
    reference: Callable[[], tuple[Any, Any]],
    rows_per_candidate: int,
    removal_of: Callable[[Candidate], Removal] | None = None,
) -> None:
    """Measure each candidate's model evidence and rescale its score (module docstring).
    ``prompts_of(candidate)`` gives the prompts of the rows to measure, in row order;
    ``reference()`` the model and tokenizer (called only when there is a candidate);
    ``removal_of(candidate)`` what to remove (default: the candidate's text, a phrase)."""
    if not candidates:
        return
    model, tokenizer = reference()
    losses: dict[str, float] = {}
    for cand in candidates:
        removal = phrase_removal(cand.text) if removal_of is None else removal_of(cand)
        prompts = prompts_of(cand)[:rows_per_candidate]
        cand.model_evidence = removal_evidence(model, tokenizer, prompts, removal, losses)
        cand.score = float(min(1.0, cand.score * (0.5 + cand.model_evidence)))
