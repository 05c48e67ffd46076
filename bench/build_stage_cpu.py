"""CPU seconds per build stage: the bench for a loaded machine, where wall time means nothing.

    python bench/build_stage_cpu.py --rows 1000000                       # bench/build.py's recipe
    python bench/build_stage_cpu.py --rows 1000000 --recipe recipes/demo.yaml
    python bench/build_stage_cpu.py --rows 200000 --profile /tmp/build.prof   # + cProfile

Builds the same recipe as ``bench/build.py`` (local engine) and prints the CPU seconds
(``time.process_time``) of each stage and of writing the build, the total, and the content hash.
Compare runs made back to back, interleaved: on a busy machine CPU seconds drift too.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build import bench_recipe  # noqa: E402  (bench/build.py)

import mbdata  # noqa: E402
from mbdata.recipe import recipe_from_dict  # noqa: E402

build_module = sys.modules["mbdata.build"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--recipe", default=None, help="a recipe file to scale (default: built-in)")
    parser.add_argument("--profile", default=None, help="write a cProfile of the build here")
    args = parser.parse_args()
    cpu: dict[str, float] = {}
    run_stage, write_build = build_module.run_stage, build_module.write_build

    def timed_stage(stage, table, ctx):
        began = time.process_time()
        out = run_stage(stage, table, ctx)
        cpu[stage.name] = round(time.process_time() - began, 2)
        return out

    def timed_write(*a, **k):
        began = time.process_time()
        out = write_build(*a, **k)
        cpu["write"] = round(time.process_time() - began, 2)
        return out

    build_module.run_stage, build_module.write_build = timed_stage, timed_write
    recipe = recipe_from_dict(bench_recipe(args.rows, args.recipe, "local"))
    profile = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory() as tmp:
        began = time.process_time()
        if profile:
            profile.enable()
        out = mbdata.build(recipe, Path(tmp) / "out")
        if profile:
            profile.disable()
            profile.dump_stats(args.profile)
        total = round(time.process_time() - began, 2)
        content_hash = json.loads((out / "manifest.json").read_text())["content_hash"]
    print(
        json.dumps(
            {
                "rows": args.rows,
                "recipe": args.recipe or "built-in",
                "cpu_s": total,
                "stages_cpu_s": cpu,
                "content_hash": content_hash,
            }
        )
    )


if __name__ == "__main__":
    main()
