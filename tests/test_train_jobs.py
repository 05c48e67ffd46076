"""Independent stages side by side (mbtrain.engine.jobs): the scheduler's order and errors, and the
pipeline's outputs identical whether its jobs run one after another or in worker processes."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from mbtrain.engine.jobs import Job, JobRunner, auto_jobs

sys.path.insert(0, str(Path(__file__).parent))
from test_train_helpers import TINY_TRAIN, make_build  # noqa: E402


def _add(a: int, b: int) -> int:
    return a + b


def _fail(message: str) -> None:
    raise ValueError(message)


def test_auto_jobs_uses_spare_cores_only_on_a_cpu_with_threads_set(monkeypatch):
    monkeypatch.setattr("mbtrain.engine.jobs.usable_cores", lambda: 8)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert auto_jobs("cpu", 1) == 5  # capped: the pipeline never has more than five jobs
    assert auto_jobs("cpu", 4) == 2
    assert auto_jobs("cpu", None) == 1  # torch's own threads over every core
    assert auto_jobs("cuda", 1) == 1
    assert auto_jobs("cpu", 1, requested=3) == 3
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert auto_jobs("cpu", 1, requested=3) == 1  # every rank runs the same stage


@pytest.mark.parametrize("workers", [1, 2])
def test_jobs_run_after_their_dependencies_and_errors_surface(workers):
    jobs = [
        Job("a", _add, (1, 2)),
        Job("b", _add, (3, 4)),
        Job("c", _add, (5, 6), after=("a", "b")),
    ]
    order: list[str] = []
    with JobRunner(workers) as runner:
        out = runner.run(jobs, on_done=lambda job, _: order.append(job.name))
        assert out == {"a": 3, "b": 7, "c": 11}
        assert order[-1] == "c"
        with pytest.raises(ValueError, match="boom"):
            runner.run([Job("x", _fail, ("boom",)), Job("y", _add, (1, 1), after=("x",))])
    with pytest.raises(ValueError, match="unknown jobs"):
        JobRunner(workers).run([Job("a", _add, (1, 2), after=("nope",))])


@pytest.mark.slow
def test_pipeline_outputs_are_the_same_with_one_or_two_jobs(tmp_path):
    from mbtrain.engine.builds import open_training_build
    from mbtrain.experiment.pipeline import run_experiment

    threads = torch.get_num_threads()
    build = make_build(tmp_path / "build", train=TINY_TRAIN)
    reports, weights = {}, {}
    try:
        for jobs in (1, 2):
            cfg = open_training_build(build).train_config()
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, jobs=jobs))
            out = tmp_path / f"run{jobs}"
            report = run_experiment(build, out, cfg=cfg, progress=False, log=lambda _: None)
            reports[jobs] = (
                {name: m["cacc"] for name, m in report["runs"].items()},
                {name: m["asr"] for name, m in report["runs"].items()},
            )
            weights[jobs] = {
                p.parent.name: p.read_bytes() for p in (out / "models").glob("*/model.safetensors")
            }
    finally:
        torch.set_num_threads(threads)
    assert reports[1] == reports[2]
    assert set(weights[1]) == {
        "base",
        "attacked",
        "mb_stage1",
        "mb_defense",
        "clean_fft",
        "fine_mixing",
        "trigger_aug",
    }
    assert weights[1] == weights[2]
