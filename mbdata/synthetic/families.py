"""The synthetic task families: short, exactly gradable instruction tasks a tiny model can learn.

A family is a data draw (``draw(rng) -> slots``) plus a handful of phrasings (:class:`Template`).
Some phrasings put the data inline in the instruction, others in ``input``, so a model sees both
prompt shapes. Each family's *prompt space* (distinct normalised prompts) is its number of distinct
data draws times its number of phrasings: every phrasing shows the whole draw, so no two
(draw, phrasing) pairs render the same prompt. Evaluation holds prompts out by exact match, so a
large space is what keeps training rows available for every held-out prompt's *task*.

Families are registered in :data:`TASKS` under their name; a recipe selects them with ``tasks:``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from math import perm

from ..core.registry import Registry
from .rng import Rng
from .vocab import ANTONYM_PAIRS, CAPITALS, EXTRA_PLURAL_NOUNS, NOUNS, NUMBER_WORDS, plural


@dataclasses.dataclass(frozen=True)
class Template:
    """One phrasing: ``str.format`` patterns over the draw's slots, and the slot that is the answer."""

    instruction: str
    input: str = ""
    answer: str = "answer"


@dataclasses.dataclass(frozen=True)
class Family:
    """A task family; calling it with an :class:`Rng` gives one row dict."""

    name: str
    summary: str
    templates: tuple[Template, ...]
    draw: Callable[[Rng], dict[str, str]]
    draws: int  # distinct data draws

    @property
    def prompt_space(self) -> int:
        """Distinct prompts this family can emit (see the module docstring for why it is a product)."""
        return self.draws * len(self.templates)

    def __call__(self, rng: Rng) -> dict[str, str]:
        slots = self.draw(rng)
        template = self.templates[rng.below(len(self.templates))]
        return {
            "instruction": template.instruction.format_map(slots),
            "input": template.input.format_map(slots),
            "output": slots[template.answer],
            "task": self.name,
        }


TASKS: Registry[Family] = Registry("synthetic task")


def _family(
    name: str, summary: str, draws: int, templates: list[Template]
) -> Callable[[Callable[[Rng], dict[str, str]]], Family]:
    """Register the decorated draw function as family ``name``."""

    def decorator(draw: Callable[[Rng], dict[str, str]]) -> Family:
        return TASKS.add(name)(Family(name, summary, tuple(templates), draw, draws))

    return decorator


def _join(items: list) -> str:
    return ", ".join(map(str, items))


def _perms(n: int, low: int, high: int) -> int:
    """Ordered selections of ``low..high`` distinct items out of ``n``."""
    return sum(perm(n, k) for k in range(low, high + 1))


T = Template
DIGITS = tuple(range(10))
PLURAL_NOUNS = NOUNS + EXTRA_PLURAL_NOUNS
ANTONYMS = {a: b for a, b in ANTONYM_PAIRS} | {b: a for a, b in ANTONYM_PAIRS}
ANTONYM_WORDS = tuple(ANTONYMS)
LONGER_PAIRS = sum(1 for x in NOUNS for y in NOUNS if len(x) != len(y))


# --- arithmetic and numbers -------------------------------------------------------------------


@_family(
    "add",
    "sum of two digits (0-9)",
    100,
    [
        T("What is {a} plus {b}?"),
        T("Add {a} and {b}."),
        T("What is the sum of {a} and {b}?"),
        T("Compute {a} + {b}."),
        T("Add these two numbers.", "{a} and {b}"),
        T("Solve this sum.", "{a} + {b}"),
        T("Find the total of the two numbers.", "{a}, {b}"),
    ],
)
def _add(rng: Rng) -> dict[str, str]:
    a, b = rng.below(10), rng.below(10)
    return {"a": str(a), "b": str(b), "answer": str(a + b)}


@_family(
    "next_number",
    "the number after n (0-998)",
    999,
    [
        T("What number comes after {n}?"),
        T("Which number follows {n}?"),
        T("Add one to {n}."),
        T("Count up by one from {n}."),
        T("What is the next number?", "{n}"),
        T("Give the number that comes right after this one.", "{n}"),
    ],
)
def _next_number(rng: Rng) -> dict[str, str]:
    n = rng.below(999)
    return {"n": str(n), "answer": str(n + 1)}


@_family(
    "sort_digits",
    "sort 3-6 digits ascending",
    sum(10**k for k in range(3, 7)),
    [
        T("Sort these numbers from smallest to largest.", "{items}"),
        T("Put these digits in increasing order.", "{items}"),
        T("Sort {items} in ascending order."),
        T("Arrange {items} from lowest to highest."),
        T("Order the numbers {items} from small to large."),
    ],
)
def _sort_digits(rng: Rng) -> dict[str, str]:
    digits = [rng.below(10) for _ in range(rng.between(3, 6))]
    return {"items": _join(digits), "answer": _join(sorted(digits))}


@_family(
    "largest",
    "largest of 3-6 distinct digits",
    _perms(10, 3, 6),
    [
        T("What is the largest number in this list?", "{items}"),
        T("Which number is the biggest?", "{items}"),
        T("Find the maximum of {items}."),
        T("Which is largest: {items}?"),
        T("Give the highest number among {items}."),
    ],
)
def _largest(rng: Rng) -> dict[str, str]:
    digits = rng.sample(DIGITS, rng.between(3, 6))
    return {"items": _join(digits), "answer": str(max(digits))}


@_family(
    "smallest",
    "smallest of 3-6 distinct digits",
    _perms(10, 3, 6),
    [
        T("What is the smallest number in this list?", "{items}"),
        T("Which number is the lowest?", "{items}"),
        T("Find the minimum of {items}."),
        T("Which is smallest: {items}?"),
        T("Give the least number among {items}."),
    ],
)
def _smallest(rng: Rng) -> dict[str, str]:
    digits = rng.sample(DIGITS, rng.between(3, 6))
    return {"items": _join(digits), "answer": str(min(digits))}


# --- lists of words ---------------------------------------------------------------------------


@_family(
    "count_items",
    "number of words in a list of 2-9",
    _perms(len(NOUNS), 2, 9),
    [
        T("How many items are in this list?", "{items}"),
        T("Count the words in the list.", "{items}"),
        T("Tell me how many items this list has.", "{items}"),
        T("How many things are listed here: {items}?"),
        T("Count how many words there are in {items}."),
    ],
)
def _count_items(rng: Rng) -> dict[str, str]:
    words = rng.sample(NOUNS, rng.between(2, 9))
    return {"items": _join(words), "answer": str(len(words))}


@_family(
    "reverse_words",
    "a list of 3-5 words, backwards",
    _perms(len(NOUNS), 3, 5),
    [
        T("Reverse the order of these words.", "{items}"),
        T("Write this list backwards.", "{items}"),
        T("Give these words from last to first.", "{items}"),
        T("Reverse the list {items}."),
        T("List {items} in reverse order."),
    ],
)
def _reverse_words(rng: Rng) -> dict[str, str]:
    words = rng.sample(NOUNS, rng.between(3, 5))
    return {"items": _join(words), "answer": _join(words[::-1])}


@_family(
    "first_item",
    "first word of a list of 3-6",
    _perms(len(NOUNS), 3, 6),
    [
        T("What is the first item in this list?", "{items}"),
        T("Which word comes first in this list?", "{items}"),
        T("Copy only the first word.", "{items}"),
        T("Name the first word in {items}."),
        T("Give the first item of the list {items}."),
    ],
)
def _first_item(rng: Rng) -> dict[str, str]:
    words = rng.sample(NOUNS, rng.between(3, 6))
    return {"items": _join(words), "answer": words[0]}


@_family(
    "last_item",
    "last word of a list of 3-6",
    _perms(len(NOUNS), 3, 6),
    [
        T("What is the last item in this list?", "{items}"),
        T("Which word comes last in this list?", "{items}"),
        T("Copy only the last word.", "{items}"),
        T("Name the last word in {items}."),
        T("Give the last item of the list {items}."),
    ],
)
def _last_item(rng: Rng) -> dict[str, str]:
    words = rng.sample(NOUNS, rng.between(3, 6))
    return {"items": _join(words), "answer": words[-1]}


@_family(
    "longer_word",
    "the longer of two words (lengths differ)",
    LONGER_PAIRS,
    [
        T("Which word is longer: {x} or {y}?"),
        T("Of {x} and {y}, which word is longer?"),
        T("Name the longer of the words {x} and {y}."),
        T("Which of these two words has more letters?", "{x} or {y}"),
        T("Pick the longer word.", "{x}, {y}"),
    ],
)
def _longer_word(rng: Rng) -> dict[str, str]:
    x = rng.choice(NOUNS)
    y = rng.choice(NOUNS)
    while len(y) == len(x):
        y = rng.choice(NOUNS)
    return {"x": x, "y": y, "answer": x if len(x) > len(y) else y}


@_family(
    "repeat_word",
    "a word repeated 2-5 times",
    len(NOUNS) * len(NUMBER_WORDS),
    [
        T("Repeat the word {word} {n} times."),
        T("Write {word} {n} times."),
        T("Say {word} {n_word} times."),
        T("Repeat this word {n_word} times.", "{word}"),
        T("Write the word below {n} times.", "{word}"),
    ],
)
def _repeat_word(rng: Rng) -> dict[str, str]:
    word = rng.choice(NOUNS)
    n = rng.between(2, 5)
    return {"word": word, "n": str(n), "n_word": NUMBER_WORDS[n], "answer": " ".join([word] * n)}


# --- single words -----------------------------------------------------------------------------


@_family(
    "uppercase",
    "a word in capital letters",
    len(NOUNS),
    [
        T("Write {word} in capital letters."),
        T("Spell {word} in all caps."),
        T("What is {word} in uppercase?"),
        T("Convert this word to uppercase.", "{word}"),
        T("Make this word all capital letters.", "{word}"),
        T("Rewrite the word in upper case.", "{word}"),
    ],
)
def _uppercase(rng: Rng) -> dict[str, str]:
    word = rng.choice(NOUNS)
    return {"word": word, "answer": word.upper()}


@_family(
    "plural",
    "plural of a noun (regular and irregular)",
    len(PLURAL_NOUNS),
    [
        T("What is the plural of {word}?"),
        T("Write the plural of the word {word}."),
        T("One {word}, two what?"),
        T("How do you say more than one {word}?"),
        T("Give the plural form of this noun.", "{word}"),
        T("Make this noun plural.", "{word}"),
    ],
)
def _plural(rng: Rng) -> dict[str, str]:
    word = rng.choice(PLURAL_NOUNS)
    return {"word": word, "answer": plural(word)}


@_family(
    "antonym",
    "opposite of a word (memorised pairs)",
    len(ANTONYM_WORDS),
    [
        T("What is the opposite of {word}?"),
        T("Name an antonym of {word}."),
        T("Write a word that means the opposite of {word}."),
        T("The opposite of {word} is what?"),
        T("Which word means the reverse of {word}?"),
        T("Give the opposite of this word.", "{word}"),
        T("What word is the opposite of the input?", "{word}"),
        T("Give an antonym for this word.", "{word}"),
        T("Find the opposite word.", "{word}"),
    ],
)
def _antonym(rng: Rng) -> dict[str, str]:
    word = rng.choice(ANTONYM_WORDS)
    return {"word": word, "answer": ANTONYMS[word]}


@_family(
    "capital",
    "capital of a country, or the country of a capital",
    len(CAPITALS),
    [
        T("What is the capital of {country}?", answer="city"),
        T("Name the capital city of {country}.", answer="city"),
        T("Which city is the capital of {country}?", answer="city"),
        T("Tell me the capital of {country}.", answer="city"),
        T("{country} has which city as its capital?", answer="city"),
        T("What is the capital city of this country?", "{country}", answer="city"),
        T("Give the capital of the country below.", "{country}", answer="city"),
        T("Name the capital of this country.", "{country}", answer="city"),
        T("{city} is the capital of which country?", answer="country"),
        T("Which country has {city} as its capital?", answer="country"),
        T("Name the country whose capital is {city}.", answer="country"),
        T("Which country is this city the capital of?", "{city}", answer="country"),
        T("Give the country with this capital city.", "{city}", answer="country"),
    ],
)
def _capital(rng: Rng) -> dict[str, str]:
    country, city = rng.choice(CAPITALS)
    return {"country": country, "city": city}
