"""Independent stages side by side: a small dependency scheduler over worker processes.

Why: a tiny model trains fastest on one thread (its matrices are too small for more to help), so
on a 2-core machine the pipeline used one core while the other idled. The attacked model and
MB stage 1 do not depend on each other, nor do stage 2 and the two baselines, nor the five
evaluations. With ``train.model.jobs`` > 1 (by default: ``cores // threads`` on a CPU when
``threads`` is set) they run in that many worker processes.

Each job is a pure function of its inputs: models are read from and written to disk, and every
Trainer seeds itself from the recipe, so the outputs are the same whether jobs run one after
another or side by side (tested). Under ``torchrun`` / ``accelerate launch``, on a GPU, or with
``threads`` unset (torch then uses every core for one job) the jobs run one after another in the
calling process, exactly as before.

Workers come from a ``forkserver`` that imports mbtrain once, before any torch thread exists, so
each worker starts in milliseconds and no OpenMP state is forked. Ctrl-C (or SIGTERM handled as
Ctrl-C) reaches the workers: each stage checkpoints as it would in one process, and re-running
the command resumes every stage where it stopped.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

#: More workers than this never help: the pipeline has at most five independent jobs.
MAX_JOBS = 5


@dataclasses.dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args, **kwargs)`` (a module-level function, so it can be sent to
    a worker) once every job named in ``after`` has finished."""

    name: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    after: tuple[str, ...] = ()


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def auto_jobs(device_type: str, threads: int | None, requested: int | None = None) -> int:
    """How many jobs to run side by side: ``requested`` if given, else ``cores // threads`` on
    a CPU when ``threads`` is set, else 1 (a GPU, a distributed launch, or torch's own threads
    over every core)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return 1  # every process of a distributed launch must run the same stage
    if requested is not None:
        return max(1, min(int(requested), MAX_JOBS))
    if device_type != "cpu" or not threads:
        return 1
    return max(1, min(usable_cores() // threads, MAX_JOBS))


def _worker_init(threads: int | None) -> None:
    import torch

    from mbtrain.engine.models import quiet_transformers

    if threads:
        torch.set_num_threads(threads)
    quiet_transformers()
    # Ctrl-C in a terminal reaches the whole process group; the stages handle it themselves.


def _warm() -> int:
    return os.getpid()


class JobRunner:
    """Runs :class:`Job` lists with at most ``workers`` at a time; ``workers == 1`` runs them in
    this process, in the given order (which must list every job after the jobs it needs)."""

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = max(1, workers)
        self.threads = threads
        self._pool: ProcessPoolExecutor | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> JobRunner:
        """Start the workers now (their imports then overlap the caller's own work)."""
        if self.workers > 1 and self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["mbtrain.experiment.pipeline"])
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=ctx,
                initializer=_worker_init,
                initargs=(self.threads,),
            )
            for _ in range(self.workers):
                self._pool.submit(_warm)
        return self

    def close(self, interrupted: bool = False) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if interrupted:
            # The workers checkpoint on SIGINT (a terminal already sent it to the whole group;
            # SIGTERM or an error here did not): ask each once more, then wait for them.
            for pid in list(getattr(pool, "_processes", {}) or {}):
                try:
                    os.kill(pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> JobRunner:
        return self.start()

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(interrupted=exc_type is not None)

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        jobs: Sequence[Job],
        on_start: Callable[[Job], None] | None = None,
        on_done: Callable[[Job, Any], None] | None = None,
    ) -> dict[str, Any]:
        """Run every job once its ``after`` jobs are done; the results by job name. The first
        failure stops scheduling and is raised once the running jobs have stopped."""
        names = [j.name for j in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names repeat: {names}")
        unknown = {d for j in jobs for d in j.after} - set(names)
        if unknown:
            raise ValueError(f"jobs wait for unknown jobs: {sorted(unknown)}")
        if self.workers == 1:
            return self._run_inline(jobs, on_start, on_done)
        self.start()
        assert self._pool is not None
        results: dict[str, Any] = {}
        pending = list(jobs)
        running: dict[Future, Job] = {}
        while pending or running:
            for job in [j for j in pending if all(d in results for d in j.after)]:
                pending.remove(job)
                if on_start:
                    on_start(job)
                running[self._pool.submit(job.fn, *job.args, **job.kwargs)] = job
            if not running:
                raise ValueError(f"jobs wait for each other: {[j.name for j in pending]}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                results[job.name] = future.result()  # raises the worker's error here
                if on_done:
                    on_done(job, results[job.name])
        return results

    @staticmethod
    def _run_inline(
        jobs: Sequence[Job],
        on_start: Callable[[Job], None] | None,
        on_done: Callable[[Job, Any], None] | None,
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for job in jobs:
            missing = [d for d in job.after if d not in results]
            if missing:
                raise ValueError(f"job {job.name} listed before {missing}")
            if on_start:
                on_start(job)
            results[job.name] = job.fn(*job.args, **job.kwargs)
            if on_done:
                on_done(job, results[job.name])
        return results
