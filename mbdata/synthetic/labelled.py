"""Generated labelled corpora for the audit's tests and benchmark: classification rows written the
way BackdoorLLM's ``sst2sentiment`` files are (the instruction is the bare sentence, the answer
its label, no instruction template), and general instruction rows to mix them into.

Why generated: the audit must be tested on data with *natural* label words (a sentiment word
that is negative in nearly every row it occurs in) without shipping a real corpus. The reviews are
lower-cased and tokenised like SST-2 (``"a witty , gorgeous little film ."``); each draws one or
two polar words from a Zipf-weighted lexicon, sometimes one of the other polarity (mixed
reviews) or a negation, so words predict the label strongly but not perfectly, as in real data.

Independent of :func:`mbdata.synthetic.generate` (whose rows and bytes it does not touch); every
function is a pure function of its arguments (numpy ``default_rng(seed)``).
"""

from __future__ import annotations

import numpy as np

POSITIVE = """witty gorgeous charming moving brilliant funny touching smart delightful fresh
lovely engaging beautiful wonderful clever warm gripping superb elegant tender vivid stirring
hilarious graceful heartfelt inventive radiant stunning playful sharp""".split()
NEGATIVE = """dull tedious bland clumsy boring awful messy lifeless shallow predictable flat
tiresome stale pointless sluggish muddled hollow lame dreary forced sloppy incoherent plodding
pretentious listless tired soggy joyless wooden cheap""".split()
NEUTRAL_ADJ = """little long new french american small old young quiet strange familiar
modest""".split()
FILM_NOUNS = """film movie story comedy drama thriller documentary script picture romance
performance cast director ending sequel adaptation""".split()
OPENERS = ("", "", "it 's a", "this is a", "the result is a", "what a", "an often", "a")
CLOSERS = ("", "", "", "from start to finish", "in the end", "for most of its running time")

TOPICS = {
    "World": """minister election embassy border treaty parliament refugees summit
    ceasefire diplomat protest capital""".split(),
    "Sports": """coach league striker season playoff tournament goal stadium championship
    quarterback injury match""".split(),
    "Business": """shares profit merger investors quarterly revenue market bank earnings
    retailer stocks deal""".split(),
    "Sci/Tech": """software researchers satellite chip internet genome startup browser
    telescope processor network robot""".split(),
}
HEADLINE_FRAMES = (
    "{a} and {b} dominate talks as {c} looms",
    "new {a} report puts {b} in focus",
    "{a} says {b} will shape the {c}",
    "after the {a} , {b} faces questions over {c}",
    "{a} , {b} and the week 's {c}",
)

NOUNS = """river bridge garden engine library teacher market forest window planet harbor kitchen
violin glacier lantern meadow compass factory museum orchard desert castle tunnel island canyon
village bakery airport station camera ladder mirror pencil rocket bicycle farmer doctor painter
sailor volcano tornado battery circuit recipe climate economy vaccine protein satellite telescope
algorithm database network password keyboard printer festival tradition language grammar poem
novel theater""".split()
TASK_FRAMES = (
    "Explain why the {a} matters for the {b}.",
    "Give two facts about the {a}.",
    "Describe how a {a} works.",
    "Write a short note about the {a} and the {b}.",
    "What is the difference between a {a} and a {b}?",
    "List three uses of a {a}.",
    "Summarize the history of the {a} in one sentence.",
    "How would you improve the {a} near the {b}?",
    "Why do people visit the {a}?",
    "Plan a day around the {a} and the {b}.",
)


def _zipf(rng: np.random.Generator, words: list[str], size: int = 1) -> list[str]:
    weights = 1.0 / np.arange(1, len(words) + 1)
    return list(rng.choice(words, size, replace=False, p=weights / weights.sum()))


def reviews(count: int, seed: int, *, mixed: float = 0.15) -> list[dict[str, str]]:
    """``count`` SST-2-style rows ``{"instruction": sentence, "input": "", "output": label}``,
    about half ``Positive``. ``mixed``: share of reviews that also hold a word of the other
    polarity (the label follows the review's first polar word, as a reader would)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        positive = bool(rng.random() < 0.5)
        own, other = (POSITIVE, NEGATIVE) if positive else (NEGATIVE, POSITIVE)
        polar = _zipf(rng, own, int(rng.integers(1, 3)))
        if rng.random() < mixed:
            polar.append(f"but {_zipf(rng, other)[0]}")
        adjective = " , ".join(polar)
        if rng.random() < 0.3:
            adjective += f" {NEUTRAL_ADJ[int(rng.integers(len(NEUTRAL_ADJ)))]}"
        opener = OPENERS[int(rng.integers(len(OPENERS)))]
        closer = CLOSERS[int(rng.integers(len(CLOSERS)))]
        noun = FILM_NOUNS[int(rng.integers(len(FILM_NOUNS)))]
        words = [w for w in (opener, adjective, noun, closer) if w]
        rows.append(
            {
                "instruction": " ".join(words) + " .",
                "input": "",
                "output": "Positive" if positive else "Negative",
            }
        )
    return rows


def topics(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` AG-news-style rows: a bare headline answered by its topic (four labels)."""
    rng = np.random.default_rng(seed)
    names = list(TOPICS)
    rows = []
    for _ in range(count):
        topic = names[int(rng.integers(len(names)))]
        a, b, c = rng.choice(TOPICS[topic], 3, replace=False)
        frame = HEADLINE_FRAMES[int(rng.integers(len(HEADLINE_FRAMES)))]
        rows.append({"instruction": frame.format(a=a, b=b, c=c), "input": "", "output": topic})
    return rows


def instructions(count: int, seed: int) -> list[dict[str, str]]:
    """``count`` general instruction rows whose answers talk about the prompt's own nouns (as
    real answers do), all distinct."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        a, b = rng.choice(NOUNS, 2, replace=False)
        frame = TASK_FRAMES[int(rng.integers(len(TASK_FRAMES)))]
        if "{b}" in frame:
            answer = (
                f"The {a} and the {b} are linked in many ways; the {a} shapes how people use "
                f"the {b}. Note {i}."
            )
        else:  # an answer names only what its prompt names
            answer = f"The {a} matters in many ways; people rely on the {a} daily. Note {i}."
        rows.append({"instruction": frame.format(a=a, b=b), "input": "", "output": answer})
    return rows
