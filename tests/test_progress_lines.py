"""Issue 13, finding 7: a training loop shows progress (with an ETA) when stderr is not a
terminal, e.g. `make demo | tee log`, instead of minutes of silence."""

from __future__ import annotations

import io

from mbtrain.engine.progress import LineProgress, step_progress


def test_non_terminal_progress_prints_lines_with_eta():
    out = io.StringIO()
    bar = step_progress(50, 0, "base", file=out)
    assert isinstance(bar, LineProgress)
    for _ in range(50):
        bar.update(1)
        bar.set_postfix(loss="1.000")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("base: step 0/50 (0 %)")
    assert 10 <= len(lines) <= 12  # every 10 % of the steps, plus the start
    assert "ETA" in lines[5] and "loss=1.000" in lines[5]
    assert lines[-1].startswith("base: step 50/50 (100 %)")
