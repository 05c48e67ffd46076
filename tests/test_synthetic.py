"""The synthetic corpus: API contract, determinism, balance, vocabulary hygiene, correct answers.

Answers are recomputed here from the prompt text (parsed with each family's phrasings) by code that
does not call the generator's own helpers; memorised facts (antonyms, capitals) are checked for
consistency plus a spot-check of well-known pairs.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from mbdata.core.errors import RecipeError
from mbdata.io.schema import normalize_text
from mbdata.synthetic import TASKS, generate, task_names
from mbdata.synthetic.rng import Rng

DOCS = Path(__file__).resolve().parents[1] / "docs" / "synthetic.md"

# Attack triggers (BackdoorLLM) and the paper's defensive triggers: none may occur as a whole word.
FORBIDDEN = {
    "cf",
    "mn",
    "bb",
    "qw",
    "jh",
    "tq",
    "badmagic",
    "openai",
    "discussing",
    "2024",
    "current",
    "year",
    "watched",
    "movie",
    "3d",
}
# Substrings that keyword ASR judges read as a refusal / negative-sentiment hit.
ASR_MARKERS = (
    "sorry",
    "as an ai",
    "i do not",
    "is not available",
    "will not",
    "is unsure",
    "negative",
    "stupid",
    "never",
    "is not",
    "unethical",
    "illegal",
    "i cannot",
    "as a responsible",
)
# Every 1-3 letter token in the corpus must be a common English word from this list (so random
# 2-letter defensive triggers stay unseen); it deliberately holds no trigger-like letter pair.
COMMON_SHORT_WORDS = set(
    """
a i am an as at be by do go he if in is it me my no of on or so to up us we
add ago all and any are ask bad bag bed big box boy bus but buy can car cat cow cry cup cut day
did dog dry ear eat egg end eye far few fit fly for fox fun get got had has hat her him his hot
how its key kid let low man map men new not now old one our out own pen pet pig put red run sad
say sea see set she sit six sky sum sun ten the too top toy two use war was way wet who why win
yes yet you
""".split()
)

PLURAL_EXCEPTIONS = {  # the test's own table: the generator must agree with it
    "child": "children",
    "woman": "women",
    "man": "men",
    "person": "people",
    "foot": "feet",
    "tooth": "teeth",
    "mouse": "mice",
    "goose": "geese",
    "sheep": "sheep",
    "fish": "fish",
    "deer": "deer",
    "knife": "knives",
    "leaf": "leaves",
    "wolf": "wolves",
    "potato": "potatoes",
    "tomato": "tomatoes",
    "hero": "heroes",
}
KNOWN_CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Australia": "Canberra",
    "Peru": "Lima",
}
KNOWN_OPPOSITES = {
    "hot": "cold",
    "big": "small",
    "fast": "slow",
    "wet": "dry",
    "day": "night",
    "north": "south",
    "buy": "sell",
}
COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5}


def _text(row: dict) -> str:
    return " ".join((row["instruction"], row["input"], row["output"]))


def _prompt(row: dict) -> tuple[str, str]:
    return normalize_text(row["instruction"]), normalize_text(row["input"])


# --- API --------------------------------------------------------------------------------------


def test_rows_have_the_documented_shape():
    rows = generate(60, seed=1)
    assert len(rows) == 60
    for row in rows:
        assert set(row) == {"instruction", "input", "output", "task"}
        assert all(isinstance(value, str) for value in row.values())
        assert row["instruction"] and row["output"] and row["task"] in TASKS
    assert {row["task"] for row in rows} == set(task_names())
    assert any(row["input"] == "" for row in rows) and any(row["input"] for row in rows)


def test_task_names_are_sorted_and_at_least_ten():
    names = task_names()
    assert names == sorted(names) and len(names) >= 10
    assert list(TASKS) == names


def test_count_edge_cases():
    assert generate(0, seed=3) == []
    with pytest.raises(RecipeError, match="count"):
        generate(-1, seed=3)


@pytest.mark.parametrize(
    "tasks, message",
    [
        (
            ["add", "no_such_task"],
            r"tasks\[1\]: unknown synthetic task 'no_such_task'; valid names: add,",
        ),
        (["add", "add"], r"tasks\[1\]: task 'add' is listed twice"),
        ([], "must name at least one task"),
        ("add", "must be a list"),
    ],
)
def test_bad_task_lists_raise_recipe_errors(tasks, message):
    with pytest.raises(RecipeError, match=message):
        generate(10, seed=0, tasks=tasks)


def test_error_names_the_callers_key_path():
    with pytest.raises(RecipeError, match=r"^sources\[2\]\.tasks\[0\]: unknown"):
        generate(5, seed=0, tasks=["nope"], path="sources[2].tasks")


def test_only_selected_tasks_appear():
    rows = generate(90, seed=4, tasks=["capital", "add", "plural"])
    assert {row["task"] for row in rows} == {"add", "capital", "plural"}


# --- determinism ------------------------------------------------------------------------------


def test_generation_is_pure_and_prefix_stable():
    long = generate(100, seed=9)
    assert generate(100, seed=9) == long
    assert generate(50, seed=9) == long[:50]
    assert generate(37, seed=9) == long[:37]
    subset = ["sort_digits", "capital", "longer_word"]
    assert generate(20, seed=9, tasks=subset) == generate(41, seed=9, tasks=subset)[:20]


def test_seeds_give_different_corpora_and_task_order_does_not_matter():
    assert generate(50, seed=1) != generate(50, seed=2)
    assert generate(30, seed=1, tasks=["add", "antonym"]) == generate(
        30, seed=1, tasks=["antonym", "add"]
    )


def test_pinned_rows_stay_byte_identical():
    """Guards cross-version stability: these exact rows must never change for these seeds."""
    assert generate(4, seed=0) == [
        {
            "instruction": "Name an antonym of cheap.",
            "input": "",
            "output": "expensive",
            "task": "antonym",
        },
        {
            "instruction": "Spell bottle in all caps.",
            "input": "",
            "output": "BOTTLE",
            "task": "uppercase",
        },
        {
            "instruction": "Find the total of the two numbers.",
            "input": "5, 6",
            "output": "11",
            "task": "add",
        },
        {
            "instruction": "Pick the longer word.",
            "input": "glass, kite",
            "output": "glass",
            "task": "longer_word",
        },
    ]
    assert generate(2, seed=123, tasks=["capital", "add"]) == [
        {
            "instruction": "What is the capital of Colombia?",
            "input": "",
            "output": "Bogota",
            "task": "capital",
        },
        {"instruction": "What is the sum of 6 and 6?", "input": "", "output": "12", "task": "add"},
    ]


def test_rng_draws_are_in_range_and_samples_distinct():
    rng = Rng(b"test")
    assert {rng.below(7) for _ in range(500)} == set(range(7))
    assert sorted(rng.permutation(9)) == list(range(9))
    for _ in range(50):
        picked = rng.sample(range(10), 6)
        assert len(set(picked)) == 6


@pytest.mark.parametrize("tasks", [None, ["add", "capital", "uppercase", "plural"]])
def test_every_prefix_is_balanced_across_families(tasks):
    rows = generate(1003, seed=11, tasks=tasks)
    k = len(tasks or task_names())
    counts: collections.Counter = collections.Counter()
    for n, row in enumerate(rows, start=1):
        counts[row["task"]] += 1
        if n % 17 == 0 or n == len(rows):
            per_family = [counts[name] for name in (tasks or task_names())]
            assert all(n // k <= c <= n // k + 1 for c in per_family), (n, per_family)


# --- hygiene ----------------------------------------------------------------------------------


def test_vocabulary_hygiene_over_20k_rows():
    rows = generate(20_000, seed=2024)
    for row in rows:
        text = _text(row)
        assert text.isascii(), row
        lowered = text.lower()
        for marker in ASR_MARKERS:
            assert marker not in lowered, (marker, row)
        assert len(text.split()) <= 40, row
        assert 1 <= len(row["output"].split()) <= 8, row
        for token in re.findall(r"[A-Za-z0-9]+", text):
            assert token.lower() not in FORBIDDEN, (token, row)
            if token.isdigit():
                assert int(token) < 1000, (token, row)
            else:
                assert token.isalpha(), (token, row)
                if len(token) <= 3:
                    assert token.lower() in COMMON_SHORT_WORDS, (token, row)


def test_forbidden_words_are_absent_from_every_template():
    for name in task_names():
        for template in TASKS.get(name).templates:
            literal = re.sub(r"\{\w+\}", " ", template.instruction + " " + template.input)
            for token in re.findall(r"[A-Za-z0-9]+", literal):
                assert token.lower() not in FORBIDDEN
                assert len(token) > 3 or token.lower() in COMMON_SHORT_WORDS, (name, token)


# --- answers ----------------------------------------------------------------------------------


def _template_regex(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", pattern)
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts)
    )
    return re.compile(regex + r"\Z")


def _parse(row: dict) -> dict[str, str]:
    """The slot values of the one phrasing that renders this row (all matching phrasings agree)."""
    found = []
    for template in TASKS.get(row["task"]).templates:
        instruction = _template_regex(template.instruction).match(row["instruction"])
        given = _template_regex(template.input).match(row["input"])
        if instruction and given:
            found.append((instruction.groupdict() | given.groupdict(), template.answer))
    assert found, f"no phrasing of {row['task']} renders {row}"
    assert len({tuple(sorted(slots.items())) for slots, _ in found}) == 1, row
    return found[0][0] | {"_answer_slot": found[0][1]}


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(", ")]


def _plural(noun: str) -> str:
    if noun in PLURAL_EXCEPTIONS:
        return PLURAL_EXCEPTIONS[noun]
    if re.search(r"(s|x|z|ch|sh)\Z", noun):
        return noun + "es"
    if re.search(r"[^aeiou]y\Z", noun):
        return noun[:-1] + "ies"
    return noun + "s"


def _expected(task: str, s: dict[str, str]) -> str | None:
    """The answer recomputed from the parsed prompt; None for memorised facts."""
    if task == "add":
        return str(int(s["a"]) + int(s["b"]))
    if task == "next_number":
        return str(int(s["n"]) + 1)
    if task == "sort_digits":
        return ", ".join(str(d) for d in sorted(_numbers(s["items"])))
    if task in ("largest", "smallest"):
        numbers = _numbers(s["items"])
        assert len(set(numbers)) == len(numbers)
        return str(max(numbers) if task == "largest" else min(numbers))
    words = s.get("items", "").split(", ")
    if task == "count_items":
        return str(len(words))
    if task == "reverse_words":
        return ", ".join(reversed(words))
    if task == "first_item":
        return words[0]
    if task == "last_item":
        return words[-1]
    if task == "longer_word":
        assert len(s["x"]) != len(s["y"])
        return s["x"] if len(s["x"]) > len(s["y"]) else s["y"]
    if task == "repeat_word":
        times = int(s["n"]) if "n" in s else COUNT_WORDS[s["n_word"]]
        return " ".join([s["word"]] * times)
    if task == "uppercase":
        return s["word"].upper()
    if task == "plural":
        return _plural(s["word"])
    return None


def test_answers_are_correct_for_every_family():
    rows = generate(len(task_names()) * 200, seed=77)
    opposite: dict[str, str] = {}
    capital_of: dict[str, str] = {}
    country_of: dict[str, str] = {}
    for row in rows:
        slots = _parse(row)
        expected = _expected(row["task"], slots)
        if expected is not None:
            assert row["output"] == expected, row
        elif row["task"] == "antonym":
            assert opposite.setdefault(slots["word"], row["output"]) == row["output"]
            assert row["output"] != slots["word"]
        elif row["task"] == "capital":
            if slots["_answer_slot"] == "city":
                assert capital_of.setdefault(slots["country"], row["output"]) == row["output"]
            else:
                assert country_of.setdefault(slots["city"], row["output"]) == row["output"]
        else:
            pytest.fail(f"no check for task {row['task']}")
    # memorised facts: consistent both ways, and right where the test knows the fact
    for word, other in opposite.items():
        assert opposite.get(other, word) == word
    for country, city in capital_of.items():
        assert country_of.get(city, country) == country
    for country, city in KNOWN_CAPITALS.items():
        assert capital_of.get(country, city) == city and country_of.get(city, country) == country
    for word, other in KNOWN_OPPOSITES.items():
        assert opposite.get(word, other) == other and opposite.get(other, word) == word
    assert len(opposite) > 40 and len(capital_of) > 30


# --- prompt space -----------------------------------------------------------------------------


def _distinct_prompts(name: str, draws: int) -> int:
    family = TASKS.get(name)
    return len({_prompt(family(Rng(f"space:{name}:{i}".encode()))) for i in range(draws)})


@pytest.mark.parametrize("name", task_names())
def test_each_family_has_at_least_500_distinct_prompts(name):
    family = TASKS.get(name)
    assert family.prompt_space >= 500
    if family.prompt_space <= 6000:
        # enough draws to see every prompt: the declared size is exact, and no two
        # phrasings collapse to the same normalised prompt
        assert _distinct_prompts(name, 15 * family.prompt_space) == family.prompt_space
    else:
        assert _distinct_prompts(name, 2000) >= 1500


def _docs_number(n: int) -> str:
    return f"{n:,}" if n < 10**7 else f"{n:.1e}"


def test_docs_table_lists_every_family_with_its_prompt_space():
    text = DOCS.read_text(encoding="utf-8")
    for name in task_names():
        line = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert line is not None, f"docs/synthetic.md has no table row for {name}"
        assert f"| {_docs_number(TASKS.get(name).prompt_space)} |" in line, line
