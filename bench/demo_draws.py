"""The demo as a distribution: `mb run` over seeds x CPU kernel sets, one table of every draw.

One draw of the tiny-model demo is one sample of a chaotic process: floating-point rounding alone
(AVX2 against AVX-512 kernels, same data bytes) moved MB-Defense's ASR from .04 to .53 (issue 22).
This script runs the recipe once per (seed, kernel set), each in its own process with the kernel
set forced through the environment, and writes every draw plus the mean and range per run:

    python bench/demo_draws.py --out /tmp/draws --seeds 0 1 2 3 4 --kernels native avx2
    python bench/demo_draws.py --out /tmp/draws --seeds 0 1 --kernels avx2 scalar \\
        --set defense.rate=0.03 --parallel 2

``--set KEY=VALUE`` changes the recipe as ``mb sweep --set`` does (one value each). A seed ``s``
sets both the build seed (``seed``: which rows are poisoned, held out, recovered) and the train
seed (``train.seed``: initialisation and data order). Kernel sets:

- ``native``: what torch picks on this machine (AVX-512 where the CPU has it);
- ``avx2``: AVX2 forced (``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
  ONEDNN_MAX_CPU_ISA=AVX2``), the same kernels on any x86-64 machine with AVX2;
- ``scalar``: ATen's non-vectorised kernels with MKL/oneDNN held to SSE4.2 (no FMA): a third
  rounding, for a machine that has no AVX-512 to compare with.

Each draw's ``report.json`` records the capability torch really used (``environment``). Finished
draws are kept: re-running the command runs only the missing ones. ``--check BOUNDS.json``
exits 1 when a draw leaves the bounds (the same check CI runs on the demo, ``bench/demo_check.py``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from demo_check import check_report, draw_summary, load_bounds  # noqa: E402

KERNELS: dict[str, dict[str, str]] = {
    "native": {},
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
    },
    "scalar": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
    },
}


def draw_recipe(recipe: dict[str, Any], seed: int, sets: list[str]) -> dict[str, Any]:
    """The recipe of one draw: ``seed`` and ``train.seed`` set to ``seed``, then ``--set``."""
    from mbtrain.experiment.sweep import parse_set, set_path

    data = copy.deepcopy(recipe)
    data["seed"] = seed
    data.setdefault("train", {})["seed"] = seed
    for expr in sets:
        key, values = parse_set(expr)
        if len(values) != 1:
            raise SystemExit(f"--set {expr}: one value per key here (this is not a grid)")
        set_path(data, key, values[0])
    return data


def run_draw(recipe_file: Path, out: Path, kernel: str, mb: str, threads: int) -> float:
    """``mb run`` one draw in a fresh process under ``kernel``; returns its wall seconds."""
    env = {**os.environ, **KERNELS[kernel]}
    started = time.perf_counter()
    log = out.with_suffix(".log")
    with log.open("w", encoding="utf-8") as fh:
        cmd = [mb, "run", str(recipe_file), "-o", str(out), "--quiet", "--threads", str(threads)]
        proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{out}: mb run exited {proc.returncode}; see {log}")
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=HERE.parent / "recipes" / "demo.yaml")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--kernels", nargs="+", choices=sorted(KERNELS), default=["native", "avx2"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--parallel", type=int, default=1, help="draws run side by side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per training job")
    ap.add_argument("--check", type=Path, help="bounds JSON (default: the demo's own)")
    ap.add_argument("--mb", default=str(Path(sys.executable).with_name("mb")))
    args = ap.parse_args()

    recipe = yaml.safe_load(args.recipe.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    for seed in args.seeds:
        for kernel in args.kernels:
            name = f"seed{seed}-{kernel}"
            recipe_file = args.out / f"{name}.yaml"
            recipe_file.write_text(
                yaml.safe_dump(draw_recipe(recipe, seed, args.set), sort_keys=False),
                encoding="utf-8",
            )
            jobs.append((seed, kernel, recipe_file, args.out / name))

    def one(job: tuple[int, str, Path, Path]) -> dict[str, Any]:
        seed, kernel, recipe_file, out = job
        wall_file = out.with_suffix(".wall")
        if not (out / "report.json").exists():
            wall_file.write_text(f"{run_draw(recipe_file, out, kernel, args.mb, args.threads)}\n")
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        row = {"seed": seed, "kernel": kernel, **draw_summary(report)}
        if wall_file.exists():
            row["wall_s"] = round(float(wall_file.read_text()), 1)
        print(json.dumps(row), flush=True)
        return row

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        rows = list(pool.map(one, jobs))
    (args.out / "draws.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    bounds = load_bounds(args.check)
    table, failures = summarise(rows, bounds)
    (args.out / "draws.md").write_text(table, encoding="utf-8")
    print(table)
    sys.exit(1 if failures else 0)


def summarise(rows: list[dict[str, Any]], bounds: dict[str, Any]) -> tuple[str, list[str]]:
    """Markdown: one line per draw, then mean [min, max] per run and metric; the bound check."""
    runs = [k for k in rows[0]["runs"]] if rows else []
    lines = ["| draw | capability | wall s | " + " | ".join(runs) + " |"]
    lines.append("|" + "---|" * (3 + len(runs)))
    failures: list[str] = []
    for r in rows:
        cells = [_cell(r["runs"][run]) for run in runs]
        lines.append(
            f"| seed {r['seed']} {r['kernel']} | {r.get('capability', '?')} | "
            f"{r.get('wall_s', '-')} | " + " | ".join(cells) + " |"
        )
        failures += [f"seed {r['seed']} {r['kernel']}: {f}" for f in check_report(r, bounds)]
    lines.append("")
    lines.append("Per run, mean [min, max] over the draws:")
    lines.append("")
    for run in runs:
        metrics = sorted({m for r in rows for m in r["runs"][run]})
        parts = []
        for m in metrics:
            vals = [r["runs"][run][m] for r in rows if r["runs"][run].get(m) is not None]
            if vals:
                parts.append(f"{m} {sum(vals) / len(vals):.3f} [{min(vals):.3f}, {max(vals):.3f}]")
        lines.append(f"- **{run}**: " + "; ".join(parts))
    lines.append("")
    lines.append(
        f"Bounds ({bounds['source']}): "
        + ("every draw inside." if not failures else f"{len(failures)} failure(s):")
    )
    lines += [f"- {f}" for f in failures]
    return "\n".join(lines) + "\n", failures


def _cell(metrics: dict[str, Any]) -> str:
    asr = "/".join(f"{v:.2f}" for k, v in sorted(metrics.items()) if k.startswith("asr."))
    out = f"{metrics.get('cacc', float('nan')):.3f} / {asr}"
    if metrics.get("dtr") is not None:
        out += f" (dtr {metrics['dtr']:.2f})"
    return out


if __name__ == "__main__":
    main()
