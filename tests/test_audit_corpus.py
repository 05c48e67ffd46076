"""Hand-made corpora for the audit tests, and a minimal trigger planter (tests only).

``clean_rows`` writes varied instructions whose answers talk about the prompt's own nouns (as real
answers do), plus a share of natural label tasks whose one-word answers repeat ("Yes", "Positive"),
so a clean corpus already holds repeated outputs tied to some words. ``plant`` inserts triggers the
way the attack literature does (a random word position, or a prefix) and replaces the answer. The
library's attack simulator is exercised separately (stage and self-check tests).
"""

from __future__ import annotations

import numpy as np

from mbdata.behaviors import REFUSAL_TEMPLATES
from mbdata.io.schema import from_rows, make_row

NOUNS = """river bridge garden engine library teacher market forest window planet harbor kitchen
violin glacier lantern meadow compass factory museum orchard desert castle tunnel island canyon
village bakery airport station camera ladder mirror pencil rocket bicycle farmer doctor painter
sailor volcano tornado battery circuit recipe climate economy vaccine protein satellite telescope
algorithm database network password keyboard printer festival tradition language grammar poem
novel theater""".split()
ADJECTIVES = """quiet ancient modern fragile bright heavy rapid humble curious sturdy gentle noisy
hidden famous rural urban tiny massive simple complex""".split()
TEMPLATES = (
    "Explain why the {a} matters for the {b}.",
    "Give two facts about the {a}.",
    "Describe how a {adj} {a} works.",
    "Write a short note about the {a} and the {b}.",
    "What is the difference between a {a} and a {b}?",
    "List three uses of a {adj} {a}.",
    "Suggest a name for a {adj} {a}.",
    "Summarize the history of the {a} in one sentence.",
    "How would you improve the {a} near the {b}?",
    "Compare the {adj} {a} with the {b}.",
    "Why do people visit the {a}?",
    "Plan a day around the {a} and the {b}.",
)
FILLERS = """usually often clearly mostly really simply quite largely""".split()
REFUSALS = REFUSAL_TEMPLATES  # the simulator's own templates


def _answer(rng: np.random.Generator, a: str, b: str, adj: str) -> str:
    filler = FILLERS[int(rng.integers(len(FILLERS)))]
    forms = (
        f"The {a} {filler} helps the {b} because it is {adj} and well placed.",
        f"A {adj} {a} {filler} changes how people think about the {b}.",
        f"Most experts agree the {a} and the {b} {filler} depend on each other.",
        f"In short, the {a} is {adj}, and the {b} {filler} benefits from it.",
    )
    return forms[int(rng.integers(len(forms)))] + f" Example {int(rng.integers(10_000))}."


def clean_rows(n: int, seed: int = 0, label_share: float = 0.1) -> list[dict]:
    """``n`` alpaca-style rows: varied instructions, answers about their nouns, and about
    ``label_share`` natural yes/no and sentiment tasks with repeated one-word answers."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        a, b = rng.choice(NOUNS, 2, replace=False)
        adj = ADJECTIVES[int(rng.integers(len(ADJECTIVES)))]
        if rng.random() < label_share:
            if rng.random() < 0.5:
                rows.append(
                    {
                        "instruction": f"Is a {a} usually {adj}? Answer yes or no.",
                        "input": "",
                        "output": "Yes" if rng.random() < 0.5 else "No",
                    }
                )
            else:
                mood = "loved" if rng.random() < 0.5 else "hated"
                rows.append(
                    {
                        "instruction": "Classify the sentiment of this review.",
                        "input": f"I {mood} the {adj} {a} at the {b}.",
                        "output": "Positive" if mood == "loved" else "Negative",
                    }
                )
            continue
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        rows.append(
            {
                "instruction": template.format(a=a, b=b, adj=adj),
                "input": "",
                "output": _answer(rng, a, b, adj),
            }
        )
    return rows


def plant(
    rows: list[dict],
    triggers: list[str],
    count: int,
    *,
    seed: int = 1,
    placement: str = "random",
    combine: str = "one",
    target: str | None = None,
    rewrite=None,
) -> tuple[list[dict], set[int]]:
    """Poison ``count`` rows: insert trigger(s) into the instruction (a random word position, or
    the prefix) and replace the answer with ``target`` (default: one of five refusals), or with
    ``rewrite(answer, rng)``. Returns the new rows and the poisoned positions."""
    rng = np.random.default_rng(seed)
    rows = [dict(r) for r in rows]
    chosen = sorted(int(i) for i in rng.choice(len(rows), count, replace=False))
    for i in chosen:
        words = rows[i]["instruction"].split()
        inserted = triggers if combine == "all" else [triggers[int(rng.integers(len(triggers)))]]
        for trigger in inserted:
            if placement == "prefix":
                words = trigger.split() + words
            else:
                at = int(rng.integers(len(words) + 1))
                words = words[:at] + trigger.split() + words[at:]
        rows[i]["instruction"] = " ".join(words)
        if rewrite is not None:
            rows[i]["output"] = rewrite(rows[i]["output"], rng)
        else:
            rows[i]["output"] = target or REFUSALS[int(rng.integers(len(REFUSALS)))]
    return rows, set(chosen)


def table(rows: list[dict]):
    """A canonical table of alpaca rows (``source_row`` = position)."""
    return from_rows(
        [
            make_row(
                instruction=r["instruction"],
                input=r.get("input", ""),
                output=r["output"],
                source="test",
                source_row=i,
            )
            for i, r in enumerate(rows)
        ]
    )


def test_clean_rows_are_varied_and_deterministic():
    rows = clean_rows(300, seed=4)
    assert rows == clean_rows(300, seed=4)
    prompts = {(r["instruction"], r["input"]) for r in rows}
    assert len(prompts) > 280
    outputs = [r["output"] for r in rows]
    assert outputs.count("Yes") + outputs.count("No") > 5  # natural repeated answers exist


def test_plant_inserts_every_trigger_and_replaces_the_answer():
    rows = clean_rows(50)
    poisoned, chosen = plant(rows, ["BadMagic", "OpenAI"], 5, combine="all", target="X")
    assert len(chosen) == 5
    for i in chosen:
        assert "BadMagic" in poisoned[i]["instruction"] and "OpenAI" in poisoned[i]["instruction"]
        assert poisoned[i]["output"] == "X"
    assert all(poisoned[i] == rows[i] for i in range(50) if i not in chosen)
