"""Benchmark: `mb build` at growing sizes (issue 28: is peak memory flat, is rows/s kept?).

    PYTHONPATH=$PWD nice -n 19 .venv/bin/python bench/build_scale.py                 # 1M, 3M, 10M
    PYTHONPATH=$PWD nice -n 19 .venv/bin/python bench/build_scale.py --rows 1000000 3000000
    PYTHONPATH=$PWD .venv/bin/python bench/build_scale.py --engine process --workers 2
    PYTHONPATH=$PWD .venv/bin/python bench/build_scale.py --per-batch     # CPU s per batch of a step

Each size is one fresh process running ``bench/build.py`` (the built-in recipe: two attacks,
four defensive triggers, recovery and eval splits) under ``/usr/bin/time -v`` when it exists, so
the peak RSS is that of a whole build (the driver; with ``--engine process`` the workers' peak is
reported apart, from ``RUSAGE_CHILDREN`` of this wrapper). Prints one JSON record per size and a
Markdown table with the machine, the load average before/after and the command, for
bench/RESULTS.md. A size that fails (e.g. killed for memory) is reported as such, not skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(rows: int, engine: str, workers: int | None) -> dict:
    """One build of ``rows`` rows in a fresh process; its JSON record plus peak RSS and wall."""
    cmd = [sys.executable, str(HERE / "build.py"), "--rows", str(rows), "--engine", engine]
    env = dict(os.environ)
    if workers:
        env["MB_WORKERS"] = str(workers)
    timer = shutil.which("time") and Path("/usr/bin/time").exists()
    full = (["/usr/bin/time", "-v"] if timer else []) + cmd
    load_before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(full, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    record: dict = {
        "rows": rows,
        "engine": engine,
        "workers": workers,
        "returncode": done.returncode,
    }
    if done.returncode == 0:
        text = done.stdout
        record.update(json.loads(text[text.index("{") :]))
    else:
        record["error"] = done.stderr.strip().splitlines()[-3:]
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if found:
        record["peak_rss_mb_time_v"] = round(int(found.group(1)) / 1024)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    record["peak_rss_mb_any_child"] = round(children)
    record["wall_s_process"] = round(wall, 2)
    record["load_avg_before"] = [round(x, 2) for x in load_before]
    record["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return record


def per_batch_costs(repeats: int = 5) -> dict:
    """CPU seconds of one batch of each step a cluster would spread (median of ``repeats``): the
    synthetic generator (16,384 rows), the prompt texts of the hold-out/leak check (16,384 rows)
    and the dedup sketch (8,192 rows, default settings), for the estimate in docs/data.md."""
    import functools
    import statistics

    from mbdata.dedup import DedupConfig
    from mbdata.dedup.sketch import NearParams, SketchStep, sketch_items
    from mbdata.engines.batches import BATCH_ROWS
    from mbdata.stages.sources import synthetic_batch
    from mbdata.stages.splits import prompt_text_batch

    def cpu(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            times.append(time.process_time() - start)
        return round(statistics.median(times), 4)

    generate = functools.partial(synthetic_batch, name="synth", seed=0, tasks=None)
    batch = generate(0, BATCH_ROWS)
    config = DedupConfig()
    step = SketchStep("all", (NearParams.from_config(config, 1_000_000),), keep_shingles=True)
    item = next(sketch_items(batch.slice(0, 8192), None, 8192))
    return {
        "synthetic_generate_16384_rows_cpu_s": cpu(lambda: generate(0, BATCH_ROWS)),
        "prompt_texts_16384_rows_cpu_s": cpu(lambda: prompt_text_batch(batch)),
        "dedup_sketch_8192_rows_cpu_s": cpu(lambda: step(item)),
        "batch_bytes_16384_rows": batch.nbytes,
    }


def table(records: list[dict]) -> str:
    lines = [
        "| rows | engine | wall s (build) | rows/s | CPU s (driver) | rows / CPU s | peak RSS MiB "
        "| vs first size | load before -> after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = None
    for r in records:
        if r["returncode"] != 0:
            lines.append(f"| {r['rows']:,} | {r['engine']} | failed: {r.get('error')} |")
            continue
        peak = r.get("peak_rss_mb_time_v") or r.get("peak_rss_mb")
        base = base or peak
        lines.append(
            f"| {r['rows']:,} | {r['engine']} | {r['seconds']} | {r['rows_per_s']:,} | {r['cpu_s']} "
            f"| {r['rows_per_cpu_s']:,} | {peak:,} | {peak / base:.2f}x "
            f"| {r['load_avg_before'][0]} -> {r['load_avg_after'][0]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--engine", default="local")
    parser.add_argument("--workers", type=int, default=None, help="MB_WORKERS for the executor")
    parser.add_argument("--out", default=None, help="also write the records as JSON here")
    parser.add_argument(
        "--per-batch", action="store_true", help="only measure the per-batch step costs"
    )
    args = parser.parse_args()
    if args.per_batch:
        print(json.dumps(per_batch_costs(), indent=2))
        return
    records = []
    for rows in args.rows:
        record = run_one(rows, args.engine, args.workers)
        print(json.dumps(record), flush=True)
        records.append(record)
    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"command: {' '.join(sys.argv)}")
    print(table(records))
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
