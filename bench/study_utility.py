"""The utility log-likelihood (mbtrain.evaluation.likelihood) of every trained model of a sweep
point, computed afterwards from the saved model folders, without generating again.

Why: a sweep evaluated before the metric existed (or one whose generations are all that is
wanted) gets the teacher-forced log-likelihood per answer token of the clean reference answers,
on the same held-out prompts and with the same encoding as ``mb run``'s evaluation, in seconds per
model instead of a new generation pass. ONION's row is the attacked model on unfiltered prompts,
so it is left out (its filter needs the reference LM; ``mb run`` scores it on the filtered
prompts). Each run is compared with the attacked model by the paired bootstrap over the same
clean prompts (:func:`mbtrain.evaluation.likelihood.versus`, as in the report).

    python bench/study_utility.py runs/real-study-cpu [--out utility.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mbtrain.config import ModelSettings
from mbtrain.engine.builds import open_training_build
from mbtrain.engine.models import load_model
from mbtrain.evaluation.evaluate import attack_sets, eval_rows
from mbtrain.evaluation.likelihood import utility, versus
from mbtrain.runs.stages import formatter_for, make_runtime

RUNS = ["attacked", "clean_fft", "fine_mixing", "trigger_aug", "mb_stage1", "mb_defense"]


def point_seed(point: Path) -> int:
    marker = json.loads((point / "models" / "attacked" / "mbtrain_model.json").read_text())
    return int(marker["train_config"]["seed"])  # the point's train.seed


def score_point(point: Path, build_dir: Path, seed: int) -> dict:
    build = open_training_build(build_dir)
    cfg = build.train_config()
    runtime = make_runtime(cfg, progress=False)
    clean, triggered = eval_rows(build, cfg.eval.limit, cfg.eval, False)
    groups = [("eval_clean", clean)] + list(triggered.items())
    flat = [r for _, rows in groups for r in rows]
    attacks = attack_sets(build, triggered)
    out = {}
    for run in RUNS:
        folder = point / "models" / run
        if not (folder / "mbtrain_model.json").exists():
            continue
        model, tokenizer = load_model(folder, ModelSettings())
        model.to(runtime.device)
        fmt = formatter_for(tokenizer, cfg)
        block, _ = utility(model, fmt, groups, flat, attacks, seed=seed, device=runtime.device)
        out[run] = block
    # the report's own comparison (paired bootstrap over the same clean prompts, the block's seed)
    for run, diff in versus({run: {"loglik": block} for run, block in out.items()}).items():
        out[run]["versus_attacked"] = diff
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    builds = sorted((args.sweep / "builds").iterdir())
    if len(builds) != 1:
        raise SystemExit(f"{args.sweep}: expected one build, found {len(builds)}")
    result = {}
    for point in sorted((args.sweep / "points").iterdir()):
        if not (point / "models" / "mb_defense" / "mbtrain_model.json").exists():
            continue  # unfinished point
        seed = point_seed(point)
        scores = score_point(point, builds[0], seed)
        result[point.name] = {"seed": seed, "runs": scores}
        for run, b in scores.items():
            c, a, v = b["clean"], b["attack"], b.get("versus_attacked") or {}
            print(
                f"{point.name} seed {seed} {run:12s} clean {c['mean']:.4f} [{c['low']:.4f}, "
                f"{c['high']:.4f}]  triggered {a['mean']:.4f}  vs attacked "
                f"{v.get('mean', 0):+.4f} [{v.get('low', 0):+.4f}, {v.get('high', 0):+.4f}]",
                flush=True,
            )
    if args.out:
        for p in result.values():  # per-prompt values are long: keep the summaries
            for b in p["runs"].values():
                b.pop("clean_rows", None)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
