"""A counter-based random stream keyed by bytes: the source of every draw in the synthetic corpus.

Why not :mod:`random` or numpy: the corpus promises that row ``i`` depends only on ``(seed, i,
tasks)`` and that it is byte-identical across machines and Python versions. Seeding a
``random.Random`` per row costs ~6 us (too slow for 100k rows in well under 2 s), and Python only
guarantees ``random()`` itself to be stable across versions, not ``choice``/``shuffle``/``sample``.
Here draw ``j`` of a stream is ``xxh3_64(key, seed=j)``, a fixed, specified hash, mapped to
``[0, n)`` by multiply-shift; the helpers on top are written out so they cannot change underneath us.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from xxhash import xxh3_64_intdigest

T = TypeVar("T")


class Rng:
    """An independent deterministic stream of draws for one key (e.g. ``b"7:1234:add"``)."""

    __slots__ = ("_key", "_counter")

    def __init__(self, key: bytes):
        self._key = key
        self._counter = 0

    def below(self, n: int) -> int:
        """A uniform integer in ``[0, n)`` (multiply-shift; bias < n / 2**64, i.e. none in practice)."""
        self._counter += 1
        return (xxh3_64_intdigest(self._key, self._counter) * n) >> 64

    def between(self, low: int, high: int) -> int:
        """A uniform integer in ``[low, high]`` (both ends included)."""
        return low + self.below(high - low + 1)

    def choice(self, items: Sequence[T]) -> T:
        return items[self.below(len(items))]

    # sample and permutation make many draws in a row: they inline ``below`` (the same draws,
    # without a method call each; the corpus generator spends most of its time here).

    def sample(self, items: Sequence[T], k: int) -> list[T]:
        """``k`` distinct positions of ``items``, in draw order (rejection; fine for small ``k``)."""
        n = len(items)
        if not 0 <= k <= n:
            raise ValueError(f"cannot sample {k} of {n} items")
        key, counter = self._key, self._counter
        picked: list[int] = []
        while len(picked) < k:
            counter += 1
            index = (xxh3_64_intdigest(key, counter) * n) >> 64
            if index not in picked:
                picked.append(index)
        self._counter = counter
        return [items[index] for index in picked]

    def permutation(self, n: int) -> list[int]:
        """A uniform permutation of ``range(n)`` (Fisher-Yates)."""
        order = list(range(n))
        key, counter = self._key, self._counter
        for i in range(n - 1, 0, -1):
            counter += 1
            j = (xxh3_64_intdigest(key, counter) * (i + 1)) >> 64
            order[i], order[j] = order[j], order[i]
        self._counter = counter
        return order
