"""Which rows of a build each run trains on (the data contract, in code).

- attacked baseline: ``train`` rows with role ``clean`` or ``attack`` (what a victim would train on
  without the defence);
- MB stage 1: every ``train`` row (the defensive rows included);
- MB stage 2: the ``recovery`` tuples (x, y, x_d, y_d), selection on ``recovery_eval``;
- Clean-FFT: the distinct clean (x, y) pairs of the recovery rows;
- trigger augmentation: those clean pairs plus (x_d, y) for every recovery tuple: the same data
  stage 2 sees, with plain cross-entropy and no stage 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mbdata.core.errors import InputError

Example = tuple[str, str, str, str | None]  # instruction, input, output, system
Tuple4 = tuple[Example, Example, Example]  # (x, y), (x_d, y), (x_d, y_d)

ATTACKED_ROLES = ("clean", "attack")


def example(row: dict[str, Any]) -> Example:
    return (row["instruction"], row.get("input") or "", row["output"], row.get("system"))


def train_examples(
    rows: Iterable[dict[str, Any]], roles: tuple[str, ...] | None = None
) -> list[Example]:
    return [example(r) for r in rows if roles is None or r["role"] in roles]


def recovery_tuples(rows: Iterable[dict[str, Any]], split: str = "recovery") -> list[Tuple4]:
    """(x, y), (x_d, y), (x_d, y_d) per recovery row; a row without its triggered twin is an
    error naming the row."""
    out = []
    for i, r in enumerate(rows):
        if r.get("triggered_instruction") is None or r.get("triggered_output") is None:
            raise InputError(
                f"{split} row {i} (id {r.get('id')}): recovery rows need "
                "triggered_instruction and triggered_output"
            )
        system = r.get("system")
        x_d = (r["triggered_instruction"], r.get("triggered_input") or "")
        out.append(
            (
                (r["instruction"], r.get("input") or "", r["output"], system),
                (*x_d, r["output"], system),
                (*x_d, r["triggered_output"], system),
            )
        )
    return out


def clean_examples(rows: Iterable[dict[str, Any]]) -> list[Example]:
    """Distinct clean (x, y) of recovery rows, in first-seen order."""
    seen: dict[Example, None] = {}
    for r in rows:
        seen.setdefault((r["instruction"], r.get("input") or "", r["output"], r.get("system")))
    return list(seen)


def trigger_aug_examples(rows: Iterable[dict[str, Any]]) -> list[Example]:
    """The clean pairs, then every (x_d, y): triggered prompts with clean answers."""
    rows = list(rows)
    return clean_examples(rows) + [t[1] for t in recovery_tuples(rows)]
