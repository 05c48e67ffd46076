"""Stages that drop or rewrite rows do it column by column on a table handed over to them
(issue 28): the same tables, chunk layout included, as ``Table.filter`` / ``concat + take``, and
the corpus is not held twice while they run."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from test_build_streamed_write import _corpus, _peak_arrow_bytes

from mbdata.pipeline import filter_rows, replace_many, replace_rows


def _layout(table: pa.Table) -> list[list[int]]:
    return [[len(chunk) for chunk in column.chunks] for column in table.columns]


def _random_table(rng: np.random.Generator, n: int) -> pa.Table:
    columns = {}
    for name in "abc":
        cuts = sorted({0, n, *rng.integers(0, n + 1, size=int(rng.integers(1, 5))).tolist()})
        values = pa.array([f"{name}{i}" for i in range(n)])
        columns[name] = pa.chunked_array(
            [values.slice(x, y - x) for x, y in zip(cuts, cuts[1:])], type=pa.string()
        )
    return pa.table(columns)


@pytest.mark.parametrize("seed", range(4))
def test_filter_and_replace_give_the_tables_and_layout_of_the_whole_table_operations(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        n = int(rng.integers(1, 60))
        table = _random_table(rng, n)
        keep = rng.random(n) < rng.random()
        expected = table.filter(pa.array(keep))
        for given in (table, [table]):
            got = filter_rows(given, keep)
            assert got.equals(expected) and _layout(got) == _layout(expected)
        idx = rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False)
        new = pa.table(
            {k: pa.array([f"n{i}" for i in range(len(idx))], pa.string()) for k in "abc"}
        )
        perm = np.arange(n)
        perm[idx] = n + np.arange(len(idx))
        expected = pa.concat_tables([table, new]).take(pa.array(perm))
        got = replace_rows([table], idx, new)
        assert got.equals(expected) and _layout(got) == _layout(expected)
        half = len(idx) // 2
        parts = [(idx[:half], new.slice(0, half)), (idx[half:], new.slice(half))]
        assert replace_many([table], parts).equals(expected)


def test_a_handed_over_table_is_not_held_twice():
    """Filtering or rewriting a handed-over corpus allocates about one column at a time; on a
    table its caller still holds, a whole copy (the measure can see it)."""
    corpus = _corpus(20_000, 7, 1)
    size = corpus.nbytes
    keep = np.ones(corpus.num_rows, dtype=bool)
    keep[::50] = False
    rows = np.arange(0, corpus.num_rows, 20)
    new = corpus.take(pa.array(rows))

    def owned(fn):
        box = [corpus.take(pa.array(np.arange(corpus.num_rows)))]  # a copy only the box holds
        return lambda: fn(box)

    assert _peak_arrow_bytes(lambda: filter_rows(corpus, keep)) > 0.9 * size
    assert _peak_arrow_bytes(owned(lambda box: filter_rows(box, keep))) < 0.5 * size
    assert _peak_arrow_bytes(lambda: replace_rows(corpus, rows, new)) > 0.9 * size
    assert _peak_arrow_bytes(owned(lambda box: replace_rows(box, rows, new))) < 0.5 * size
