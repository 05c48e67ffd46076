"""Benchmark: end-to-end `mb build` throughput on the embedded synthetic corpus.

    python bench/build.py --rows 200000
    python bench/build.py --rows 1000000 --recipe recipes/demo.yaml      # the demo recipe, scaled
    python bench/build.py --rows 200000 --engine ray --num-cpus 2         # Ray, 2 workers
    MB_WORKERS=2 python bench/build.py --rows 200000 --engine process     # 2 worker processes

Builds a recipe with two attacks, MB-Defense stage 1/2 data and eval splits (or ``--recipe``, a
recipe file whose first source gets ``count: ROWS``), reports rows/s, the per-stage wall time
(from the build's timings.json), peak RSS of this process and the load average, and checks that
the content hash is the same with ``--check-local`` (the same build on the local engine). Run it on
a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import yaml

import mbdata
from mbdata.executors import ENGINES
from mbdata.recipe import recipe_from_dict


def bench_recipe(rows: int, recipe_path: str | None, engine: str) -> dict:
    if recipe_path:
        data = yaml.safe_load(Path(recipe_path).read_text(encoding="utf-8"))
        data["sources"][0]["count"] = rows
        data.pop("train", None)
    else:
        data = {
            "name": "bench",
            "version": "1.0.0",
            "seed": 0,
            "sources": [{"name": "synth", "kind": "synthetic", "count": rows}],
            "eval": {"size": 500},
            "attacks": [{"preset": "badnet", "rate": 0.05}, {"preset": "ctba", "rate": 0.02}],
            "defense": {"triggers": 4, "rate": 0.01},
            "recovery": {"size": 128},
        }
    data["engine"] = engine
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--recipe", default=None, help="a recipe file to scale (default: built-in)")
    parser.add_argument("--engine", default="local", choices=list(ENGINES))
    parser.add_argument("--num-cpus", type=int, default=2, help="Ray workers (engine ray)")
    parser.add_argument("--check-local", action="store_true", help="also build locally, compare")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    recipe = recipe_from_dict(bench_recipe(args.rows, args.recipe, args.engine))
    ray_start = None
    if args.engine == "ray":
        import ray

        began = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        ray_start = round(time.perf_counter() - began, 2)
    with tempfile.TemporaryDirectory() as tmp:
        cpu_before = time.process_time()
        start = time.perf_counter()
        out = mbdata.build(recipe, Path(tmp) / "out")
        seconds = time.perf_counter() - start
        cpu = time.process_time() - cpu_before
        timings = json.loads((out / "timings.json").read_text())
        content_hash = json.loads((out / "manifest.json").read_text())["content_hash"]
        same = None
        if args.check_local:
            local = mbdata.build(recipe, Path(tmp) / "local", engine="local")
            same = json.loads((local / "manifest.json").read_text())["content_hash"] == content_hash
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": args.rows,
                "recipe": args.recipe or "built-in",
                "engine": args.engine,
                "ray_init_s": ray_start,
                "seconds": round(seconds, 2),
                "rows_per_s": round(args.rows / seconds),
                # CPU seconds of this process (not of Ray workers): on a loaded machine, rows per
                # CPU second is the steadier figure.
                "cpu_s": round(cpu, 2),
                "rows_per_cpu_s": round(args.rows / cpu),
                "peak_rss_mb": round(peak_mb),
                "stages_s": timings,
                "content_hash": content_hash,
                "same_as_local": same,
                "load_avg_before": load_before,
                "load_avg_after": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
