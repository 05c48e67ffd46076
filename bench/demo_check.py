"""Check a demo report against the bounds the README states (CI runs this after ``mb demo``).

    python bench/demo_check.py runs/demo/report.json            # exit 1 when outside the bounds
    python bench/demo_check.py runs/demo/report.json --bounds my-bounds.json

The bounds (``bench/demo_bounds.json``) are per draw, from the seeds x kernel sets measured in
``bench/RESULTS.md``: MB-Defense's ASR at most ``mb_defense_asr_max`` on every attack, its CACC
at most ``cacc_drop_max`` below the attacked model's, and each control (Clean-FFT, trigger-aug)
at least ``control_asr_min`` on every attack, so a demo where nothing was learned (every ASR 0)
fails too, as does an attacked model without a backdoor (``attacked_asr_min``).
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
    """The numbers a draw is judged by: per run CACC, ASR per attack, defensive response rate
    and merging (means over triggers/attacks), plus the numeric environment it ran in."""
    runs: dict[str, dict[str, float | None]] = {}
    for run, m in report["runs"].items():
        cell: dict[str, float | None] = {"cacc": m.get("cacc")}
        for attack, v in (m.get("asr") or {}).items():
            cell[f"asr.{attack}"] = v
        cell["dtr"] = _mean((m.get("defense_trigger_rate") or {}).values())
        cell["merging"] = _mean((m.get("merging_rate") or {}).values())
        runs[run] = cell
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
    for control in ("clean_fft", "trigger_aug"):
        for attack, v in asrs(control).items():
            if v < bounds["control_asr_min"]:
                out.append(f"{control} ASR {attack} {v:.3f} < {bounds['control_asr_min']}")
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


def _mean(values: Any) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


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
