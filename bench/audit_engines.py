"""Benchmark: the audit on the local engine and on Ray (the corpus statistics as map_batches).

    python bench/audit_engines.py --rows 50000 --num-cpus 2

The corpus is the embedded synthetic one with BadNet planted at 1 % (a build's train split, made
here, no download). Reports seconds and rows/s of ``audit_table`` per engine (Ray start-up timed
apart), whether the flags and scores are identical, peak RSS of this process (Ray workers are
separate processes and not included) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

import mbdata
from mbdata.audit import audit_table
from mbdata.recipe import recipe_from_dict


def corpus(rows: int, tmp: Path):
    recipe = recipe_from_dict(
        {
            "name": "audit-bench",
            "version": "1.0.0",
            "seed": 1,
            "sources": [{"name": "synth", "kind": "synthetic", "count": rows}],
            "eval": {"size": 10},
            "attacks": [{"preset": "badnet", "rate": 0.01}],
        }
    )
    return mbdata.open_build(mbdata.build(recipe, tmp / "corpus")).table("train")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--num-cpus", type=int, default=2)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        table = corpus(args.rows, Path(tmp))
    audit_table(table.slice(0, 2000), progress=False)  # warm imports
    began = time.perf_counter()
    local = audit_table(table, progress=False)
    local_s = time.perf_counter() - began
    rss_local = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import ray

    began = time.perf_counter()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    ray_init = time.perf_counter() - began
    audit_table(table.slice(0, 2000), progress=False, engine="ray")  # warm the workers
    began = time.perf_counter()
    on_ray = audit_table(table, progress=False, engine="ray")
    ray_s = time.perf_counter() - began
    ray.shutdown()
    print(
        json.dumps(
            {
                "rows": table.num_rows,
                "distinct_analysed": len(local.distinct),
                "local_s": round(local_s, 2),
                "local_rows_per_s": round(table.num_rows / local_s),
                "local_phases_s": {k: round(v, 2) for k, v in local.seconds.items()},
                "ray_init_s": round(ray_init, 2),
                "ray_s": round(ray_s, 2),
                "ray_rows_per_s": round(table.num_rows / ray_s),
                "ray_phases_s": {k: round(v, 2) for k, v in on_ray.seconds.items()},
                "same_flags": bool(np.array_equal(local.flagged, on_ray.flagged)),
                "same_scores": bool(np.array_equal(local.score, on_ray.score)),
                "flagged": local.n_flagged,
                "peak_rss_mb_local_phase": round(rss_local),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "load_avg_before": load_before,
                "load_avg_after": os.getloadavg()[0],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
