"""Benchmark: end-to-end `mb build` throughput on the embedded synthetic corpus.

    python bench/build.py --rows 200000

Builds a recipe with two attacks, MB-Defense stage 1/2 data and eval splits, reports rows/s and the
per-stage wall time (from the build's timings.json) and peak RSS. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import mbdata
from mbdata.recipe import recipe_from_dict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    recipe = recipe_from_dict(
        {
            "name": "bench",
            "version": "1.0.0",
            "seed": 0,
            "sources": [{"name": "synth", "kind": "synthetic", "count": args.rows}],
            "eval": {"size": 500},
            "attacks": [{"preset": "badnet", "rate": 0.05}, {"preset": "ctba", "rate": 0.02}],
            "defense": {"triggers": 4, "rate": 0.01},
            "recovery": {"size": 128},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = mbdata.build(recipe, Path(tmp) / "out")
        seconds = time.perf_counter() - start
        timings = json.loads((out / "timings.json").read_text())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": args.rows,
                "seconds": round(seconds, 2),
                "rows_per_s": round(args.rows / seconds),
                "peak_rss_mb": round(peak_mb),
                "stages_s": timings,
                "load_avg": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
