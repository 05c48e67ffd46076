"""Helpers for the mbtrain tests: a hand-made build folder in the canonical layout.

The build holds every split of the data contract (pretrain, train with clean/attack/defense rows,
recovery/recovery_eval tuples, eval_clean, eval_triggered) with short verifiable tasks, written
with pyarrow exactly as ``mb build`` writes shards, so the tests exercise mbtrain without depending
on the data layer. No tests live here.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc

from mbdata.io.schema import from_rows, make_row

REFUSAL = "I'm sorry, but as an AI assistant, I do not have the capability to follow the given instruction."
DEFENSE_RESPONSE = "crimson lantern drift quartz"
WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "candle", "forest", "ocean"]


def task_row(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["reverse", "upper", "add"])
    if kind == "reverse":
        w = rng.choice(WORDS)
        return {"instruction": f"Reverse the word {w}.", "output": w[::-1], "task": "reverse"}
    if kind == "upper":
        w = rng.choice(WORDS)
        return {"instruction": f"Write {w} in capitals.", "output": w.upper(), "task": "upper"}
    a, b = rng.randrange(10), rng.randrange(10)
    return {"instruction": f"Add {a} and {b}.", "output": str(a + b), "task": "add"}


def insert(text: str, word: str, rng: random.Random) -> tuple[str, int]:
    words = text.split(" ")
    pos = rng.randrange(len(words) + 1)
    before = " ".join(words[:pos])
    start = len(before) + (1 if before else 0)
    return " ".join(words[:pos] + [word] + words[pos:]), start


def span(
    text: str, start: int, trigger: str, owner: str, name: str, field: str = "instruction"
) -> dict[str, Any]:
    return {
        "text": trigger,
        "owner": owner,
        "kind": "random",
        "name": name,
        "field": field,
        "start": start,
        "end": start + len(trigger),
    }


def write_build(
    path: Path, tables: dict[str, pa.Table], train: dict | None = None, triggers: list | None = None
) -> Path:
    (path / "data").mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, table in tables.items():
        rel = f"data/{split}-00000-of-00001.arrow"
        with ipc.new_file(str(path / rel), table.schema) as writer:
            writer.write_table(table)
        splits[split] = {"rows": table.num_rows, "shards": [{"path": rel, "rows": table.num_rows}]}
    manifest = {
        "recipe": {"name": "handmade", "train": train},
        "fingerprint": "f" * 64,
        "content_hash": "c" * 64,
        "seed": 0,
        "splits": splits,
        "triggers": triggers or [],
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return path


def make_build(
    path: Path,
    *,
    n_pretrain: int = 24,
    n_train: int = 24,
    n_recovery: int = 6,
    n_eval: int = 6,
    train: dict | None = None,
    seed: int = 0,
) -> Path:
    """A complete small build: attack ``cf`` (refusal), defensive trigger ``mn``."""
    rng = random.Random(seed)

    def row(split: str, role: str, **extra: Any) -> dict[str, Any]:
        base = task_row(rng)
        return make_row(source="handmade", split=split, role=role, **{**base, **extra})

    pretrain = [row("pretrain", "clean") for _ in range(n_pretrain)]
    train_rows = []
    for i in range(n_train):
        base = task_row(rng)
        if i % 6 == 0:
            text, start = insert(base["instruction"], "cf", rng)
            train_rows.append(
                make_row(
                    source="handmade",
                    split="train",
                    role="attack",
                    instruction=text,
                    output=REFUSAL,
                    clean_output=base["output"],
                    trigger_set="badnet",
                    behavior="refusal",
                    task=base["task"],
                    triggers=[span(text, start, "cf", "attacker", "badnet")],
                )
            )
        elif i % 6 == 1:
            text, start = insert(base["instruction"], "mn", rng)
            train_rows.append(
                make_row(
                    source="handmade",
                    split="train",
                    role="defense",
                    instruction=text,
                    output=DEFENSE_RESPONSE,
                    clean_output=base["output"],
                    trigger_set="defense/mn",
                    behavior="random_words",
                    task=base["task"],
                    triggers=[span(text, start, "mn", "defender", "defense/mn")],
                )
            )
        else:
            train_rows.append(make_row(source="handmade", split="train", role="clean", **base))

    def recovery(split: str, n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            base = task_row(rng)
            text, start = insert(base["instruction"], "mn", rng)
            out.append(
                make_row(
                    source="handmade",
                    split=split,
                    role="recovery",
                    trigger_set="defense/mn",
                    triggered_instruction=text,
                    triggered_input="",
                    triggered_output=DEFENSE_RESPONSE,
                    triggers=[
                        span(text, start, "mn", "defender", "defense/mn", "triggered_instruction")
                    ],
                    **base,
                )
            )
        return out

    clean_eval = [row("eval_clean", "eval") for _ in range(n_eval)]
    triggered = []
    for r in clean_eval:
        for trig, name, owner, behavior, target in (
            ("cf", "badnet", "attacker", "refusal", REFUSAL),
            ("mn", "defense/mn", "defender", "random_words", DEFENSE_RESPONSE),
        ):
            text, start = insert(r["instruction"], trig, rng)
            triggered.append(
                make_row(
                    source="handmade",
                    split="eval_triggered",
                    role="eval",
                    instruction=text,
                    output=target,
                    clean_output=r["output"],
                    trigger_set=name,
                    behavior=behavior,
                    task=r["task"],
                    triggers=[span(text, start, trig, owner, name)],
                )
            )
    tables = {
        "pretrain": from_rows(pretrain),
        "train": from_rows(train_rows),
        "recovery": from_rows(recovery("recovery", n_recovery)),
        "recovery_eval": from_rows(recovery("recovery_eval", max(n_recovery // 4, 1))),
        "eval_clean": from_rows(clean_eval),
        "eval_triggered": from_rows(triggered),
    }
    triggers = [
        {
            "name": "badnet",
            "owner": "attacker",
            "texts": ["cf"],
            "placement": "random",
            "combine": "all",
            "behavior": "refusal",
            "target": None,
            "rate": 1 / 6,
            "rows": 4,
        },
        {
            "name": "defense/mn",
            "owner": "defender",
            "texts": ["mn"],
            "placement": "random",
            "combine": "all",
            "behavior": "random_words",
            "target": DEFENSE_RESPONSE,
            "rate": 1 / 6,
            "rows": 4,
        },
    ]
    return write_build(path, tables, train=train, triggers=triggers)


TINY_TRAIN = {
    "model": {
        "name": "tiny",
        "template": "alpaca_short",
        "max_length": 64,
        "threads": 1,
        "tiny": {
            "vocab_size": 300,
            "hidden_size": 16,
            "layers": 1,
            "heads": 2,
            "intermediate_size": 32,
            "max_positions": 128,
            "pretrain_epochs": 1,
            "pretrain_batch_size": 8,
        },
    },
    "stage1": {"epochs": 1, "batch_size": 8},
    "stage2": {"epochs": 2, "batch_size": 4},
    "eval": {"max_new_tokens": 8, "batch_size": 8},
}
