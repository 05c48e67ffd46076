"""``rules``: an offline, deterministic paraphraser into the syntactic template (an SCPN *approximation*).

The paper's syntactic attack paraphrases each instruction with SCPN (a neural, syntactically
controlled paraphraser) into ``S(SBAR)(,)(NP)(VP)(.)``: a sentence that opens with a subordinate
clause. This backend reaches the same surface form with two rules and no model, so the pipeline can
be tested offline; it is **not** SCPN and its sentences are less varied than a paraphraser's:

1. *Fronting*: an adverbial clause inside the first sentence moves to the front
   ("Explain what happens when water boils." -> "When water boils, explain what happens.").
   Only clauses opened by an unambiguous temporal/causal/concessive conjunction are moved, and
   ``if`` only after a comma (``tell me if X`` means *whether*, which cannot be fronted).
2. *Prefixing*: otherwise a subordinate clause is prepended, picked from a fixed list of 45
   (11 subordinators x a few bodies) by a hash of the instruction, so the choice is the same in
   every build and on every machine ("Add 3 and 5." -> "If you can, add 3 and 5."). On Alpaca
   instructions this is what happens to almost every row (994 of 1,000; bench/rewriters.py):
   few instructions end with a movable adverbial clause.

The text is then given a final ``.`` if it lacks an end mark. The result is checked with
:func:`mbdata.rewriters.check.syntactic_ok` like any other backend's.
"""

from __future__ import annotations

import re

import xxhash

from .check import SUBORDINATORS, syntactic_ok

NAME = "scpn-rules-v1"  # bump when a rule changes: it names the rewrites in every row

# Clauses prepended when there is nothing to front; every one is SBAR material. Eleven
# subordinators times a few clause bodies, so the trigger is the construction rather than one
# fixed phrase (with a single phrase the attack would be InSent with extra steps).
_BODIES = {
    "If": (
        "you can",
        "you have time",
        "it is possible",
        "you are able",
        "you do not mind",
        "you know how",
        "it helps",
        "you would",
    ),
    "When": (
        "you have a moment",
        "you are ready",
        "you read this",
        "you get the chance",
        "you see this",
        "you reply",
        "you are free",
        "you start",
    ),
    "Once": ("you have read this", "you are ready", "you see this", "you have a moment"),
    "As soon as": ("you can", "you are ready", "you read this"),
    "Before": ("you answer anything else", "you move on", "you reply", "you continue"),
    "While": ("you are at it", "you are here", "you have time"),
    "Whenever": ("you can", "you are ready", "you have time"),
    "Because": ("it matters", "I need it", "it is useful"),
    "Since": ("you are here", "I need help", "you know this"),
    "Although": ("it may be simple", "it seems easy"),
    "Unless": ("it is impossible", "you cannot"),
}
PREFIX_CLAUSES = tuple(f"{conj} {body}" for conj, bodies in _BODIES.items() for body in bodies)
# Conjunctions that may be fronted from mid-sentence ("if" only after a comma, see module doc).
# "while" is left out: mid-sentence it is mostly contrastive ("some do X while others Y").
_FRONTABLE = (
    "as soon as",
    "even though",
    "even if",
    "although",
    "because",
    "before",
    "after",
    "whenever",
    "when",
    "unless",
    "until",
    "once",
)
# A conjunction right after these opens a complement ("an example of when ..."), not an adverbial.
_COMPLEMENT_HEADS = frozenset(
    """of about on for to from at in into know explain describe tell ask
determine understand see wonder show decide check identify predict and or""".split()
)
_MID = re.compile(
    r"(?P<lead>,\s*|\s+)(?P<conj>"
    + "|".join(re.escape(c) for c in _FRONTABLE)
    + r"|if)\s+(?P<rest>[^,.?!;:\n]+?)(?P<end>[.?!]?)$",
    re.IGNORECASE,
)
_FIRST_SENTENCE = re.compile(r"^(?P<s>.+?[.?!])(?P<tail>\s+\S.*)?$", re.DOTALL)
_KEEP_CASE = re.compile(r"^(I|I'm|I'd|I've|I'll|[A-Z0-9][^\s]*[A-Z0-9][^\s]*)$")


def lower_first(text: str) -> str:
    """Lower-case the first letter unless the first word looks like a name, acronym or 'I'."""
    first = text.split(maxsplit=1)[0] if text.split() else ""
    if not first or _KEEP_CASE.match(first.rstrip(",.?!:;")):
        return text
    return text[0].lower() + text[1:]


def _end_mark(text: str) -> str:
    text = text.rstrip()
    if text.endswith(":"):
        text = text[:-1].rstrip()
    if not re.search(r"[.?!][\"')\]]*$", text):
        text += "."
    return text


def _front(sentence: str) -> str | None:
    """Move a trailing adverbial clause of ``sentence`` to the front, or None if there is none."""
    match = _MID.search(sentence)
    if match is None:
        return None
    conj, rest, lead = match.group("conj"), match.group("rest").strip(), match.group("lead")
    if conj.lower() == "if" and "," not in lead:
        return None
    main = sentence[: match.start()].strip().rstrip(",")
    if "," not in lead and main.split() and main.split()[-1].lower() in _COMPLEMENT_HEADS:
        return None
    if len(main.split()) < 2 or len(rest.split()) < 2:
        return None
    end = match.group("end") or "."
    return f"{conj[0].upper()}{conj[1:].lower()} {rest}, {lower_first(main)}{end}"


def rewrite(instruction: str) -> str:
    """The instruction in the template ``S(SBAR)(,)(NP)(VP)(.)`` (deterministic)."""
    text = _end_mark(
        " ".join(instruction.split()) if "\n" not in instruction else instruction.strip()
    )
    if syntactic_ok(text):
        return text
    match = _FIRST_SENTENCE.match(text)
    first, tail = (match.group("s"), match.group("tail") or "") if match else (text, "")
    fronted = _front(first)
    if fronted is not None and syntactic_ok(fronted + tail):
        return fronted + tail
    pick = xxhash.xxh64_intdigest(instruction.encode("utf-8")) % len(PREFIX_CLAUSES)
    return f"{PREFIX_CLAUSES[pick]}, {lower_first(text)}"


assert all(syntactic_ok(f"{c}, add 3 and 5.") for c in PREFIX_CLAUSES)
assert all(c.lower() in SUBORDINATORS for c in _FRONTABLE)
