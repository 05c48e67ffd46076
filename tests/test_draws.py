"""``IntegerDraws`` must return numpy's own ``Generator.integers(n)`` sequence and leave the
generator in the same state (rejection-heavy bounds, n = 1 and 2**32, half-used 32-bit words)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mbdata.draws import IntegerDraws


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_same_integers_and_state_as_numpy(chunk):
    r = random.Random(chunk)
    for _ in range(40):
        seed = r.randrange(1 << 30)
        bounds = [
            r.choice([1, 2, 3, 5, 10, 100, (1 << 31) + 1, (1 << 32) - 1, 1 << 32])
            if r.random() < 0.5
            else r.randrange(1, 1 << 32)
            for _ in range(r.randint(0, 400))
        ]
        skip = r.randint(0, 3)  # leave numpy's half-word buffer full or empty
        expected_rng = np.random.default_rng(seed)
        for _ in range(skip):
            expected_rng.integers(9)
        expected = [int(expected_rng.integers(n)) for n in bounds]
        rng = np.random.default_rng(seed)
        for _ in range(skip):
            rng.integers(9)
        draws = IntegerDraws(rng, chunk=chunk)
        assert [draws.integers(n) for n in bounds] == expected
        draws.sync()
        assert rng.bit_generator.state == expected_rng.bit_generator.state
        assert rng.integers(1000, size=5).tolist() == expected_rng.integers(1000, size=5).tolist()


def test_out_of_range_bounds_are_refused():
    draws = IntegerDraws(np.random.default_rng(0))
    for n in (0, (1 << 32) + 1):
        with pytest.raises(ValueError):
            draws.integers(n)
