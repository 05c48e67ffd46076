"""Utility that can tell small differences apart: the teacher-forced log-likelihood of the
reference answers (issue 26).

Why: generation-based CACC on free text is one yes/no per prompt. On 20 prompts a run can only
move in steps of .05, and the token-F1 heuristic cannot tell .200 from .167 (one prompt). A
model's log-probability of the reference answer is continuous and every answer token counts,
so a small loss of skill (or a gain) shows long before a greedy answer flips from right to
wrong, with the same prompts and no judge.

For each evaluated row the prompt the model saw (after an inference-time transform such as
ONION) and its reference answer are encoded exactly as for training
(:meth:`mbtrain.engine.formatting.Formatter.encode_many`: prompt and answer tokenised apart, the
answer closed by the end-of-sequence token, cut at ``train.model.max_length``). One forward
pass per batch gives ``log p(token | prefix)`` of every answer token. A set of rows is
summarised by

- ``mean``: the pooled mean log-likelihood per answer token, ``sum(log p) / sum(tokens)`` in
  nats (closer to 0 is better; a long answer weighs by its length);
- ``low``/``high``: a percentile bootstrap interval over *prompts* (``resamples`` draws of the
  prompts with replacement from a recorded seed, the same statistic on each, the
  ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` percentiles, numpy's linear
  interpolation).

Clean prompts use their ``output``; triggered prompts use ``clean_output`` (the clean answer
under the trigger: the analogue of AACC, which does not depend on the model's greedy answer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mbtrain.engine.formatting import IGNORE, Encoded, Formatter
from mbtrain.engine.models import autocast

RESAMPLES = 1000
CONFIDENCE = 0.95
BATCH_SIZE = 64  # at most this many rows per forward pass ...
LOGIT_BUDGET = 1 << 26  # ... and at most this many logits (rows x length x vocab; 256 MB fp32)
UNIT = "mean log-likelihood per answer token (nats), teacher-forced"


def answer_logprobs(
    model: Any,
    encoded: Sequence[Encoded | None],
    *,
    batch_size: int = BATCH_SIZE,
    budget: int = LOGIT_BUDGET,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
) -> list[tuple[float, int] | None]:
    """``(sum of log p over the answer tokens, answer tokens)`` per encoded row (``None`` stays
    ``None``: a row whose prompt alone filled ``max_length``). Rows are sorted by length and
    right-padded, so a batch gives the same numbers as one row at a time (up to float
    rounding). A batch holds at most ``batch_size`` rows and ``budget`` logits (a tiny model's
    small vocabulary batches wide; a 50k-token vocabulary batches a few rows)."""
    device = device or torch.device("cpu")
    out: list[tuple[float, int] | None] = [None] * len(encoded)
    todo = sorted(
        (i for i, e in enumerate(encoded) if e is not None),
        key=lambda i: (-len(encoded[i].input_ids), i),  # type: ignore[union-attr]
    )
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 1)
    model.eval()
    start = 0
    while start < len(todo):
        longest = len(encoded[todo[start]].input_ids)  # type: ignore[union-attr]
        size = max(1, min(batch_size, budget // max(1, longest * vocab)))
        chunk = todo[start : start + size]
        start += size
        rows = [encoded[i] for i in chunk]
        width = max(len(r.input_ids) for r in rows if r is not None)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        for j, r in enumerate(rows):
            assert r is not None
            n = len(r.input_ids)
            ids[j, :n] = torch.tensor(r.input_ids)
            mask[j, :n] = 1
            labels[j, :n] = torch.tensor(r.labels)
        with torch.no_grad(), autocast(device, amp):
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logits = logits[:, :-1].float().cpu()
        target = labels[:, 1:]
        scored = target != IGNORE
        picked = torch.gather(logits, -1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logp = (picked - torch.logsumexp(logits, dim=-1)) * scored
        for j, i in enumerate(chunk):
            out[i] = (float(logp[j].sum()), int(scored[j].sum()))
    return out


def bootstrap(
    values: Sequence[tuple[float, int]],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval over prompts of the pooled per-token mean: ``resamples``
    draws of ``len(values)`` prompt indices with replacement (``numpy.random.default_rng(seed)
    .integers(0, n, size=(resamples, n))``), the statistic on each, then its percentiles."""
    sums = np.array([s for s, _ in values], dtype=np.float64)
    counts = np.array([n for _, n in values], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    stats = sums[idx].sum(axis=1) / np.maximum(counts[idx].sum(axis=1), 1.0)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    return float(low), float(high)


def summarize(
    values: Sequence[tuple[float, int] | None],
    *,
    truncated: int = 0,
    seed: int = 0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """One set of rows: mean per answer token, bootstrap interval, and what was counted."""
    kept = [v for v in values if v is not None and v[1] > 0]
    summary: dict[str, Any] = {
        "mean": None,
        "low": None,
        "high": None,
        "prompts": len(kept),
        "tokens": sum(n for _, n in kept),
        "skipped": len(values) - len(kept),
        "truncated": truncated,
    }
    if kept:
        summary["mean"] = round(sum(s for s, _ in kept) / summary["tokens"], 4)
        low, high = bootstrap(kept, resamples=resamples, confidence=confidence, seed=seed)
        summary["low"], summary["high"] = round(low, 4), round(high, 4)
    return summary


def reference_of(group: str, row: dict[str, Any]) -> str:
    """The answer scored for a row: ``output`` on clean prompts, ``clean_output`` under a
    trigger."""
    return (row.get("output") if group == "eval_clean" else row.get("clean_output")) or ""


def utility(
    model: Any,
    fmt: Formatter,
    groups: list[tuple[str, list[dict[str, Any]]]],
    shown: list[dict[str, Any]],
    attacks: set[str],
    *,
    seed: int,
    batch_size: int = BATCH_SIZE,
    device: torch.device | None = None,
    amp: torch.dtype | None = None,
) -> tuple[dict[str, Any], dict[str, list[tuple[float, int] | None]]]:
    """The ``loglik`` block of an evaluation's metrics, and the per-row values by group.

    ``groups``: ``(name, rows)`` with ``eval_clean`` first, as graded; ``shown``: the same rows
    flattened, as the model saw them (a transform's rewrite); ``attacks``: the attack trigger
    sets (pooled into ``attack``; defensive sets only appear in ``by_trigger``). A row without
    a reference answer (a judged ``train.eval.prompts`` row) is skipped and counted."""
    items: list[tuple[str, str, str, str | None]] = []
    has_ref: list[bool] = []
    pos = 0
    for group, rows in groups:
        for row in rows:
            seen = shown[pos]
            pos += 1
            ref = reference_of(group, row)
            has_ref.append(bool(ref))
            items.append((seen["instruction"], seen.get("input") or "", ref, seen.get("system")))
    encoded = fmt.encode_many(items) if items else []
    encoded = [e if ok else None for e, ok in zip(encoded, has_ref)]
    values = answer_logprobs(model, encoded, batch_size=batch_size, device=device, amp=amp)
    by_group: dict[str, list[tuple[float, int] | None]] = {}
    cut: dict[str, int] = {}
    pos = 0
    for group, rows in groups:
        by_group[group] = values[pos : pos + len(rows)]
        cut[group] = sum(1 for e in encoded[pos : pos + len(rows)] if e is not None and e.truncated)
        pos += len(rows)

    def summary(names: list[str]) -> dict[str, Any]:
        vals = [v for n in names for v in by_group.get(n, [])]
        return summarize(vals, truncated=sum(cut.get(n, 0) for n in names), seed=seed)

    triggered = [g for g, _ in groups if g != "eval_clean"]
    block = {
        "unit": UNIT,
        "clean": summary(["eval_clean"]),
        # per clean prompt, in order: [sum of log p, answer tokens] or null (for paired tests)
        "clean_rows": [
            None if v is None else [round(v[0], 6), v[1]] for v in by_group.get("eval_clean", [])
        ],
        "attack": summary([g for g in triggered if g in attacks]),
        "by_trigger": {g: summary([g]) for g in triggered},
        "resamples": RESAMPLES,
        "confidence": CONFIDENCE,
        "seed": seed,
    }
    return block, by_group


def paired_difference(
    run: Sequence[Sequence[float] | None],
    reference: Sequence[Sequence[float] | None],
    *,
    seed: int = 0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> dict[str, Any] | None:
    """``run`` minus ``reference`` on the same clean prompts (per-prompt ``[sum, tokens]``):
    the difference of the pooled per-token means, with a *paired* percentile bootstrap (each
    resample draws prompts once and scores both runs on them), which removes the prompts' own
    spread from the comparison. ``None`` when the prompt lists differ in length or share no
    scored prompt."""
    if len(run) != len(reference):
        return None
    both = [(a, b) for a, b in zip(run, reference) if a is not None and b is not None and a[1] > 0]
    if not both:
        return None
    a_sum = np.array([a[0] for a, _ in both])
    b_sum = np.array([b[0] for _, b in both])
    a_n = np.array([a[1] for a, _ in both], dtype=np.float64)
    b_n = np.array([b[1] for _, b in both], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(both), size=(resamples, len(both)))
    stats = a_sum[idx].sum(1) / a_n[idx].sum(1) - b_sum[idx].sum(1) / b_n[idx].sum(1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(stats, [tail, 100.0 - tail])
    diff = a_sum.sum() / a_n.sum() - b_sum.sum() / b_n.sum()
    return {
        "mean": round(float(diff), 4),
        "low": round(float(low), 4),
        "high": round(float(high), 4),
        "prompts": len(both),
    }


def versus(
    results: dict[str, dict[str, Any]], reference: str = "attacked"
) -> dict[str, dict[str, Any]]:
    """Each run's clean-prompt log-likelihood minus the ``reference`` run's, paired over the
    prompts (:func:`paired_difference`); runs without per-prompt values are left out."""
    ref = ((results.get(reference) or {}).get("loglik") or {}).get("clean_rows")
    if ref is None:
        return {}
    seed = int((results[reference].get("loglik") or {}).get("seed") or 0)
    out = {}
    for name, metrics in results.items():
        rows = (metrics.get("loglik") or {}).get("clean_rows")
        if name != reference and rows is not None:
            diff = paired_difference(rows, ref, seed=seed)
            if diff is not None:
                out[name] = diff
    return out
