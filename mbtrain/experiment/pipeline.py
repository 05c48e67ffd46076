"""The whole MB-Defense experiment on one build folder, and ``mb run`` on a recipe.

``run_experiment(build, DIR)``:

1. base model: the recipe's model, or (``name: tiny``) a tokenizer + small Llama pretrained on the
   build's ``pretrain`` split (``DIR/models/base``);
2. every run of :data:`mbtrain.runs.registry.RUNS` that the ``train:`` block asks for, each from its
   parent as soon as that is trained (``DIR/models/RUN``): ``attacked`` (the victim),
   ``mb_stage1`` (defensive poisoning), ``mb_defense`` (stage 2 from ``mb_stage1``) and the
   baselines from the attacked model (``train.baselines``);
3. each run evaluated (``DIR/eval/RUN/``), through its inference-time transform if it has one,
   then ``DIR/report.{json,md,png}``.

Every step writes its output atomically and is skipped when it exists, so re-running the same
command after an interruption continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mbdata.core.atomic import (
    atomic_dir,
    check_output_dir,
    mark_dir,
    remove_output_dir,
    written_by_us,
)
from mbdata.core.config import to_mapping
from mbdata.core.errors import BuildError, InputError
from mbdata.io.schema import TRAINING_SPLITS
from mbtrain.config import ModelSettings, OptimSettings, TrainConfig
from mbtrain.engine.builds import TrainingBuild, open_training_build
from mbtrain.engine.environment import numeric_environment, report_environment
from mbtrain.engine.formatting import alpaca_prompt
from mbtrain.engine.jobs import Job, JobRunner, auto_jobs
from mbtrain.engine.models import MARKER, is_model_folder, load_base, read_marker, save_model
from mbtrain.engine.tiny import tiny_model, train_tokenizer
from mbtrain.evaluation.evaluate import clean_rows, evaluate
from mbtrain.evaluation.likelihood import versus
from mbtrain.experiment.report import FORMAT, report_metrics, write_report
from mbtrain.runs import data as rows_of
from mbtrain.runs.registry import BASE, RUNS, TrainContext
from mbtrain.runs.stages import Runtime, is_main_process, make_runtime, train_sft


def tokenizer_corpus(build: TrainingBuild, cfg: TrainConfig) -> list[str]:
    """Formatted prompts and answers of every training split (never the eval splits)."""
    texts = []
    for split in TRAINING_SPLITS:  # pretrain, train, recovery, recovery_eval (mbdata's one list)
        if not build.has(split):
            continue
        for r in build.rows(split):
            texts.append(
                alpaca_prompt(
                    cfg.model.template, r["instruction"], r.get("input") or "", r.get("system")
                )
                + r["output"]
            )
            if r.get("triggered_instruction"):
                texts.append(r["triggered_instruction"] + " " + (r.get("triggered_output") or ""))
    return texts


def build_tiny_base(
    build: TrainingBuild,
    cfg: TrainConfig,
    out_dir: str | Path,
    runtime: Runtime | None = None,
    overwrite: bool = False,
) -> Path:
    """Train the tokenizer, initialise the tiny Llama and pretrain it on ``pretrain``
    (``overwrite``: retrain into an existing folder that mbdefense wrote)."""
    out_dir = Path(out_dir)
    if overwrite:
        if is_model_folder(out_dir) and not written_by_us(out_dir):
            mark_dir(out_dir, "model")  # a model folder from before folders were marked
        check_output_dir(out_dir, overwrite=True)
    elif is_model_folder(out_dir):
        return out_dir
    if cfg.model.template == "chat":
        raise InputError(
            "train.model.template: the tiny model has no chat template; use "
            "'alpaca' or 'alpaca_short'"
        )
    if not build.has("pretrain"):
        raise InputError(
            f"{build.path}: the tiny model needs a `pretrain` split; add a "
            "`pretrain:` block to the recipe"
        )
    tiny = cfg.model.tiny
    tokenizer = train_tokenizer(tokenizer_corpus(build, cfg), tiny.vocab_size)
    model = tiny_model(tiny, tokenizer, cfg.seed)
    stage = OptimSettings(
        epochs=tiny.pretrain_epochs,
        lr=tiny.pretrain_lr,
        batch_size=tiny.pretrain_batch_size,
        warmup_ratio=0.05,
    )
    examples = rows_of.train_examples(build.rows("pretrain"))
    return train_sft(
        (model, tokenizer),
        examples,
        out_dir,
        cfg,
        name="base",
        stage=stage,
        runtime=runtime,
        full_sequence_loss=tiny.pretrain_loss == "all",
        overwrite=overwrite,
    )


def is_gguf(settings: ModelSettings) -> bool:
    return bool(settings.gguf_file) or settings.name.endswith(".gguf")


def import_base(settings: ModelSettings, out_dir: str | Path) -> Path:
    """Convert a GGUF base into an ordinary model folder (fp32 safetensors) once, so the stages
    and evaluations load it in seconds instead of de-quantising it each time."""
    out_dir = Path(out_dir)
    if is_model_folder(out_dir):
        return out_dir
    started = time.perf_counter()
    model, tokenizer = load_base(settings)
    record: dict[str, Any] = {
        "kind": "full",
        "stage": "base",
        "parent": None,
        "source": settings.name,
        "gguf_file": settings.gguf_file,
        "selected_epoch": None,
        "history": [],
        "seconds": round(time.perf_counter() - started, 3),
        "environment": numeric_environment(),
    }
    atomic_dir(out_dir, lambda tmp: save_model(model, tokenizer, tmp, record), kind="model")
    return out_dir


def _marker_hash(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / MARKER).read_bytes()).hexdigest()


def evaluate_run(
    model_dir: Path,
    build: TrainingBuild,
    cfg: TrainConfig,
    out_dir: Path,
    runtime: Runtime,
    name: str,
    base: Any = None,
) -> dict[str, Any]:
    """Evaluate run ``name`` once (through its inference-time transform, if its entry in
    :data:`~mbtrain.runs.registry.RUNS` has one; ``base``: the experiment's base model, which a
    transform may use): reuse ``out_dir/metrics.json`` if it was made from this very model with
    the same evaluation (and transform) settings."""
    run = RUNS.get(name) if name in RUNS else None
    transform = run.transform(cfg, base, runtime) if run and run.transform else None
    metrics_path = out_dir / "metrics.json"
    key = {
        "model_marker": _marker_hash(model_dir),
        "eval_settings": to_mapping(cfg.eval),
        "template": cfg.model.template,
    }
    if transform is not None:
        key["transform_settings"] = transform.record()
    if cfg.eval.prompts:  # the file's content, not only its name, decides the clean prompts
        key["eval_prompts_sha256"] = hashlib.sha256(Path(cfg.eval.prompts).read_bytes()).hexdigest()
    if metrics_path.is_file():
        cached = json.loads(metrics_path.read_text(encoding="utf-8"))
        if all(cached.get(k) == v for k, v in key.items()):
            return cached
    return evaluate(
        model_dir,
        build,
        cfg,
        out_dir=out_dir,
        runtime=runtime,
        name=name,
        extra=key,
        transform=transform,
    )


def evaluate_folder(
    model_dir: Path,
    build_dir: Path,
    cfg: TrainConfig,
    out_dir: Path,
    runtime: Runtime,
    name: str,
    base: Any = None,
) -> dict[str, Any]:
    """:func:`evaluate_run` from a build *folder* (what a worker process is sent)."""
    return evaluate_run(
        model_dir, open_training_build(build_dir), cfg, out_dir, runtime, name, base
    )


def _require(build: TrainingBuild, split: str, block: str) -> list[dict[str, Any]]:
    if not build.has(split):
        raise InputError(
            f"{build.path}: the pipeline needs the `{split}` split; add a "
            f"`{block}:` block to the recipe"
        )
    rows = build.rows(split)
    if not rows:
        raise InputError(f"{build.path}: split `{split}` is empty")
    return rows


def _seconds(model_dir: Path) -> float:
    return float(read_marker(model_dir).get("seconds", 0.0))


def train_run(
    name: str,
    parent: Any,
    rows: list[dict[str, Any]],
    out_dir: str | Path,
    cfg: TrainConfig,
    runtime: Runtime,
    *,
    recovery_eval: list[dict[str, Any]] | None = None,
    base: Any = None,
    overwrite: bool = False,
) -> Path:
    """Train one run of the experiment (an entry of :data:`mbtrain.runs.registry.RUNS`, which says which
    rows it sees, with which stage settings and objective), for :func:`run_experiment` and
    ``mb train``.

    ``rows``: the ``train`` split for a stage-1 run, ``recovery`` for a stage-2 run (whose
    ``recovery_eval`` rows select the epoch; without them the last epoch is kept). ``base``: the
    experiment's base model, for a run that uses it besides its parent (Fine-mixing); default
    ``parent``."""
    if name not in RUNS:
        raise ValueError(RUNS.unknown(name))
    run = RUNS.get(name)
    if run.train is None:
        raise ValueError(f"run {name!r} trains nothing: it evaluates the {run.parent!r} model")
    context = TrainContext(
        name=name,
        parent=parent,
        base=parent if base is None else base,
        rows=rows,
        held_out=recovery_eval or [],
        out_dir=Path(out_dir),
        cfg=cfg,
        runtime=runtime,
        overwrite=overwrite,
    )
    return run.train(context)


def run_experiment(
    build_dir: str | Path,
    out_dir: str | Path,
    *,
    cfg: TrainConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    timings: dict[str, float] | None = None,
    trainer_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every run of :data:`mbtrain.runs.registry.RUNS` that ``cfg`` asks for on a
    build; returns the report (also written to
    ``out_dir``). ``trainer_args``: further (SFTConfig) TrainingArguments for every stage.

    Under ``torchrun`` / ``accelerate launch`` every process trains (DDP); rank 0 alone
    evaluates and writes the report (the other processes return ``{}``)."""
    started = time.perf_counter()
    build = open_training_build(build_dir)
    cfg = cfg or build.train_config()
    runtime = make_runtime(cfg, progress, trainer_args)
    out_dir = Path(out_dir)
    models_dir = out_dir / "models"
    timings = dict(timings or {})
    train = _require(build, "train", "sources")
    recovery = _require(build, "recovery", "recovery")
    recovery_eval = build.rows("recovery_eval") if build.has("recovery_eval") else []
    _require(build, "eval_clean", "eval")
    if cfg.eval.prompts:  # a bad prompts file is an error before any training
        clean_rows(build, cfg.eval)

    # Independent stages side by side on a CPU with cores to spare (mbtrain.engine.jobs); the workers
    # start now, so their imports overlap the base model's training.
    workers = auto_jobs(runtime.device.type, cfg.model.threads, cfg.model.jobs)
    with JobRunner(workers, cfg.model.threads) as runner:
        if cfg.model.name == "tiny":
            log("base: tiny model (tokenizer + Llama pretrained on the pretrain split)")
            base: Any = build_tiny_base(build, cfg, models_dir / "base", runtime)
            timings["base"] = _seconds(base)
        elif is_gguf(cfg.model):
            log(f"base: converting {cfg.model.name} to a local model folder (once)")
            base = import_base(cfg.model, models_dir / "base")
            timings["base"] = _seconds(base)
        else:
            base = cfg.model
        runs = RUNS.enabled(cfg)
        # stage-1 runs first (the order jobs run in without workers; each stage seeds itself)
        trained = sorted((r for r in runs if r.train is not None), key=lambda r: r.parent != BASE)
        split_rows = {"train": train, "recovery": recovery}
        jobs = [
            Job(
                run.name,
                train_run,
                (
                    run.name,
                    base if run.parent == BASE else models_dir / run.parent,
                    split_rows[run.split],
                    models_dir / run.name,
                    cfg,
                    runtime,
                ),
                {
                    "base": base,
                    **({"recovery_eval": recovery_eval} if run.split != "train" else {}),
                },
                after=() if run.parent == BASE else (run.parent,),
            )
            for run in trained
        ]
        main = is_main_process()
        if main:  # rank 0 alone evaluates, each model as soon as it is trained
            jobs += [
                Job(
                    f"eval_{run.name}",
                    evaluate_folder,
                    (
                        models_dir / run.model,
                        build.path,
                        cfg,
                        out_dir / "eval" / run.name,
                        runtime,
                        run.name,
                    ),
                    {"base": base},
                    after=(run.model,),
                )
                for run in runs
            ]

        def job_started(job: Job) -> None:
            evaluated = job.name.removeprefix("eval_")
            log(f"eval: {evaluated}" if evaluated != job.name else f"{job.name}: training")

        def job_done(job: Job, result: Any) -> None:
            if job.name.startswith("eval_"):
                timings[job.name] = float(result.get("seconds", 0.0))
            else:
                timings[job.name] = _seconds(result)

        outputs = runner.run(jobs, on_start=job_started, on_done=job_done)
        if not main:
            return {}
        done: dict[str, Path] = {run.name: outputs[run.model] for run in runs}
        results: dict[str, dict[str, Any]] = {n: outputs[f"eval_{n}"] for n in done}
    timings["total"] = round(time.perf_counter() - started + timings.get("build", 0.0), 3)
    report = make_report(build, cfg, done, results, timings)
    report["environment"] = report_environment(runtime.device, runtime.amp, done)
    write_report(report, out_dir)
    return report


def make_report(
    build: TrainingBuild,
    cfg: TrainConfig,
    models: dict[str, Path],
    results: dict[str, dict[str, Any]],
    timings: dict[str, float],
) -> dict[str, Any]:
    first = next(iter(results.values()), {})
    attacks = sorted(first.get("asr", {}))
    defense = sorted(first.get("defense_trigger_rate", {}))
    stage2 = read_marker(models["mb_defense"]) if "mb_defense" in models else {}
    manifest = build.manifest
    recipe = manifest.get("recipe") or {}
    return {
        "format": FORMAT,
        "name": recipe.get("name"),
        "runs": {name: report_metrics(m) for name, m in results.items()},
        # issue 26: utility against the attacked model, paired over the same clean prompts
        "loglik_vs_attacked": versus(results, "attacked"),
        "attacks": attacks,
        "defense_triggers": defense,
        "fingerprint": manifest.get("fingerprint"),
        "content_hash": manifest.get("content_hash"),
        "model": cfg.model.name
        if cfg.model.name != "tiny"
        else f"tiny (hidden {cfg.model.tiny.hidden_size}, {cfg.model.tiny.layers} layers)",
        "parameters": read_marker(models["attacked"]).get("parameters")
        if "attacked" in models
        else None,
        "seeds": {"recipe": manifest.get("seed", recipe.get("seed")), "train": cfg.seed},
        "eval_counts": first.get("counts", {}),
        "graders": {
            "judge": first.get("graders", {}).get("judge"),
            "judged": sum(
                m.get("graders", {}).get("eval_clean", {}).get("judged", 0)
                for m in results.values()
            ),
            # toxic attacks: which grader scored ASR (the judge, else the lexicon)
            **(
                {"asr_toxic": first["graders"]["asr_toxic"]}
                if "asr_toxic" in first.get("graders", {})
                else {}
            ),
        },
        "behaviors": {
            t["name"]: t.get("behavior") for t in build.triggers if t.get("owner") == "attacker"
        },
        "stage2": {
            "selected_epoch": stage2.get("selected_epoch"),
            "select": stage2.get("select"),
            "lam": stage2.get("lam"),
            "normalize": stage2.get("normalize"),
            "epochs": stage2.get("history", []),
        },
        "selected_epochs": {
            name: read_marker(p).get("selected_epoch") for name, p in models.items()
        },
        # inference-time defences (ONION): what they removed from the prompts
        "filtered": {name: m["transform"] for name, m in results.items() if m.get("transform")},
        # weight-mixing defences (Fine-mixing): the recorded mixing
        "mixing": {
            name: read_marker(p)["fine_mixing"]
            for name, p in models.items()
            if "fine_mixing" in read_marker(p)
        },
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "train": to_mapping(cfg),
    }


def run_recipe(
    recipe: str | Path,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    cfg_override: Callable[[TrainConfig], TrainConfig] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    trainer_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``mb run``: build the recipe into ``DIR/data``, then :func:`run_experiment` into ``DIR``.

    An existing ``DIR`` is resumed when its build has the same content hash as a fresh build of
    the recipe (builds are deterministic); a different build there is an error unless
    ``overwrite``.
    """
    import mbdata

    out_dir = Path(out_dir)
    data_dir = out_dir / "data"
    if not is_main_process():  # rank 0 builds; the others train on its build
        if overwrite:
            raise BuildError(
                f"--overwrite cannot be used under a multi-process launch; delete {out_dir} first"
            )
        _wait_for(data_dir / "manifest.json")
        cfg = open_training_build(data_dir).train_config()
        cfg = cfg_override(cfg) if cfg_override is not None else cfg
        return run_experiment(
            data_dir, out_dir, cfg=cfg, progress=False, log=log, trainer_args=trainer_args
        )
    if overwrite:
        remove_output_dir(out_dir)  # refuses a folder that mbdefense did not write
    elif (
        out_dir.exists()
        and not written_by_us(out_dir)
        and not (data_dir / "manifest.json").is_file()
    ):
        check_output_dir(out_dir, overwrite=True)  # the one-line refusal
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"build: {recipe} -> {data_dir}")
    if (data_dir / "manifest.json").is_file():
        with tempfile.TemporaryDirectory(prefix=".data.check-", dir=out_dir) as scratch:
            fresh = Path(scratch) / "data"
            mbdata.build(recipe, fresh)
            keys = ("content_hash", "fingerprint")
            new, old = open_training_build(fresh).manifest, open_training_build(data_dir).manifest
            same = all(new.get(k) == old.get(k) for k in keys)
        if not same:
            raise BuildError(
                f"{out_dir}: holds a run of a different build of the recipe; "
                "use another -o folder or --overwrite"
            )
        log("build: unchanged, resuming")
    else:
        mbdata.build(recipe, data_dir)
    # The run folder is ours from here on (also a run folder made before folders were marked,
    # now that its build matched the recipe): --overwrite may replace it later.
    mark_dir(out_dir, "run")
    timings = {"build": round(time.perf_counter() - started, 3)}
    build = open_training_build(data_dir)
    cfg = build.train_config()
    if cfg_override is not None:
        cfg = cfg_override(cfg)
    return run_experiment(
        data_dir,
        out_dir,
        cfg=cfg,
        progress=progress,
        log=log,
        timings=timings,
        trainer_args=trainer_args,
    )


def _wait_for(path: Path, timeout_s: float = 3600.0) -> None:
    """Poll for a file another process writes (the build of rank 0)."""
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise BuildError(f"{path}: not written by rank 0 within {timeout_s:.0f} s")
        time.sleep(1.0)
