"""Progress of a training loop that is visible whether or not stderr is a terminal.

On a terminal this is a tqdm bar. Elsewhere (``make demo | tee log``, CI, a notebook's captured
stderr) tqdm with ``disable=None`` prints nothing, so a several-minute stage looked hung; there a
plain line with the step count, elapsed time and ETA is printed every ``every`` of the steps and at
least every ``seconds`` of wall time.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LineProgress:
    """The tqdm methods a training loop uses (``update``, ``set_postfix``, ``close``), as lines."""

    def __init__(
        self,
        total: int,
        initial: int = 0,
        desc: str = "train",
        *,
        file: TextIO | None = None,
        every: float = 0.1,
        seconds: float = 30.0,
    ):
        self.total, self.n, self.desc = max(int(total), 1), int(initial), desc
        self.file = file or sys.stderr
        self.every, self.seconds = every, seconds
        self.started = time.perf_counter()
        self.start_n = self.n
        self.last_time = self.started
        self.last_share = self.n / self.total
        self.postfix = ""
        self._print()

    def _print(self) -> None:
        elapsed = time.perf_counter() - self.started
        done = self.n - self.start_n
        eta = ""
        if done > 0 and self.n < self.total:
            eta = f", ETA {_clock(elapsed / done * (self.total - self.n))}"
        post = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: step {self.n}/{self.total} ({100 * self.n / self.total:.0f} %), "
            f"{_clock(elapsed)} elapsed{eta}{post}",
            file=self.file,
            flush=True,
        )

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.perf_counter()
        share = self.n / self.total
        if (
            share - self.last_share >= self.every
            or now - self.last_time >= self.seconds
            or self.n >= self.total
        ):
            self.last_share, self.last_time = share, now
            self._print()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        pass


def step_progress(total: int, initial: int = 0, desc: str = "train", file: TextIO | None = None):
    """A tqdm bar on a terminal, :class:`LineProgress` lines anywhere else."""
    file = file or sys.stderr
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            unit="step",
            dynamic_ncols=True,
            leave=False,
            file=file,
        )
    return LineProgress(total, initial, desc, file=file)
