"""The executor layer: every executor maps a step over a stream in input order, reads the stream
only as far as its window, reuses the command's executor, and fails clearly when it cannot run."""

from __future__ import annotations

import functools

import pyarrow as pa
import pytest

from mbdata.executors import (
    EngineError,
    check_engine,
    current_executor,
    default_workers,
    executor_for,
    open_executor,
)
from mbdata.executors.window import ordered_window


def _square_table(batch: pa.Table) -> pa.Table:
    return pa.table({"y": [v * v for v in batch.column("x").to_pylist()]})


def _first_square(batch: pa.Table, offset: int = 0) -> int:
    return _square_table(batch).column("y")[0].as_py() + offset


@pytest.mark.parametrize("name", ["local", "process"])
def test_map_keeps_input_order(name):
    offset = 7
    step = functools.partial(_first_square, offset=offset)
    batches = [pa.table({"x": list(range(i, i + 5))}) for i in range(0, 50, 5)]
    with open_executor(name, workers=2) as executor:
        got = list(executor.map(step, batches))
    assert got == [i * i + offset for i in range(0, 50, 5)]


def _boom(x: int) -> int:
    if x == 3:
        raise ValueError("bad batch 3")
    return x


def test_process_executor_surfaces_a_step_error():
    with open_executor("process", workers=2) as executor, pytest.raises(ValueError, match="3"):
        list(executor.map(_boom, range(10)))


def test_window_pulls_the_stream_lazily():
    pulled = []

    def stream():
        for i in range(100):
            pulled.append(i)
            yield i

    out = ordered_window(stream(), lambda i: i, lambda h: h * 2, window=4)
    assert [next(out) for _ in range(3)] == [0, 2, 4]
    assert len(pulled) <= 3 + 4  # never more than the window ahead of the consumer


def test_steps_reuse_the_commands_executor():
    assert current_executor().name == "local"
    with open_executor("process", workers=2) as executor:
        assert current_executor() is executor
        with executor_for("process") as found:
            assert found is executor
        with executor_for(None) as found:
            assert found is executor
    assert current_executor().name == "local"


def test_names_and_workers_are_checked(monkeypatch):
    assert check_engine("Process") == "process"
    with pytest.raises(EngineError, match="valid engines: local, process, ray"):
        check_engine("spark")
    monkeypatch.setenv("MB_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("MB_WORKERS", "zero")
    with pytest.raises(EngineError, match="MB_WORKERS"):
        default_workers()


def test_ray_address_that_cannot_be_reached_is_one_line(monkeypatch):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray runtime is already running in this process")
    monkeypatch.setenv("RAY_ADDRESS", "ray://127.0.0.1:1")
    with pytest.raises(EngineError, match=r"cannot start RAY_ADDRESS=ray://127.0.0.1:1"):
        with open_executor("ray"):
            pass
