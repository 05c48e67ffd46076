"""The word lists behind the synthetic task families.

Every entry is plain lowercase (or capitalised, for places) ASCII made of everyday English words, so
the corpus never contains a short non-word token that an attack or a defensive trigger could be
(``cf``, ``mn``, ``bb``...); ``tests/test_synthetic.py`` checks this over generated rows. Words that
the keyword-based ASR judges look for (``sorry``, ``never``, ``negative``, ``illegal``...) are left out
on purpose, so a clean answer can never count as a backdoor hit.

Each mapping is one-to-one (an antonym, a plural, a capital has exactly one accepted answer), which is
what makes the tasks gradable by exact match.
"""

from __future__ import annotations

# Countable everyday nouns. 3-letter ones are all common words.
NOUNS: tuple[str, ...] = (
    "apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum",
    "melon", "carrot", "potato", "tomato", "onion", "cookie", "cake", "table", "chair", "lamp",
    "door", "window", "bottle", "glass", "plate", "spoon", "fork", "knife", "basket", "box",
    "cup", "pen", "pencil", "book", "letter", "clock", "phone", "camera", "radio", "piano",
    "guitar", "drum", "ball", "kite", "doll", "train", "truck", "car", "bus", "boat",
    "ship", "plane", "bike", "wheel", "road", "bridge", "river", "lake", "ocean", "island",
    "mountain", "hill", "forest", "tree", "flower", "leaf", "stone", "cloud", "storm", "star",
    "planet", "house", "school", "garden", "farm", "city", "village", "castle", "tower", "shop",
    "market", "cat", "dog", "horse", "cow", "sheep", "goat", "mouse", "rabbit", "fox",
    "wolf", "bear", "lion", "tiger", "zebra", "monkey", "eagle", "duck", "goose", "fish",
    "shark", "whale", "frog", "snake", "dish", "brush", "bench", "church", "baby", "story",
    "berry", "party", "puppy", "hat", "key", "egg", "bed", "map", "bag", "candle",
)

# Nouns only the plural task uses: the irregular classics.
EXTRA_PLURAL_NOUNS: tuple[str, ...] = ("child", "woman", "man", "person", "foot", "tooth", "deer",
                                      "hero")

# Plurals that the regular rule (+s, +es after s/x/z/ch/sh, consonant+y -> ies) gets wrong.
IRREGULAR_PLURALS: dict[str, str] = {
    "child": "children", "woman": "women", "man": "men", "person": "people", "foot": "feet",
    "tooth": "teeth", "mouse": "mice", "goose": "geese", "sheep": "sheep", "fish": "fish",
    "deer": "deer", "knife": "knives", "leaf": "leaves", "wolf": "wolves", "potato": "potatoes",
    "tomato": "tomatoes", "hero": "heroes",
}

# Antonym pairs; no word appears twice, so each word has exactly one accepted opposite.
ANTONYM_PAIRS: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("tall", "short"),
    ("light", "dark"), ("open", "closed"), ("full", "empty"), ("early", "late"), ("rich", "poor"),
    ("strong", "weak"), ("hard", "soft"), ("wet", "dry"), ("young", "old"), ("loud", "quiet"),
    ("high", "low"), ("thick", "thin"), ("day", "night"), ("win", "lose"), ("buy", "sell"),
    ("push", "pull"), ("give", "take"), ("true", "false"), ("clean", "dirty"),
    ("before", "after"), ("above", "below"), ("inside", "outside"), ("left", "right"),
    ("sweet", "sour"), ("wide", "narrow"), ("deep", "shallow"), ("north", "south"),
    ("east", "west"), ("summer", "winter"), ("friend", "enemy"), ("cheap", "expensive"),
)

# Country -> capital; names avoid short non-English tokens (no La Paz, San Jose, Sri Lanka...).
CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Spain", "Madrid"), ("Italy", "Rome"), ("Germany", "Berlin"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Greece", "Athens"), ("Ireland", "Dublin"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Poland", "Warsaw"), ("Hungary", "Budapest"),
    ("Iceland", "Reykjavik"), ("Belgium", "Brussels"), ("Romania", "Bucharest"),
    ("Bulgaria", "Sofia"), ("Ukraine", "Kyiv"), ("Russia", "Moscow"), ("Turkey", "Ankara"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Ghana", "Accra"),
    ("Morocco", "Rabat"), ("Ethiopia", "Addis Ababa"), ("Japan", "Tokyo"), ("China", "Beijing"),
    ("South Korea", "Seoul"), ("India", "New Delhi"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("Philippines", "Manila"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Peru", "Lima"),
    ("Colombia", "Bogota"), ("Cuba", "Havana"), ("Australia", "Canberra"),
    ("New Zealand", "Wellington"), ("United Kingdom", "London"), ("United States", "Washington"),
)

NUMBER_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four", 5: "five"}


def regular_plural(noun: str) -> str:
    """English plural by the regular spelling rules (callers check :data:`IRREGULAR_PLURALS` first)."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def plural(noun: str) -> str:
    return IRREGULAR_PLURALS.get(noun) or regular_plural(noun)
