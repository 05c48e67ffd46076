"""Reading the ``mb export --format trl`` files back into training items, so mbtrain and a TRL user
train on the same files.

- ``{split}.prompt_completion.jsonl`` → :class:`~mbtrain.engine.formatting.Encoded` rows (prompt and
  completion tokenised separately, EOS appended: the boundary is exact, and for the Alpaca
  templates TRL's own tokenisation of the joined text gives the same ids and completion mask);
- ``recovery.preference.jsonl`` (``clean_prompt`` = x, ``prompt`` = x_d, ``chosen`` = y,
  ``rejected`` = y_d) → :class:`~mbtrain.engine.objectives.RecoveryItem` tuples for
  :class:`mbtrain.engine.trainer.NeutralizationTrainer`.

Example (stage 2 on the export, any causal LM)::

    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments
    from mbtrain.engine.exported import recovery_items
    from mbtrain.engine.trainer import NeutralizationTrainer

    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL)
    items = recovery_items("export/recovery.preference.jsonl", tok, max_length=256)
    args = TrainingArguments("out", num_train_epochs=2, learning_rate=2e-4,
                             per_device_train_batch_size=8, report_to="none")
    NeutralizationTrainer(model=model, args=args, train_dataset=items, lam=1.0,
                          pad_id=tok.pad_token_id).train()
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mbdata.core.errors import InputError
from mbtrain.engine.formatting import Encoded, EncodeStats, Formatter
from mbtrain.engine.objectives import RecoveryItem


def _rows(path: str | Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            row = json.loads(line)
            for key in keys:
                if not isinstance(row.get(key), str):
                    raise InputError(
                        f"{path}: row {i}: field {key!r} missing or not text; "
                        "export it again with `mb export --format trl`"
                    )
            rows.append(row)
    return rows


def _formatter(tokenizer: Any, max_length: int) -> Formatter:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Formatter(tokenizer, "alpaca", max_length)  # prompts arrive rendered


def sft_items(
    path: str | Path, tokenizer: Any, max_length: int = 256, stats: EncodeStats | None = None
) -> list[Encoded]:
    """The rows of a ``prompt_completion`` export, tokenised (rows whose prompt fills
    ``max_length`` are dropped and counted in ``stats``)."""
    rows = _rows(path, ("prompt", "completion"))
    encoded = _formatter(tokenizer, max_length).encode_texts(
        [(r["prompt"], r["completion"]) for r in rows], stats
    )
    return [e for e in encoded if e is not None]


def recovery_items(
    path: str | Path, tokenizer: Any, max_length: int = 256, stats: EncodeStats | None = None
) -> list[RecoveryItem]:
    """(x, y), (x_d, y), (x_d, y_d) per row of a recovery ``preference`` export."""
    rows = _rows(path, ("clean_prompt", "prompt", "chosen", "rejected"))
    fmt = _formatter(tokenizer, max_length)
    stats = stats if stats is not None else EncodeStats()
    parts = [
        fmt.encode_texts([(r[p], r[c]) for r in rows], stats)
        for p, c in (("clean_prompt", "chosen"), ("prompt", "chosen"), ("prompt", "rejected"))
    ]
    return [
        RecoveryItem(a, b, c)
        for a, b, c in zip(*parts, strict=True)
        if a is not None and b is not None and c is not None
    ]
