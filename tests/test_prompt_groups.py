"""PromptGroups (issue 28): the hold-out's prompt grouping by sorted digests gives exactly what
grouping by the whole 16-byte digest gives, also when digests share their low 8 bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from mbdata.stages.prompt_groups import PromptGroups


def _digests(keys: list[tuple[int, int]], chunks: int) -> pa.ChunkedArray:
    """One 16-byte digest per (high, low) pair, as the native-endian words PromptGroups reads."""
    raw = np.asarray(keys, dtype=np.uint64).reshape(-1, 2).tobytes()
    array = pa.array([raw[16 * i : 16 * i + 16] for i in range(len(keys))], pa.binary(16))
    cuts = np.linspace(0, len(keys), chunks + 1).astype(int)
    return pa.chunked_array([array.slice(a, b - a) for a, b in zip(cuts, cuts[1:])], array.type)


def _reference(keys: list[tuple[int, int]], among: np.ndarray | None, held: list[int]):
    seen: set = set()
    first = []
    for i, key in enumerate(keys):
        if (among is None or among[i]) and key not in seen:
            seen.add(key)
            first.append(i)
    held_keys = {keys[p] for p in held}
    return first, [key in held_keys for key in keys]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=60),
    st.integers(1, 4),
    st.booleans(),
    st.data(),
)
def test_first_rows_and_sharing_match_whole_digest_grouping(keys, chunks, masked, data):
    """Small value ranges force many rows with equal low words and different high words."""
    n = len(keys)
    among = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n))) if masked else None
    held = sorted(set(data.draw(st.lists(st.integers(0, n - 1), max_size=5))))
    digests = _digests(keys, min(chunks, n))
    groups = PromptGroups(n, digests.chunks)
    first, sharing = _reference(keys, among, held)
    assert groups.first_rows(among).tolist() == first
    held_digests = digests.combine_chunks().take(pa.array(held, pa.int64()))
    assert groups.sharing(held_digests).tolist() == sharing


def test_an_empty_corpus_and_an_empty_mask():
    empty = pa.array([], pa.binary(16))
    groups = PromptGroups(0, [empty])
    assert groups.first_rows().tolist() == [] and groups.sharing(empty).tolist() == []
    groups = PromptGroups(2, _digests([(1, 2), (1, 2)], 1).chunks)
    assert groups.first_rows(np.zeros(2, dtype=bool)).tolist() == []
    assert groups.first_rows().tolist() == [0]


def test_a_digest_count_that_is_not_the_row_count_is_refused():
    import pytest

    with pytest.raises(ValueError, match="1 digests for 2 rows"):
        PromptGroups(2, _digests([(1, 2)], 1).chunks)
