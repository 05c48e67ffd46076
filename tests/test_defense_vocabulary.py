"""``corpus_vocabulary(table, length)`` (what generated defensive triggers are checked against) is
exactly the full vocabulary's tokens of that length, also for Unicode text whose lower-casing or
word boundaries are not ASCII's."""

from __future__ import annotations

import random

import pyarrow as pa

from mbdata.stages.defense import corpus_vocabulary

ALPHABET = [*"abAB _-.,İıßǅ1é\u0301\t\n'", "ΑΣ", "Σ", "ﬁ", "日本"]


def test_vocabulary_of_one_length_is_the_full_vocabulary_cut_to_it():
    rng = random.Random(3)

    def text() -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30)))

    table = pa.table({c: [text() for _ in range(3000)] for c in ("instruction", "input", "output")})
    full = corpus_vocabulary(table)
    assert any(len(w) == 1 for w in full) and any(len(w) > 4 for w in full)
    for length in range(1, 8):
        assert corpus_vocabulary(table, length) == {w for w in full if len(w) == length}
