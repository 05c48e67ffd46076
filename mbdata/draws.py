"""Exactly numpy's ``Generator.integers(n)``, one draw at a time, without numpy's per-call cost.

The poisoning stages draw a few small integers per poisoned row (a refusal template, a trigger,
a word gap) from one seeded ``numpy.random.Generator``, in row order: the draws and their order
are part of every build's bytes. A scalar ``Generator.integers`` call costs microseconds of
argument handling, more than the rest of the row's work. :class:`IntegerDraws` gives the *same*
integers: it takes the generator's 32-bit words in bulk (``integers(0, 2**32, size=k,
dtype=uint64)`` yields exactly the words scalar calls consume) and applies numpy's own bounded
draw to them (Lemire's multiply-shift with its rejection step, ``buffered_bounded_lemire_uint32``
in numpy's ``distributions.c``); :meth:`IntegerDraws.sync` then leaves the generator exactly
where the scalar calls would have (``tests/test_draws.py`` checks both against numpy).
"""

from __future__ import annotations

import numpy as np

_WORD = 1 << 32
_LOW = _WORD - 1


class IntegerDraws:
    """``integers(n)`` (``0 <= result < n``, ``1 <= n <= 2**32``) as ``rng.integers(n)`` would
    return them, in the same order. Call :meth:`sync` when done, before ``rng`` is used again."""

    __slots__ = ("_rng", "_start", "_words", "_next", "_used", "_chunk")

    def __init__(self, rng: np.random.Generator, chunk: int = 4096):
        self._rng = rng
        self._start = rng.bit_generator.state
        self._words: list[int] = []
        self._next = 0
        self._used = 0
        self._chunk = chunk

    def _word(self) -> int:
        if self._next == len(self._words):
            self._words = self._rng.integers(0, _WORD, size=self._chunk, dtype=np.uint64).tolist()
            self._next = 0
        word = self._words[self._next]
        self._next += 1
        self._used += 1
        return word

    def integers(self, n: int) -> int:
        if not 1 <= n <= _WORD:
            raise ValueError(f"IntegerDraws.integers: n must be in [1, 2**32], got {n}")
        if n == 1:  # numpy returns 0 without drawing
            return 0
        m = self._word() * n
        leftover = m & _LOW
        if leftover < n:
            threshold = (_WORD - n) % n
            while leftover < threshold:
                m = self._word() * n
                leftover = m & _LOW
        return m >> 32

    def sync(self) -> None:
        """Put the generator where the scalar calls would have left it (words taken in bulk
        but not used are given back)."""
        self._rng.bit_generator.state = self._start
        if self._used:
            self._rng.integers(0, _WORD, size=self._used, dtype=np.uint64)
        self._start = self._rng.bit_generator.state
        self._words, self._next, self._used = [], 0, 0
