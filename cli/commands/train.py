"""Training commands: ``mb train base|stage1|stage2``, ``mb eval``, ``mb run``, ``mb demo``.

Each parses its arguments and calls :mod:`mbtrain` (imported inside the command, so ``mb --help``
stays fast). Settings come from the build's ``manifest["recipe"]["train"]``; the flags here override
only a few of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from ..params import RunAlias


def _check_device(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A one-line error (before any work) for a device mbtrain cannot use."""
    from mbdata.core.errors import MBError
    from mbtrain.config import DEVICE_FORM, DEVICE_PATTERN

    if value is not None and not re.fullmatch(DEVICE_PATTERN, value):
        raise MBError(f"--device: {value!r} is not a device; allowed: {DEVICE_FORM}")
    return value


def device_option(fn):
    """``--device`` and ``--threads``: where to run (override train.model.device/threads)."""
    fn = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="Override train.model.threads (CPU threads for torch).",
    )(fn)
    return click.option(
        "--device",
        default=None,
        callback=_check_device,
        help="Override train.model.device (auto, cpu, cuda, cuda:N, mps).",
    )(fn)


quiet_option = click.option("--quiet", is_flag=True, help="No progress bars.")


def _parse_trainer_args(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict | None:
    """``KEY=VALUE`` pairs (VALUE read as YAML: numbers, booleans, lists) for the Trainer."""
    import yaml

    from mbdata.core.errors import MBError

    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MBError(f"--trainer-arg: {item!r} is not KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    if out:  # checked before any work (imports TRL only when the option is given)
        from mbtrain.trainer_args import check_trainer_args

        check_trainer_args(out)
    return out or None


def _relaunch(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--accelerate-config FILE``: run this very command under ``accelerate launch
    --config_file FILE`` (DDP, DeepSpeed ZeRO, FSDP: whatever the file says), unless already
    launched by accelerate/torchrun (:func:`mbtrain.api.relaunch`)."""
    if value is None:
        return value
    import sys

    from mbtrain import api

    code = api.relaunch(value, sys.argv)
    if code is None:  # inside the launched processes: train here
        return value
    if code:  # the launched command failed: so does this one (ctx.exit's code would be lost)
        raise SystemExit(code)
    ctx.exit(0)
    return value


def launch_options(fn):
    """``--trainer-arg KEY=VALUE`` (repeatable) and ``--accelerate-config FILE``."""
    fn = click.option(
        "--trainer-arg",
        "trainer_args",
        multiple=True,
        callback=_parse_trainer_args,
        metavar="KEY=VALUE",
        help="Extra transformers/TRL TrainingArguments (SFTConfig field names, "
        "e.g. optim=adamw_torch_fused, report_to=wandb); repeatable; wins over "
        "the recipe's train.trainer_args key by key. An unknown key is an error.",
    )(fn)
    return click.option(
        "--accelerate-config",
        default=None,
        expose_value=False,
        is_eager=True,
        callback=_relaunch,
        metavar="FILE",
        help="Run under `accelerate launch --config_file FILE` (multi-GPU DDP, "
        "DeepSpeed ZeRO-3 or FSDP as the file says).",
    )(fn)


out_model_option = click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=str),
    help="Output model folder (resumed if a partial run exists).",
)
overwrite_model_option = click.option(
    "--overwrite",
    is_flag=True,
    help="Retrain into -o even if it holds a finished model (only a folder mbdefense wrote).",
)


def _done(path: Path) -> None:
    from mbtrain import api

    line = api.finished_model_line(path)
    if line is not None:
        click.echo(line)


@click.group("train")
def train_group() -> None:
    """Train models on a build folder (MB-Defense stages and baselines)."""


@train_group.command("base")
@click.argument("build_dir", type=click.Path(path_type=str))
@click.option(
    "-o", "--out", required=True, type=click.Path(path_type=str), help="Output model folder."
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Override train.model.tiny.pretrain_epochs.",
)
@overwrite_model_option
@device_option
@quiet_option
@launch_options
def train_base(
    build_dir: str,
    out: str,
    epochs: int | None,
    overwrite: bool,
    device: str | None,
    threads: int | None,
    quiet: bool,
    trainer_args: dict | None,
) -> None:
    """Build the tiny base model (tokenizer + small Llama pretrained on the `pretrain` split)."""
    from mbtrain import api

    path = api.train_base(
        build_dir,
        out,
        epochs=epochs,
        overwrite=overwrite,
        device=device,
        threads=threads,
        progress=not quiet,
        trainer_args=trainer_args,
    )
    _done(path)


@train_group.command("stage1")
@click.argument("build_dir", type=click.Path(path_type=str))
@out_model_option
@click.option(
    "--base",
    default=None,
    type=click.Path(path_type=str),
    help="Model folder to start from (default: the recipe's train.model).",
)
@click.option(
    "--rows",
    type=RunAlias("train"),
    default="all",
    show_default=True,
    help="all: every train row (MB stage 1); attacked: clean + attack rows only "
    "(the attacked baseline); the choices are the stage-1 runs of mbtrain.runs.registry.RUNS.",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Override train.stage1.epochs."
)
@overwrite_model_option
@device_option
@quiet_option
@launch_options
def train_stage1(
    build_dir: str,
    out: str,
    base: str | None,
    rows: str,
    epochs: int | None,
    overwrite: bool,
    device: str | None,
    threads: int | None,
    quiet: bool,
    trainer_args: dict | None,
) -> None:
    """Instruction-tune on the build's train split (stage-1 settings)."""
    from mbtrain import api

    path = api.train_stage1(
        build_dir,
        out,
        base=base,
        rows=rows,
        epochs=epochs,
        overwrite=overwrite,
        device=device,
        threads=threads,
        progress=not quiet,
        trainer_args=trainer_args,
    )
    _done(path)


@train_group.command("stage2")
@click.argument("build_dir", type=click.Path(path_type=str))
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(path_type=str),
    help="Model folder to start from (stage 1 for mb; the attacked model for the baselines).",
)
@out_model_option
@click.option(
    "--method",
    type=RunAlias("recovery"),
    default="mb",
    show_default=True,
    help="mb: the neutralization loss on recovery tuples; clean-fft / fine-mixing / "
    "trigger-aug: the baselines (plain cross-entropy; fine-mixing first mixes the weights "
    "with --base); the choices are the stage-2 runs of mbtrain.runs.registry.RUNS.",
)
@click.option(
    "--base",
    default=None,
    type=click.Path(path_type=str),
    help="fine-mixing: the pre-trained model the attacked weights are mixed with (default: "
    "the recipe's train.model; the tiny model's folder from `mb train base`).",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Override train.stage2.epochs."
)
@click.option(
    "--lam", type=click.FloatRange(min=0), default=None, help="Override train.stage2.lam (λ)."
)
@overwrite_model_option
@device_option
@quiet_option
@launch_options
def train_stage2(
    build_dir: str,
    model_dir: str,
    out: str,
    method: str,
    base: str | None,
    epochs: int | None,
    lam: float | None,
    overwrite: bool,
    device: str | None,
    threads: int | None,
    quiet: bool,
    trainer_args: dict | None,
) -> None:
    """Neutralize (MB stage 2) or run a baseline on the recovery split."""
    from mbtrain import api

    path = api.train_stage2(
        build_dir,
        model_dir,
        out,
        method=method,
        base=base,
        epochs=epochs,
        lam=lam,
        overwrite=overwrite,
        device=device,
        threads=threads,
        progress=not quiet,
        trainer_args=trainer_args,
    )
    _done(path)


@click.command("eval")
@click.argument("model_dir", type=click.Path(path_type=str))
@click.argument("build_dir", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--out",
    default=None,
    type=click.Path(path_type=str),
    help="Write metrics.json and generations.jsonl here.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="At most N prompts per clean set / trigger.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@device_option
@quiet_option
def eval_command(
    model_dir: str,
    build_dir: str,
    out: str | None,
    limit: int | None,
    as_json: bool,
    device: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Generate on eval_clean / eval_triggered and print CACC, ASR, AACC, defensive rates."""
    from mbtrain import api

    metrics = api.evaluate_model(
        model_dir,
        build_dir,
        out=out,
        limit=limit,
        device=device,
        threads=threads,
        progress=not quiet,
    )
    if as_json:
        click.echo(json.dumps(metrics, indent=2, sort_keys=True))
        return
    click.echo(f"CACC {metrics['cacc']}  AACC {metrics['aacc']}")
    for name, value in metrics["asr"].items():
        click.echo(f"ASR {name}: {value}")
    for name, value in metrics["defense_trigger_rate"].items():
        click.echo(f"defensive response rate {name}: {value}")
    for name, value in metrics["merging_rate"].items():
        click.echo(f"merging into {name}: {value}")


def _log(quiet: bool):
    """Progress lines to stderr, from rank 0 only (under torchrun / accelerate launch)."""
    from mbtrain.runs.stages import is_main_process

    return None if quiet or not is_main_process() else (lambda msg: click.echo(msg, err=True))


def _print_report(out: str) -> None:
    from mbtrain.runs.stages import is_main_process

    if not is_main_process():
        return
    click.echo((Path(out) / "report.md").read_text(encoding="utf-8"))
    click.echo(f"report: {Path(out) / 'report.json'}, {Path(out) / 'report.png'}")


@click.command("run")
@click.argument("recipe", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=str),
    help="Run folder (build in DIR/data, models, eval, report.*). Re-running the same "
    "command resumes.",
)
@click.option(
    "--overwrite", is_flag=True, help="Delete the run folder first (only a folder mbdefense wrote)."
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate at most N prompts per clean set / trigger.",
)
@device_option
@quiet_option
@launch_options
def run_command(
    recipe: str,
    out: str,
    overwrite: bool,
    limit: int | None,
    device: str | None,
    threads: int | None,
    quiet: bool,
    trainer_args: dict | None,
) -> None:
    """Build a recipe, train attacked / MB-Defense / baselines, evaluate, write the report."""
    from mbtrain import api

    api.run(
        recipe,
        out,
        overwrite=overwrite,
        limit=limit,
        device=device,
        threads=threads,
        progress=not quiet,
        log=_log(quiet),
        trainer_args=trainer_args,
    )
    _print_report(out)


@click.command("demo")
@click.option(
    "-o",
    "--out",
    default="mb-demo",
    show_default=True,
    type=click.Path(path_type=str),
    help="Run folder.",
)
@click.option("--overwrite", is_flag=True, help="Delete the run folder first.")
@device_option
@quiet_option
def demo_command(
    out: str, overwrite: bool, device: str | None, threads: int | None, quiet: bool
) -> None:
    """`mb run` on the shipped demo recipe: a tiny model, synthetic data, two attacks
    (under 10 minutes on 2 CPU cores)."""
    from mbtrain import api

    api.demo(
        out,
        overwrite=overwrite,
        device=device,
        threads=threads,
        progress=not quiet,
        log=_log(quiet),
    )
    _print_report(out)


COMMANDS = [train_group, eval_command, run_command, demo_command]
