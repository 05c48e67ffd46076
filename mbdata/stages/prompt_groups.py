"""Rows grouped by prompt key, by sorting their 16-byte digests: the hold-out's two questions
(which rows are the first of their prompt, which rows share a prompt with the held-out ones)
answered with about 30 bytes a row at the peak.

Why not ``dictionary_encode``: its hash table of the whole corpus's digests cost about 60 bytes a
row more than the digests themselves (190 MiB at 3M rows, issue 28), and the hold-out only needs
the two answers above, which a sort by the digest's low 64 bits gives; rows whose low words are
equal are compared on the high words too, so the answers are exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

#: Rows of the sorted order handled at a time when the first rows are marked.
_STEP = 1 << 20


def digest_words(digests: pa.Array) -> np.ndarray:
    """``fixed_size_binary(16)`` digests as an (n, 2) array of native-endian uint64 words (a
    view of the Arrow buffer: no copy)."""
    n = len(digests)
    if not n:
        return np.zeros((0, 2), dtype=np.uint64)
    raw = np.frombuffer(
        digests.buffers()[1], dtype=np.uint64, count=2 * n, offset=16 * digests.offset
    )
    return raw.reshape(n, 2)


class PromptGroups:
    """The ``n`` rows of a corpus grouped by their prompt digests (``fixed_size_binary(16)``
    arrays in row order, e.g. a batch at a time: equal digests are equal prompt keys, see
    :func:`mbdata.stages.splits.prompt_digest_batch`)."""

    def __init__(self, n: int, digests: Iterable[pa.Array]):
        high = np.empty(n, dtype=np.uint64)
        low = np.empty(n, dtype=np.uint64)
        start = 0
        for chunk in digests:
            words = digest_words(chunk)
            high[start : start + len(words)] = words[:, 0]
            low[start : start + len(words)] = words[:, 1]
            start += len(words)
        if start != n:
            raise ValueError(f"PromptGroups: {start} digests for {n} rows")
        self.high = high
        self.order = np.argsort(low, kind="stable")  # ties keep row order
        self.low_sorted = low[self.order]

    def first_rows(self, among: np.ndarray | None = None) -> np.ndarray:
        """Ascending positions of the first row of each distinct prompt, counting only the rows
        where ``among`` (a bool mask) is True (all rows when None)."""
        order, low = self.order, self.low_sorted
        if among is not None:
            keep = among[order]
            order, low = order[keep], low[keep]
            del keep
        is_first = np.zeros(len(self.high), dtype=bool)
        if not len(order):
            return np.flatnonzero(is_first)
        starts = np.empty(len(order), dtype=bool)
        starts[0] = True
        np.not_equal(low[1:], low[:-1], out=starts[1:])
        for a in range(0, len(order), _STEP):
            is_first[order[a : a + _STEP][starts[a : a + _STEP]]] = True
        # Rows whose low word repeats the previous one: the same prompt unless the high words
        # differ (different prompts, vanishingly rare), resolved exactly by _clashing_firsts.
        repeats = np.flatnonzero(~starts)
        clash = self.high[order[repeats]] != self.high[order[repeats - 1]]
        if clash.any():
            is_first[self._clashing_firsts(order, starts, repeats[clash])] = True
        return np.flatnonzero(is_first)

    def _clashing_firsts(
        self, order: np.ndarray, starts: np.ndarray, clashes: np.ndarray
    ) -> list[int]:
        """The first row of every high word inside the runs of equal low words holding more than
        one high word (besides each run's own first row, already marked)."""
        run_starts = np.flatnonzero(starts)
        found = []
        for i in np.unique(np.searchsorted(run_starts, clashes, "right") - 1).tolist():
            a = int(run_starts[i])
            b = int(run_starts[i + 1]) if i + 1 < len(run_starts) else len(order)
            seen = {int(self.high[order[a]])}
            for j in range(a + 1, b):  # ascending positions within a run
                high = int(self.high[order[j]])
                if high not in seen:
                    seen.add(high)
                    found.append(int(order[j]))
        return found

    def sharing(self, digests: pa.Array) -> np.ndarray:
        """One bool a row: whether its prompt digest is one of ``digests`` (e.g. those of the
        held-out rows, which are then marked too)."""
        out = np.zeros(len(self.high), dtype=bool)
        for high, low in digest_words(digests).tolist():
            a = int(np.searchsorted(self.low_sorted, low, side="left"))
            b = int(np.searchsorted(self.low_sorted, low, side="right"))
            rows = self.order[a:b]
            out[rows[self.high[rows] == high]] = True
        return out
