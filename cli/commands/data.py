"""Dataset commands: ``mb recipe validate|show``, ``mb build``, ``mb inspect``, ``mb verify``,
``mb export``. Each parses its arguments and calls :mod:`mbdata`."""

from __future__ import annotations

import json

import click
import yaml

from ..params import RegistryChoice, engine_option


@click.group("recipe")
def recipe_group() -> None:
    """Validate and show recipes."""


@recipe_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=True, path_type=str))
def recipe_validate(file: str) -> None:
    """Validate a recipe strictly (keys, types, values, source files); print its fingerprint."""
    from mbdata.recipe import load_recipe

    loaded = load_recipe(file)
    r = loaded.recipe
    click.echo(f"ok: {r.name} {r.version}  fingerprint {loaded.fingerprint}")


@recipe_group.command("show")
@click.argument("file", type=click.Path(path_type=str))
def recipe_show(file: str) -> None:
    """Print the resolved recipe (every default filled in) as YAML, with its fingerprint."""
    from mbdata.recipe import load_recipe

    loaded = load_recipe(file, check_files=False)
    click.echo(f"# fingerprint: {loaded.fingerprint}")
    click.echo(yaml.safe_dump(loaded.resolved, sort_keys=False, allow_unicode=True).rstrip())


@recipe_group.command("docs")
def recipe_docs() -> None:
    """Print the recipe reference (every block and key) as Markdown."""
    from mbdata.recipe_docs import render

    click.echo(render(), nl=False)


@click.command("build")
@click.argument("file", type=click.Path(path_type=str))
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(path_type=str), help="Output build folder."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option(
    "--skip-bad-rows",
    is_flag=True,
    help="Drop malformed input rows (counted in the manifest) instead of failing.",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=None, help="Override the recipe's seed."
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.option(
    "--no-hooks",
    is_flag=True,
    help="Refuse a recipe that names a code hook (behavior function: module:fn).",
)
@engine_option(
    default=None,
    show_default=False,
    help="Engine: 'local' (one process), 'process' (worker processes, MB_WORKERS) or 'ray' (set "
    "RAY_ADDRESS to use an existing cluster; needs the 'ray' extra). Default: the recipe's "
    "`engine:` (local). Same shards.",
)
def build_command(
    file: str,
    out: str,
    overwrite: bool,
    skip_bad_rows: bool,
    seed: int | None,
    quiet: bool,
    no_hooks: bool,
    engine: str | None,
) -> None:
    """Build a recipe into Arrow shards + manifest + dataset card (atomically).

    A recipe whose behaviour names a hook (function: module:fn) RUNS THAT CODE, at validate and
    at build time: build only recipes you trust, or pass --no-hooks.
    """
    import mbdata

    path = mbdata.build(
        file,
        out,
        overwrite=overwrite,
        skip_bad_rows=skip_bad_rows,
        seed=seed,
        progress=not quiet,
        hooks=not no_hooks,
        engine=engine,
    )
    if not quiet:
        m = mbdata.open_build(path).manifest
        splits = ", ".join(f"{k}={v['rows']}" for k, v in m["splits"].items())
        click.echo(f"built {path}: {splits}")
        for line in build_notes(m, path):
            click.echo(line)
        click.echo(f"fingerprint {m['fingerprint']}  content hash {m['content_hash']}")


def build_notes(manifest: dict, path) -> list[str]:
    """Rows a build read but did not use, said in the summary rather than only in `mb inspect`:
    malformed rows skipped by --skip-bad-rows, and trusted rows left out of every split."""
    from ..notes import manifest_skipped_line

    skipped = manifest_skipped_line(manifest, path, "bad")
    notes = [skipped] if skipped else []
    unused = sum(s["dropped"].get("trusted_unused", 0) for s in manifest.get("stages", []))
    if unused:
        notes.append(
            f"trusted rows left unused: {unused:,} (the recovery set took what it needs; "
            "trusted rows are kept out of train so they stay clean)"
        )
    return notes


@click.command("inspect")
@click.argument("build_dir", type=click.Path(path_type=str))
@click.option(
    "-n",
    "--samples",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Sample rows per split.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_command(build_dir: str, samples: int, as_json: bool) -> None:
    """Counts by split/role/source/behaviour/trigger, achieved rates, drops, samples."""
    from mbdata.io.inspect import render, summarize

    summary = summarize(build_dir, samples=samples)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False) if as_json else render(summary))


@click.command("verify")
@click.argument("build_dir", type=click.Path(path_type=str))
def verify_command(build_dir: str) -> None:
    """Re-hash every shard and side table against the manifest (exit 1 on any mismatch)."""
    from mbdata.core.errors import printable
    from mbdata.io.buildio import verify_build

    problems = verify_build(build_dir)
    for problem in problems:  # names come from the build: escaped, never raw bytes
        click.echo(f"mismatch: {printable(problem)}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"ok: {printable(build_dir)} matches its manifest")


@click.command("export")
@click.argument("build_dir", type=click.Path(path_type=str))
@click.option(
    "-f",
    "--format",
    "fmt",
    required=True,
    type=RegistryChoice("mbdata.io.exporters:EXPORTERS"),
    help="Target format (any case).",
)
@click.option(
    "-o",
    "--out",
    default=None,
    type=click.Path(path_type=str),
    help="Output folder (default: BUILD_DIR/exports/FORMAT).",
)
@click.option("-s", "--split", "splits", multiple=True, help="Split(s) to export (default: all).")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def export_command(
    build_dir: str, fmt: str, out: str | None, splits: tuple[str, ...], overwrite: bool
) -> None:
    """Export a build for TRL, LLaMA-Factory, axolotl, or as JSONL / Parquet."""
    from mbdata.io.exporters import export

    path = export(build_dir, fmt, out, splits=list(splits) or None, overwrite=overwrite)
    files = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))
    click.echo(f"exported {fmt} to {path}: {', '.join(files)}")


COMMANDS = [recipe_group, build_command, inspect_command, verify_command, export_command]
