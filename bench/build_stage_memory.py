"""Benchmark: peak memory of `mb build` per stage (issue 28: which stage sets the peak, and does
it grow with the corpus?).

    PYTHONPATH=$PWD .venv/bin/python bench/build_stage_memory.py --rows 1000000
    PYTHONPATH=$PWD .venv/bin/python bench/build_stage_memory.py --rows 3000000

Builds the built-in recipe of ``bench/build.py`` once and prints, for every stage and for the
writing, the peak resident set while it ran (Linux: ``VmHWM`` reset through
``/proc/self/clear_refs`` before each one) and what stays resident after it, split into
anonymous memory and mapped files (the spilled corpus's pages count as mapped files).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build import bench_recipe  # noqa: E402

import mbdata  # noqa: E402
from mbdata.recipe import recipe_from_dict  # noqa: E402


def status() -> dict[str, int]:
    """MiB of VmRSS, VmHWM, RssAnon and RssFile of this process."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024
    return out


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    build_module = importlib.import_module("mbdata.build")
    run_stage = build_module.run_stage
    write_build = build_module.write_build

    def measured_stage(stage, table, ctx):
        reset_peak()
        out = run_stage(stage, table, ctx)
        s = status()
        print(
            f"| {stage.name} | {s['VmHWM']} | {s['VmRSS']} | {s['RssAnon']} | {s['RssFile']} |",
            flush=True,
        )
        return out

    def measured_write(*a, **k):
        reset_peak()
        out = write_build(*a, **k)
        s = status()
        print(f"| writing | {s['VmHWM']} | {s['VmRSS']} | {s['RssAnon']} | {s['RssFile']} |")
        return out

    build_module.run_stage = measured_stage
    build_module.write_build = measured_write
    print(f"rows: {args.rows:,}")
    print("| stage | peak MiB | after MiB | anonymous | mapped files |\n|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        mbdata.build(recipe_from_dict(bench_recipe(args.rows, None, "local")), Path(tmp) / "out")


if __name__ == "__main__":
    main()
