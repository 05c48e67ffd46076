"""``mb sweep RECIPE --set KEY=V1,V2 ... -o DIR``: a grid of MB-Defense runs (mbtrain.experiment.sweep)."""

from __future__ import annotations

from pathlib import Path

import click

from .train import device_option, quiet_option


@click.command("sweep")
@click.argument("recipe", type=click.Path(path_type=str))
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=V1,V2",
    help="A recipe key by dotted path and its values (YAML scalars), e.g. "
    "defense.rate=0.01,0.04, train.seed=0,1,2, sources.0.path=data.json. "
    "Repeat for a grid.",
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(path_type=str),
    help="Sweep folder (builds/, points/, sweep.md|json|parquet|png). Re-running the "
    "same command resumes: finished points are skipped.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate at most N prompts per clean set / trigger.",
)
@click.option("--no-diagnostics", is_flag=True, help="Skip the hidden-state merging diagnostics.")
@click.option(
    "--plan",
    "plan_only",
    is_flag=True,
    help="Validate every point and print what the grid will train; run nothing.",
)
@device_option
@quiet_option
def sweep_command(
    recipe: str,
    sets: tuple[str, ...],
    out: str,
    limit: int | None,
    no_diagnostics: bool,
    plan_only: bool,
    device: str | None,
    threads: int | None,
    quiet: bool,
) -> None:
    """Run MB-Defense over a grid of recipe settings and write one table."""
    from mbtrain import api

    if plan_only:
        click.echo(api.sweep_plan(recipe, sets))
        return
    doc = api.sweep(
        recipe,
        sets,
        out,
        limit=limit,
        device=device,
        threads=threads,
        diagnostics=not no_diagnostics,
        progress=not quiet,
        log=None if quiet else (lambda msg: click.echo(msg, err=True)),
    )
    click.echo((Path(out) / "sweep.md").read_text(encoding="utf-8"))
    click.echo(
        f"sweep: {doc['points_finished']}/{doc['points_total']} points; "
        f"{Path(out) / 'sweep.json'}, sweep.parquet, sweep.png"
    )


COMMANDS = [sweep_command]
