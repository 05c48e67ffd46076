"""Stage 2 alone, over seeds and settings, on one fixed MB stage-1 model: what stage 2 costs in
CACC and what it removes in ASR, without the noise of retraining stage 1.

A finished ``mb run``/``mb demo`` folder holds the build (``DIR/data``) and the models
(``DIR/models/mb_stage1``, ``attacked``). For every seed and every ``--set`` variant this trains
MB stage 2 (or, with ``method=clean-fft``, the Clean-FFT baseline from the attacked model) into
``--out`` and evaluates it exactly as ``mb run`` does. One JSON line per run.

    python bench/stage2_seeds.py runs/demo --out /tmp/s2 --seeds 0 1 2
    python bench/stage2_seeds.py runs/demo --out /tmp/s2 --seeds 0 1 2 --set lr=0.0001
    python bench/stage2_seeds.py runs/demo --out /tmp/s2 --set epochs=1 --set method=clean-fft

Keys of ``--set`` are ``train.stage2`` fields (lr, epochs, lam, batch_size, select...).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from mbtrain.engine.builds import open_training_build
from mbtrain.experiment.pipeline import evaluate_run, train_run
from mbtrain.runs.registry import RUNS
from mbtrain.runs.stages import make_runtime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a finished mb run / mb demo folder")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()

    build = open_training_build(args.run_dir / "data")
    base_cfg = build.train_config()
    changes = dict(item.split("=", 1) for item in args.set)
    method = changes.pop("method", "mb")
    stage2 = base_cfg.stage2
    for key, value in changes.items():
        stage2 = dataclasses.replace(stage2, **{key: type(getattr(stage2, key))(value)})
    methods = RUNS.aliases("recovery")  # the registry's CLI aliases: mb, clean-fft, trigger-aug...
    if method not in methods:
        raise SystemExit(f"method={method}: one of {', '.join(sorted(methods))}")
    run = RUNS.get(methods[method])
    name, parent = run.name, args.run_dir / "models" / run.parent
    base = args.run_dir / "models" / "base" if run.uses_base else None
    recovery = build.rows("recovery")
    recovery_eval = build.rows("recovery_eval") if build.has("recovery_eval") else []
    tag = "-".join([method] + [f"{k}{v}" for k, v in sorted(changes.items())])
    for seed in args.seeds:
        cfg = dataclasses.replace(base_cfg, seed=seed, stage2=stage2)
        runtime = make_runtime(cfg, progress=False)
        out = args.out / f"{tag}-seed{seed}"
        started = time.perf_counter()
        model = train_run(
            name,
            parent,
            recovery,
            out / "model",
            cfg,
            runtime,
            recovery_eval=recovery_eval,
            base=base,
        )
        seconds = time.perf_counter() - started
        metrics = evaluate_run(model, build, cfg, out / "eval", runtime, name)
        marker = json.loads((model / "mbtrain_model.json").read_text(encoding="utf-8"))
        print(
            json.dumps(
                {
                    "run": tag,
                    "seed": seed,
                    "train_seconds": round(seconds, 1),
                    "selected_epoch": marker.get("selected_epoch"),
                    "cacc": metrics.get("cacc"),
                    "asr": metrics.get("asr"),
                    "aacc": metrics.get("aacc"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
