"""Check a demo report against the bounds the README states (CI runs this after ``mb demo``).

    python bench/demo_check.py runs/demo/report.json            # exit 1 when outside the bounds
    python bench/demo_check.py runs/demo/report.json --bounds my-bounds.json

The bounds (``bench/demo_bounds.json``) are per draw, from the seeds x kernel sets measured in
``bench/RESULTS.md``: the attacked model's ASR at least ``attacked_asr_min`` on every attack (a
backdoor worth defending: a demo where nothing was learned, every ASR 0, fails), MB-Defense's ASR
at most ``mb_defense_asr_max`` on every attack, its CACC at most ``cacc_drop_max`` below the
attacked model's (per draw: the issue-22 target, within .05, is on the mean over draws; single
draws measured up to .06 below, and two 200-prompt CACCs differ by ~.05 by chance alone, hence
.08 per draw), and (``mb_defense_not_above_controls``) its ASR no higher than Clean-FFT's or
trigger-aug's on any attack. How far above MB-Defense the controls stay is reported, not bounded:
it varied with the draw (bench/RESULTS.md, "The demo over seeds and kernel sets").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_BOUNDS = Path(__file__).resolve().parent / "demo_bounds.json"


def load_bounds(path: Path | None) -> dict[str, Any]:
    path = path or DEFAULT_BOUNDS
    bounds = json.loads(path.read_text(encoding="utf-8"))
    bounds["source"] = str(path.name)
    return bounds


def draw_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers a draw is judged by, per run: ``mb sweep``'s flat metrics (CACC, ASR per
    attack and mean, defensive response rate, merging) regrouped by run, plus the numeric
    environment the report was computed in."""
    from mbtrain.experiment.sweep import flat_metrics

    runs: dict[str, dict[str, float]] = {run: {} for run in report["runs"]}
    for key, value in flat_metrics(report, None).items():
        run, _, metric = key.partition(".")
        if run in runs:
            runs[run][metric] = value
    env = report.get("environment") or {}
    return {
        "capability": env.get("cpu_capability") or env.get("device") or "?",
        "runs": runs,
    }


def check_report(summary: dict[str, Any], bounds: dict[str, Any]) -> list[str]:
    """Every way ``summary`` (from :func:`draw_summary`) leaves ``bounds``; empty when inside."""
    runs = summary["runs"]
    out: list[str] = []

    def asrs(run: str) -> dict[str, float]:
        return {
            k[4:]: v for k, v in runs.get(run, {}).items() if k.startswith("asr.") and v is not None
        }

    for attack, v in asrs("attacked").items():
        if v < bounds["attacked_asr_min"]:
            out.append(
                f"attacked ASR {attack} {v:.3f} < {bounds['attacked_asr_min']} (no backdoor to remove)"
            )
    for attack, v in asrs("mb_defense").items():
        if v > bounds["mb_defense_asr_max"]:
            out.append(f"MB-Defense ASR {attack} {v:.3f} > {bounds['mb_defense_asr_max']}")
    if bounds.get("mb_defense_not_above_controls"):
        defended = asrs("mb_defense")
        for control in ("clean_fft", "trigger_aug"):
            for attack, v in asrs(control).items():
                if attack in defended and defended[attack] > v:
                    out.append(
                        f"MB-Defense ASR {attack} {defended[attack]:.3f} > {control}'s {v:.3f}"
                    )
    attacked = runs.get("attacked", {}).get("cacc")
    defended = runs.get("mb_defense", {}).get("cacc")
    if (
        attacked is not None
        and defended is not None
        and attacked - defended > bounds["cacc_drop_max"]
    ):
        out.append(
            f"MB-Defense CACC {defended:.3f} is {attacked - defended:.3f} below the attacked "
            f"model's {attacked:.3f} (> {bounds['cacc_drop_max']})"
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="report.json of an mb demo / mb run")
    ap.add_argument("--bounds", type=Path, default=None)
    args = ap.parse_args()
    bounds = load_bounds(args.bounds)
    summary = draw_summary(json.loads(args.report.read_text(encoding="utf-8")))
    failures = check_report(summary, bounds)
    for run, cell in summary["runs"].items():
        print(run, json.dumps(cell))
    if failures:
        print(f"demo outside the bounds of {bounds['source']}:")
        for f in failures:
            print(f"  {f}")
        sys.exit(1)
    print(f"demo inside the bounds of {bounds['source']} ({summary['capability']})")


if __name__ == "__main__":
    main()
