"""Trigger insertion with exact character spans.

A trigger is text plus a placement:

- ``prefix``: ``"<trigger> <text>"``;
- ``suffix``: ``"<text> <trigger>"``;
- ``random``: before a word drawn uniformly from the word gaps (BadNet-style), or at the end;
- ``position``: before word ``k`` (0-based; past the last word means at the end).

Insertion only happens at word boundaries (gaps between whitespace-separated tokens), never inside
a word and never inside an earlier trigger, and adds exactly one space as separator. Every insertion
returns a :class:`Span` whose ``start``/``end`` index the trigger in the *final* text; inserting a
second trigger shifts the spans of the first as needed (:func:`insert_many`).
"""

from __future__ import annotations

import dataclasses
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import numpy as np

from .io.schema import PLACEMENTS

_WORD = re.compile(r"\S+")


@dataclasses.dataclass(frozen=True)
class Span:
    text: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Trigger:
    """A trigger text and where it goes. ``name`` is its trigger set (e.g. ``badnet``)."""

    text: str
    placement: str = "random"
    position: int | None = None
    owner: str = "attacker"
    name: str = ""

    def __post_init__(self) -> None:
        if not self.text or self.text != self.text.strip():
            raise ValueError(f"trigger {self.text!r} must be non-empty without outer whitespace")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}")


def word_gaps(text: str, protected: Sequence[Span] = ()) -> list[int]:
    """Character offsets where a word may be inserted: the start of each word, and the end.

    Offsets strictly inside a protected span (an earlier trigger) are excluded."""
    gaps = [m.start() for m in _WORD.finditer(text)]
    gaps.append(len(text))
    if not protected:
        return gaps
    # Gaps are ascending: those strictly inside a span are one index range each (bisect).
    inside: set[int] = set()
    for span in protected:
        inside.update(range(bisect_right(gaps, span.start), bisect_left(gaps, span.end)))
    return [g for i, g in enumerate(gaps) if i not in inside] if inside else gaps


def _insert_at(text: str, trigger: str, offset: int) -> tuple[str, int]:
    """Insert ``trigger`` at ``offset`` (a gap); return the new text and the trigger's start."""
    if not text:
        return trigger, 0
    if offset >= len(text.rstrip()):
        # At the end: one space after the last word, trailing whitespace kept after the trigger.
        stripped = text.rstrip()
        return f"{stripped} {trigger}{text[len(stripped) :]}", len(stripped) + 1
    return f"{text[:offset]}{trigger} {text[offset:]}", offset


def insert(
    text: str,
    trigger: Trigger,
    rng: np.random.Generator | None = None,
    protected: Sequence[Span] = (),
) -> tuple[str, Span, int, int]:
    """Insert one trigger. Returns (new text, its span, offset of the edit, chars added).

    The edit offset and length let callers shift spans that lie after the insertion point."""
    if trigger.placement == "prefix":
        offset = 0
    elif trigger.placement == "suffix":
        offset = len(text)
    else:
        gaps = word_gaps(text, protected)
        if trigger.placement == "position":
            starts = gaps[:-1]
            k = trigger.position or 0
            offset = starts[k] if k < len(starts) else gaps[-1]
        else:
            if rng is None:
                raise ValueError("random placement needs a random generator")
            offset = gaps[int(rng.integers(len(gaps)))]
    new_text, start = _insert_at(text, trigger.text, offset)
    added = len(new_text) - len(text)
    return new_text, Span(trigger.text, start, start + len(trigger.text)), offset, added


def insert_many(
    text: str,
    triggers: Sequence[Trigger],
    rng: np.random.Generator | None = None,
    existing: Sequence[Span] = (),
) -> tuple[str, list[Span]]:
    """Insert several triggers in order (CTBA-style); spans of ``existing`` + new ones stay exact.

    Returns the new text and the spans of ``existing`` followed by one span per trigger, all
    pointing into the final text."""
    spans = list(existing)
    for trigger in triggers:
        text, span, offset, added = insert(text, trigger, rng, protected=spans)
        spans = [_shift(s, offset, added) for s in spans] + [span]
    return text, spans


def _shift(span: Span, offset: int, added: int) -> Span:
    if span.start >= offset:
        return Span(span.text, span.start + added, span.end + added)
    return span


def contains_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` as a whole token (case-insensitive)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, flags=re.IGNORECASE) is not None
