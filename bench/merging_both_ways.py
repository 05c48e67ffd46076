"""Merging read both ways for sweep points evaluated before ``defense_response_rate`` existed.

``mbtrain`` now writes ``defense_response_rate`` (an attack's triggered prompts answered with any
defensive response, and the same share on clean prompts) into every evaluation; points evaluated
earlier have the generations but not the number. This recomputes it from each run's
``eval/RUN/generations.jsonl`` with the same function (:func:`defense_response_rates`), the
defensive behaviours and targets taken from the point's build manifest, and prints one line per
point and run beside the stored ``merging_rate``.

    python bench/merging_both_ways.py runs/mechanism-map/*/points/pt-*
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from mbtrain.evaluation.evaluate import defense_response_rates

RUNS = ("attacked", "mb_stage1", "mb_defense")


def mean_of(values: Any) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def point_manifest(point: Path) -> dict[str, Any]:
    """The build manifest of a sweep point (its ``sweep_point.json`` names the build)."""
    meta = json.loads((point / "sweep_point.json").read_text())
    return json.loads((point.parent.parent / meta["build"] / "manifest.json").read_text())


def point_rates(
    point: Path, manifest: dict[str, Any] | None = None
) -> dict[str, dict[str, float | None]]:
    """``defense_response_rate`` of each run of ``point``, from its generations."""
    manifest = manifest or point_manifest(point)
    defenses = {
        t["name"]: [{"behavior": t["behavior"], "output": t["target"]}]
        for t in manifest["triggers"]
        if t["owner"] == "defender"
    }
    out = {}
    for run in RUNS:
        path = point / "eval" / run / "generations.jsonl"
        if not path.is_file():
            continue
        answers: dict[str, list[str]] = defaultdict(list)
        for line in path.read_text().splitlines():
            row = json.loads(line)
            group = row["trigger_set"] or row["group"]
            if group not in defenses:
                answers[group].append(row["generation"])
        out[run] = defense_response_rates(dict(answers), defenses)
    return out


def main(points: list[str]) -> None:
    for p in map(Path, points):
        if not (p / "report.json").is_file() or not (p / "sweep_point.json").is_file():
            print(
                f"{p}: not a finished sweep point (no report.json/sweep_point.json)",
                file=sys.stderr,
            )
            continue
        report = json.loads((p / "report.json").read_text())
        for run, rates in point_rates(p).items():
            clean = rates.pop("eval_clean", None)
            mean = mean_of(rates.values()) or 0.0
            merge = mean_of(((report["runs"].get(run) or {}).get("merging_rate") or {}).values())
            print(
                f"{p.parent.parent.name}/{p.name} {run}: attack->defence {mean:.3f} "
                f"{json.dumps(rates, sort_keys=True)} clean->defence {clean} "
                f"defence->attack (merging) {merge if merge is None else round(merge, 3)}"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
