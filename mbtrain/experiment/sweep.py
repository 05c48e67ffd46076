"""``mb sweep``: a grid of MB-Defense runs over any recipe keys, sharing the work points have in
common, resumable, written as one table.

A grid is given as ``--set KEY=V1,V2`` (a dotted path into the recipe, list items by index:
``defense.rate``, ``train.stage2.lam``, ``sources.0.path``; each value a YAML scalar or a
``[flow, list]``). Every point is the recipe with its values set, validated like any recipe.

Work shared between points (so a grid costs what its distinct settings cost, not points x a run):

- **one build per data setting**: the recipe without its ``train:`` block, resolved (every
  default filled in, so a key written out at its default is the same setting as one left out),
  decides the build (``DIR/builds/<data key>``); every point with the same data setting trains on
  that one folder.
- **the attacked model and MB stage 1 once per data + stage-1 setting** (``train.model``,
  ``train.stage1``, ``train.seed``): a later point starts with hard links to a finished
  point's ``base``, ``attacked`` and ``mb_stage1`` model folders (and their evaluations and
  diagnostics), and the pipeline's own resume rules reuse them: a folder is reused only when its
  recorded resume key matches what this point would train, so a wrong share is an error, never a
  silent mix. Points that also share stage 2 and the baselines (they differ in ``train.eval``
  only) share every model.
- **finished points are skipped**: a point is finished when ``DIR/points/<id>/sweep_point.json``
  exists (written last, atomically). An interrupted point is simply run again: the pipeline skips
  the steps it finished and resumes a stage from its checkpoint.

Seeds are keys like any other (``--set train.seed=0,1,2``); the table groups points that differ
only in keys named ``seed`` and gives mean ± standard deviation over them.

Outputs (each atomic, rewritten after every point so a partial sweep can be read):
``DIR/sweep.json`` (format ``mbtrain.sweep/1``), ``DIR/sweep.md``, ``DIR/sweep.parquet`` (one row
per point) and ``DIR/sweep.png`` (ASR / CACC / merging per point).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mbdata.core.atomic import (
    atomic_write,
    atomic_write_text,
    check_output_dir,
    mark_dir,
    written_by_us,
)
from mbdata.core.errors import InputError, MBError, RecipeError
from mbtrain.runs.registry import RUNS

FORMAT = "mbtrain.sweep/1"
POINT_DONE = "sweep_point.json"


def shared_models(share: str, evaluated: bool = False) -> tuple[str, ...]:
    """The model folders points with the same ``share`` key have in common (mbtrain.runs.registry);
    the base model goes with stage 1. ``evaluated``: also the runs that train nothing (ONION),
    whose evaluations are shared (and redone where the settings differ: the evaluation's own
    cache key decides)."""
    names = RUNS.sharing(share, evaluated)  # type: ignore[arg-type]
    return ("base", *names) if share == "stage1" else names


# stage-2 settings the baselines (plain cross-entropy) do not use
MB_ONLY = ("lam", "normalize")


# ----------------------------------------------------------------------------- the grid


def split_values(text: str) -> list[str]:
    """Split ``V1,V2`` on top-level commas (commas inside ``[...]`` / ``{...}`` stay)."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def parse_set(expr: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2`` -> (KEY, [parsed V1, parsed V2]); each value parsed as YAML."""
    key, sep, values = expr.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise InputError(
            f"--set {expr!r}: expected KEY=VALUE[,VALUE...] (e.g. defense.rate=0.01,0.04)"
        )
    if any(not part for part in key.split(".")):
        raise InputError(f"--set {expr!r}: {key!r} is not a dotted key path")
    parsed = []
    for raw in split_values(values):
        try:
            parsed.append(yaml.safe_load(raw.strip()) if raw.strip() else "")
        except yaml.YAMLError:
            raise InputError(f"--set {key}: {raw!r} is not a YAML value") from None
    return key, parsed


def set_path(
    data: dict[str, Any], key: str, value: Any, defaults: dict[str, Any] | None = None
) -> None:
    """Set ``data[a][b][0][c] = value`` for ``key`` ``a.b.0.c`` (list items must exist).

    A block the recipe leaves out is created from ``defaults`` (the recipe resolved with every
    default filled in) where that has it, so ``--set defense.behavior.words=4`` changes one key
    of the default behaviour instead of replacing it with ``{words: 4}``; else it starts empty."""
    node: Any = data
    fallback: Any = defaults
    parts = key.split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise InputError(
                    f"--set {key}: {where!r}: the recipe has {len(node)} items "
                    "there; use an index 0.." + str(len(node) - 1)
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
                fallback = _child(fallback, int(part))
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                fallback = _child(fallback, part)
                if node.get(part) is None:
                    node[part] = copy.deepcopy(fallback) if isinstance(fallback, dict) else {}
                node = node[part]
        else:
            raise InputError(f"--set {key}: {'.'.join(parts[:i])!r} is a value, not a block")


def _child(node: Any, key: str | int) -> Any:
    """``node[key]`` of the defaults tree, or None where it has no such branch."""
    if isinstance(node, dict) and isinstance(key, str):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and key < len(node):
        return node[key]
    return None


def grid(sets: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the ``--set`` values, first key slowest."""
    keys = [k for k, _ in sets]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise InputError(
            f"--set: {', '.join(twice)} given twice; give each key once, its values "
            "comma-separated (--set KEY=A,B)"
        )
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in sets))]


def _digest(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclasses.dataclass
class Point:
    """One grid point: its values, its full recipe and the keys that decide what it shares."""

    index: int
    values: dict[str, Any]
    recipe: dict[str, Any]
    data_key: str  # the build (everything outside `train:`)
    stage1_key: str  # + train.model, train.stage1, train.seed
    baseline_key: str  # + train.stage2 (without lam / normalize), train.baselines
    stage2_key: str  # + train.stage2
    recipe_key: str  # the whole resolved recipe

    @property
    def id(self) -> str:
        return "pt-" + self.recipe_key[:12]

    @property
    def group(self) -> tuple:
        """Points that differ only in seed keys form one group in the table."""
        return tuple(
            (k, json.dumps(v, default=str))
            for k, v in self.values.items()
            if k.split(".")[-1] != "seed"
        )


def _train_block(recipe: dict[str, Any]) -> dict[str, Any]:
    return dict(recipe.get("train") or {})


def make_point(
    index: int,
    values: dict[str, Any],
    recipe: dict[str, Any],
    resolved: dict[str, Any] | None = None,
) -> Point:
    """A point and its sharing keys. The keys (and the id) are digests of ``resolved``, the
    recipe with every default filled in, when given: two spellings of one setting (a key left
    to its default, or written out) share their build and models."""
    canonical = resolved if resolved is not None else recipe
    train = _train_block(canonical)
    data = {k: v for k, v in canonical.items() if k != "train"}
    data_key = _digest(data)
    stage1 = {
        "data": data_key,
        "model": train.get("model"),
        "stage1": train.get("stage1"),
        "seed": train.get("seed"),
    }
    stage1_key = _digest(stage1)
    stage2 = dict(train.get("stage2") or {})
    baseline_key = _digest(
        {
            "stage1": stage1_key,
            "baselines": train.get("baselines"),
            "stage2": {k: v for k, v in stage2.items() if k not in MB_ONLY},
        }
    )
    stage2_key = _digest({"stage1": stage1_key, "stage2": stage2})
    return Point(
        index, values, recipe, data_key, stage1_key, baseline_key, stage2_key, _digest(canonical)
    )


def plan(recipe_path: str | Path, sets: list[tuple[str, list[Any]]]) -> tuple[Any, list[Point]]:
    """The points of the grid, each validated as a recipe (and its ``train:`` block) before any
    work starts. Returns (base LoadedRecipe, points)."""
    from mbdata.core.config import from_mapping, to_mapping
    from mbdata.recipe import load_recipe, recipe_from_dict
    from mbtrain.config import TrainConfig

    base = load_recipe(recipe_path, check_files=False)
    raw = yaml.safe_load(Path(recipe_path).read_text(encoding="utf-8"))
    defaults = base.resolved
    defaults["train"] = to_mapping(from_mapping(TrainConfig, raw.get("train"), "train"))
    points = []
    for i, values in enumerate(grid(sets) if sets else [{}]):
        data = copy.deepcopy(raw)
        for key, value in values.items():
            set_path(data, key, value, defaults)
        where = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "the recipe"
        try:
            loaded = recipe_from_dict(data, base_dir=base.base_dir)
            train = from_mapping(TrainConfig, data.get("train"), "train")
        except MBError as exc:
            raise RecipeError(f"{recipe_path}: sweep point {where}: {exc}") from None
        resolved = {**loaded.resolved, "train": to_mapping(train)}
        points.append(make_point(i, values, data, resolved))
    return base, points


def describe(points: list[Point]) -> str:
    """What a grid will cost before it runs: points, builds and trainings after sharing."""
    n_data = len({p.data_key for p in points})
    n_stage1 = len({p.stage1_key for p in points})
    n_base = len({p.baseline_key for p in points})
    n_mb = len({p.stage2_key for p in points})
    shorts = RUNS.shorts()
    # a run switched off (train.baselines.NAME: false) in every point is not trained at all
    wanted = {"base"} | {run.name for p in points for run in RUNS.enabled(_train_config(p))}

    def models(share: str) -> str:
        names = [n for n in shared_models(share) if n in wanted]
        return ", ".join(shorts.get(n, n) for n in names) or "none"

    trained_baselines = models("baseline")
    baselines = f", {n_base} x ({trained_baselines})" if trained_baselines != "none" else ""
    head = (
        f"{len(points)} points: {n_data} builds, {n_stage1} x ({models('stage1')})"
        f"{baselines}, {n_mb} x {models('stage2')}; "
        f"{len(points)} evaluations of MB-Defense"
    )
    lines = [head] + [
        f"  {p.id}  " + (", ".join(f"{k}={v!r}" for k, v in p.values.items()) or "recipe")
        for p in points
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- running


def link_tree(src: Path, dst: Path) -> None:
    """Copy a finished folder as hard links (same disk, no extra space; every mbtrain output is
    replaced by rename, never edited in place, so the copies stay independent), falling back to
    a plain copy across file systems."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp, copy_function=link)
    os.replace(tmp, dst)


def share_from(donor: Path, target: Path, names: tuple[str, ...]) -> list[str]:
    """Give ``target`` the finished model folders (and evaluations) ``names`` of ``donor`` that it
    lacks; returns what was shared."""
    from mbtrain.engine.models import is_model_folder

    shared = []
    for name in names:
        src, dst = donor / "models" / name, target / "models" / name
        if is_model_folder(src) and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            link_tree(src, dst)
            shared.append(name)
        ev_src, ev_dst = donor / "eval" / name, target / "eval" / name
        if (ev_src / "metrics.json").is_file() and not ev_dst.exists():
            ev_dst.parent.mkdir(parents=True, exist_ok=True)
            link_tree(ev_src, ev_dst)
    return shared


def flat_metrics(report: dict[str, Any], diagnostics: dict[str, Any] | None) -> dict[str, float]:
    """One number per column: per run CACC, ASR per attack and mean, defensive response rate,
    merging rate (mean over attacks), the utility log-likelihood of the clean answers on clean
    prompts (``ll_clean``) and under the attack triggers (``ll_attack``) with their bootstrap
    bounds (``_low``/``_high``); the diagnostics' summary."""
    out: dict[str, float | None] = {}
    for run, m in report.get("runs", {}).items():
        out[f"{run}.cacc"] = m.get("cacc")
        asr = m.get("asr") or {}
        for attack, v in asr.items():
            out[f"{run}.asr.{attack}"] = v
        out[f"{run}.asr_mean"] = _mean(asr.values())
        out[f"{run}.dtr"] = _mean((m.get("defense_trigger_rate") or {}).values())
        out[f"{run}.merging"] = _mean((m.get("merging_rate") or {}).values())
        reverse = dict(m.get("defense_response_rate") or {})
        out[f"{run}.clean_to_defense"] = reverse.pop("eval_clean", None)
        out[f"{run}.attack_to_defense"] = _mean(reverse.values())
        ll = m.get("loglik") or {}
        for part in ("clean", "attack"):
            s = ll.get(part) or {}
            for key, suffix in (("mean", ""), ("low", "_low"), ("high", "_high")):
                out[f"{run}.ll_{part}{suffix}"] = s.get(key)
    for name, s in ((diagnostics or {}).get("summary") or {}).items():
        out[f"diag.{name}"] = s
    out["seconds"] = (report.get("timings") or {}).get("total")
    return {k: v for k, v in out.items() if v is not None}


def _mean(values: Any) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _done(point_dir: Path) -> dict[str, Any] | None:
    path = point_dir / POINT_DONE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def run_sweep(
    recipe: str | Path,
    sets: list[tuple[str, list[Any]]],
    out_dir: str | Path,
    *,
    cfg_override: Callable[[Any], Any] | None = None,
    diagnostics: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Run every point of the grid into ``out_dir`` (resumable) and write the sweep table.

    ``cfg_override`` changes settings that do not change results (device, threads); ``stop_after``
    (tests) stops after that many points were run in this call, as an interruption would."""
    import mbdata
    from mbtrain.engine.builds import open_training_build
    from mbtrain.experiment.pipeline import run_experiment

    base, points = plan(recipe, sets)
    out_dir = Path(out_dir)
    if out_dir.exists() and not written_by_us(out_dir):
        check_output_dir(out_dir, overwrite=True)  # the one-line refusal of a foreign folder
    out_dir.mkdir(parents=True, exist_ok=True)
    mark_dir(out_dir, "sweep")
    stats = {"builds": 0, "points_run": 0, "points_skipped": 0}
    results: dict[str, dict[str, Any]] = {}
    donors: dict[str, Path] = {}  # share key -> the first point folder that made it
    ran = 0
    for point in points:
        point_dir = out_dir / "points" / point.id
        finished = _done(point_dir)
        if finished is not None:
            log(f"sweep: {point.id} {point.values} finished, skipped")
            stats["points_skipped"] += 1
            results[point.id] = finished
            _offer(donors, point, point_dir)
            continue
        if stop_after is not None and ran >= stop_after:
            break
        build_dir = out_dir / "builds" / point.data_key[:12]
        timings: dict[str, float] = {}
        if not (build_dir / "manifest.json").is_file():
            log(f"sweep: build {build_dir.name}")
            started = time.perf_counter()
            loaded = mbdata.recipe_from_dict(point.recipe, base_dir=base.base_dir)
            mbdata.build(loaded, build_dir, overwrite=build_dir.exists())
            timings["build"] = round(time.perf_counter() - started, 3)
            stats["builds"] += 1
        point_dir.mkdir(parents=True, exist_ok=True)
        mark_dir(point_dir, "run")
        shared: list[str] = []
        for key, share in (
            (point.stage1_key, "stage1"),
            (point.baseline_key, "baseline"),
            (point.stage2_key, "stage2"),
        ):
            if key in donors and donors[key] != point_dir:
                shared += share_from(donors[key], point_dir, shared_models(share, True))
                if share == "stage1":
                    _share_diagnostics(donors[key], point_dir)
        log(
            f"sweep: point {point.index + 1}/{len(points)} {point.id} {point.values}"
            + (f" (shared: {', '.join(shared)})" if shared else "")
        )
        build = open_training_build(build_dir)
        cfg = _train_config(point)
        if cfg_override is not None:
            cfg = cfg_override(cfg)
        report = run_experiment(
            build_dir, point_dir, cfg=cfg, progress=progress, log=log, timings=timings
        )
        diag = None
        if diagnostics:
            from mbtrain.evaluation.diagnostics import run_diagnostics

            diag = run_diagnostics(point_dir, build, cfg, log=log)
        record = {
            "id": point.id,
            "index": point.index,
            "values": point.values,
            "data_key": point.data_key,
            "stage1_key": point.stage1_key,
            "baseline_key": point.baseline_key,
            "stage2_key": point.stage2_key,
            "build": str(build_dir.relative_to(out_dir)),
            "shared": shared,
            "metrics": flat_metrics(report, diag),
            "attacks": report.get("attacks", []),
            "graders": report.get("graders", {}),
            "environment": report.get("environment"),
        }
        atomic_write_text(
            point_dir / POINT_DONE, json.dumps(record, indent=2, sort_keys=True, default=str) + "\n"
        )
        results[point.id] = record
        _offer(donors, point, point_dir)
        stats["points_run"] += 1
        ran += 1
        write_table(out_dir, recipe, sets, points, results, stats)
    return write_table(out_dir, recipe, sets, points, results, stats)


def _offer(donors: dict[str, Path], point: Point, point_dir: Path) -> None:
    """A finished point's models can be shared with later points that have the same keys."""
    for key in (point.stage1_key, point.baseline_key, point.stage2_key):
        donors.setdefault(key, point_dir)


def _train_config(point: Point) -> Any:
    from mbdata.core.config import from_mapping
    from mbtrain.config import TrainConfig

    return from_mapping(TrainConfig, point.recipe.get("train"), "train")


def _share_diagnostics(donor: Path, target: Path) -> None:
    src, dst = donor / "diagnostics.json", target / "diagnostics.json"
    if src.is_file() and not dst.exists():
        shutil.copy2(src, dst)


# ----------------------------------------------------------------------------- the table


def aggregate(points: list[Point], results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Group finished points that differ only in seed keys: mean and sample standard deviation
    of every metric (std 0 for a single seed is reported as None)."""
    groups: dict[tuple, list[Point]] = {}
    for p in points:
        if p.id in results:
            groups.setdefault(p.group, []).append(p)
    out = []
    for members in groups.values():
        metrics = [results[p.id]["metrics"] for p in members]
        names = sorted({k for m in metrics for k in m})
        mean, std = {}, {}
        for name in names:
            vals = [m[name] for m in metrics if m.get(name) is not None]
            mean[name] = sum(vals) / len(vals) if vals else None
            std[name] = statistics.stdev(vals) if len(vals) > 1 else None
        values = {k: v for k, v in members[0].values.items() if k.split(".")[-1] != "seed"}
        seeds = [{k: v for k, v in p.values.items() if k.split(".")[-1] == "seed"} for p in members]
        out.append(
            {
                "values": values,
                "n": len(members),
                "seeds": seeds,
                "points": [p.id for p in members],
                "mean": mean,
                "std": std,
            }
        )
    return out


def _cell(group: dict[str, Any], name: str) -> str:
    m, s = group["mean"].get(name), group["std"].get(name)
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m:.3f}" if s is None else f"{m:.3f} ± {s:.3f}"


def _ll_cell(group: dict[str, Any], name: str) -> str:
    """A log-likelihood cell: the mean over seeds (± their std with several seeds) and the
    bootstrap interval (each bound averaged over seeds)."""
    cell = _cell(group, name)
    low, high = group["mean"].get(f"{name}_low"), group["mean"].get(f"{name}_high")
    if cell == "n/a" or low is None or high is None:
        return cell
    return f"{cell} [{low:.3f}, {high:.3f}]"


def swept_runs(doc: dict[str, Any]) -> list[str]:
    """The runs with an ASR in any group, in registry order (unknown ones after them)."""
    made = {k.split(".")[0] for g in doc["groups"] for k in g["mean"] if k.endswith(".asr_mean")}
    return [r for r in RUNS if r in made] + sorted(made - set(RUNS))


def markdown(doc: dict[str, Any]) -> str:
    groups = doc["groups"]
    attacks = doc["attacks"]
    runs = swept_runs(doc)
    keys = list(groups[0]["values"]) if groups else []
    lines = [f"# Sweep: {doc['recipe']}", ""]
    lines.append(
        f"{doc['points_finished']} of {doc['points_total']} points finished "
        f"({doc['stats']['builds']} builds and {doc['stats']['points_run']} points run "
        f"in the last call). Cells: mean over seeds ± sample standard deviation "
        f"(n in the table)."
    )
    lines.append("")
    lines.append(environment_line(doc.get("points", [])))
    if doc.get("heuristic_cacc"):
        lines.append("")
        lines.append(
            "**CACC on free-text rows comes from the token-F1 heuristic** (no "
            "`train.eval.judge`): a rough proxy, not a judged accuracy."
        )
    lines.append("")
    lines.append("## ASR (mean over attacks), CACC, merging")
    lines.append("")
    head = (
        keys
        + ["n", "CACC attacked", "CACC MB-Defense", "log-lik. attacked", "log-lik. MB-Defense"]
        + [f"ASR {r}" for r in runs]
        + ["DTR stage 1", "merging stage 1", "attack->defence stage 1", "clean->defence stage 1"]
        + ["cos shift a/d stage 1"]
    )
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for g in groups:
        cells = [json.dumps(g["values"][k], default=str) for k in keys] + [str(g["n"])]
        cells += [_cell(g, "attacked.cacc"), _cell(g, "mb_defense.cacc")]
        cells += [_ll_cell(g, "attacked.ll_clean"), _ll_cell(g, "mb_defense.ll_clean")]
        cells += [_cell(g, f"{r}.asr_mean") for r in runs]
        cells += [
            _cell(g, "mb_stage1.dtr"),
            _cell(g, "mb_stage1.merging"),
            _cell(g, "mb_stage1.attack_to_defense"),
            _cell(g, "mb_stage1.clean_to_defense"),
            _cell(g, "diag.mb_stage1.shift_cos"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if attacks:
        lines.append("## ASR per attack: " + " / ".join(RUNS.labels().get(r, r) for r in runs))
        lines.append("")
        head = keys + attacks
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for g in groups:
            cells = [json.dumps(g["values"][k], default=str) for k in keys]
            for a in attacks:
                cells.append(" / ".join(_cell(g, f"{r}.asr.{a}").split(" ± ")[0] for r in runs))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if any(f"{r}.ll_clean" in g["mean"] for g in groups for r in runs):
        lines.append(
            "## Utility per run: log-likelihood of the clean answers, clean prompts / "
            "under the attack triggers"
        )
        lines.append("")
        head = keys + [RUNS.labels().get(r, r) for r in runs]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for g in groups:
            cells = [json.dumps(g["values"][k], default=str) for k in keys]
            cells += [
                f"{_ll_cell(g, f'{r}.ll_clean')} / {_ll_cell(g, f'{r}.ll_attack')}" for r in runs
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            "Log-lik.: teacher-forced mean log-likelihood per answer token (nats) of the "
            "reference answers; brackets: the 95% bootstrap interval over prompts (each bound "
            "averaged over seeds); ± the standard deviation over seeds (docs/train.md, "
            "'Utility')."
        )
        lines.append("")
    lines.append("## Merging diagnostics (last-token hidden states, mean over layers)")
    lines.append("")
    head = keys + [
        "cos(attack, defense) attacked",
        "cos(attack, defense) stage 1",
        "cos(attack, clean) stage 1",
        "shift cos attacked",
        "shift cos stage 1",
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for g in groups:
        cells = [json.dumps(g["values"][k], default=str) for k in keys]
        cells += [
            _cell(g, n)
            for n in (
                "diag.attacked.cos_attack_defense",
                "diag.mb_stage1.cos_attack_defense",
                "diag.mb_stage1.cos_attack_clean",
                "diag.attacked.shift_cos",
                "diag.mb_stage1.shift_cos",
            )
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "DTR: defensive response rate; merging: defensive-trigger prompts answered with "
        "an attack's behaviour (Sec 5.2); attack->defence: attack-triggered prompts answered "
        "with any defensive response (merging read the other way), clean->defence the same "
        "share on clean prompts (leakage, not merging); shift cos: cosine between the hidden-state "
        "shift an attack trigger causes and the shift a defensive trigger causes on the "
        "same prompt (docs/sweep.md)."
    )
    return "\n".join(lines)


def environment_line(points: list[dict[str, Any]]) -> str:
    """Which numeric environment (CPU kernels or device, threads, ...) computed the points: one
    line, naming the points of each when they differ (issue 22: kernels alone move results)."""
    from mbtrain.engine.environment import label

    seen: dict[str, list[str]] = {}
    for p in points:
        seen.setdefault(label(p.get("environment")), []).append(p["id"])
    if len(seen) <= 1:
        return f"Numeric environment: {next(iter(seen), 'none yet')}."
    parts = [f"{name} (points {', '.join(ids)})" for name, ids in seen.items()]
    return "Numeric environments differ: " + "; ".join(parts) + "."


def draw(doc: dict[str, Any]) -> Any:
    """ASR (every run but MB stage 1, mean over attacks), CACC (attacked, MB-Defense) and the
    stage-1 merging rate per grid point (error bars: std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = doc["groups"]
    series = [
        (f"ASR {RUNS.labels().get(r, r)}", f"{r}.asr_mean")
        for r in swept_runs(doc)
        if r != "mb_stage1"
    ]
    series += [
        ("CACC attacked", "attacked.cacc"),
        ("CACC MB-Defense", "mb_defense.cacc"),
        ("merging stage 1", "mb_stage1.merging"),
    ]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.4), dpi=100)
    for k, (label, name) in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i in range(len(groups))]
        ys = [g["mean"].get(name) for g in groups]
        es = [g["std"].get(name) or 0.0 for g in groups]
        ax.bar(
            xs,
            [float("nan") if y is None else y for y in ys],
            width,
            yerr=es,
            label=label,
            capsize=2,
        )
    labels = [
        ", ".join(f"{k.split('.')[-1]}={v}" for k, v in g["values"].items()) or "recipe"
        for g in groups
    ]
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(labels, fontsize=7, rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate")
    ax.set_title(f"Sweep: {Path(doc['recipe']).name}", fontsize=10)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    return fig


def write_table(
    out_dir: Path,
    recipe: str | Path,
    sets: list[tuple[str, list[Any]]],
    points: list[Point],
    results: dict[str, dict[str, Any]],
    stats: dict[str, int],
) -> dict[str, Any]:
    """Write sweep.json / sweep.md / sweep.parquet / sweep.png (each atomically)."""
    import matplotlib.pyplot as plt
    import polars as pl

    finished = [p for p in points if p.id in results]
    attacks = sorted({a for p in finished for a in results[p.id].get("attacks", [])})
    heuristic = any(
        "heuristic" in str((results[p.id].get("graders") or {}).get("judge", ""))
        and (results[p.id].get("graders") or {}).get("judged")
        for p in finished
    )
    doc = {
        "format": FORMAT,
        "recipe": str(recipe),
        "sets": {k: v for k, v in sets},
        "points_total": len(points),
        "points_finished": len(finished),
        "stats": stats,
        "attacks": attacks,
        "heuristic_cacc": heuristic,
        "points": [results[p.id] | {"dir": f"points/{p.id}"} for p in finished],
        "groups": aggregate(points, results),
    }
    atomic_write_text(
        out_dir / "sweep.json", json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"
    )
    atomic_write_text(out_dir / "sweep.md", markdown(doc) + "\n")
    rows = [
        {
            "point": p.id,
            **{f"set:{k}": json.dumps(v, default=str) for k, v in p.values.items()},
            **{k: float(v) for k, v in results[p.id]["metrics"].items()},
        }
        for p in finished
    ]
    if rows:
        columns = sorted(
            {k for r in rows for k in r}, key=lambda k: (k != "point", not k.startswith("set:"), k)
        )
        table = pl.DataFrame([{c: r.get(c) for c in columns} for r in rows])
        atomic_write(out_dir / "sweep.parquet", lambda tmp: table.write_parquet(tmp))
        fig = draw(doc)
        try:
            atomic_write(
                out_dir / "sweep.png",
                lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None}),
            )
        finally:
            plt.close(fig)
    return doc
