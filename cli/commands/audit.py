"""``mb audit``: rank likely triggers and score every row of a corpus, without knowing the trigger.
Parses arguments and calls :func:`mbdata.audit.audit_path`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..params import engine_option, reading_options

if TYPE_CHECKING:
    from mbdata.io.readers import ReadOptions


@click.command("audit")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=str),
    help="Output folder: rows.parquet, triggers.json, summary.json, report.md/html.",
)
@click.option(
    "--clean-out",
    type=click.Path(path_type=str),
    default=None,
    help="Also write the corpus without flagged rows (.jsonl/.json/.parquet) and "
    "NAME.removed.jsonl explaining each removal.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing output folder (and --clean-out files)."
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Flag rows scoring at least this (default 0.5).",
)
@click.option(
    "--min-rows",
    type=click.IntRange(min=2),
    default=None,
    help="Fewest poisoned rows a reported trigger must explain (default 5).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=None,
    help="Trigger candidates reported (default 20).",
)
@click.option(
    "--fdr",
    type=click.FloatRange(0, 0.5, min_open=True),
    default=None,
    help="False-discovery rate of the association signals (default 0.01).",
)
@click.option(
    "--model",
    type=click.Path(path_type=str),
    default=None,
    help="Optional reference model folder for the model-based score.",
)
@reading_options()
@click.option("--split", default=None, help="Build folder or save_to_disk input: one split only.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@engine_option(
    help="Engine: 'local' (one process), 'process' (local worker processes) or 'ray' (the corpus "
    "statistics per batch on Ray; "
    "set RAY_ADDRESS to use an existing cluster; needs the 'ray' extra). Same flags."
)
def audit(
    input_path: str,
    out: str,
    clean_out: str | None,
    overwrite: bool,
    threshold: float | None,
    min_rows: int | None,
    top_k: int | None,
    fdr: float | None,
    model: str | None,
    read: ReadOptions,
    split: str | None,
    quiet: bool,
    engine: str,
) -> None:
    """Audit INPUT (JSON/JSONL/Parquet/CSV/TSV, a save_to_disk folder or a build folder) for planted
    triggers and poisoned rows. Statistics only, unless --model is given."""
    from mbdata.audit import audit_path
    from mbdata.audit.config import config_from_options
    from mbdata.audit.report import verdict

    from ..notes import skipped_rows_line

    config = config_from_options(
        threshold=threshold, min_rows=min_rows, top_k=top_k, fdr=fdr, model=model
    )
    result = audit_path(
        input_path,
        out,
        config,
        clean_out=clean_out,
        overwrite=overwrite,
        progress=None if not quiet else False,
        kind=read.kind,
        layout=read.layout,
        fields=dict(read.fields),
        delimiter=read.delimiter,
        split=split,
        engine=engine,
    )
    if result.skipped:
        click.echo(
            skipped_rows_line(
                len(result.skipped),
                what="unparseable",
                where=f"{Path(out) / 'summary.json'} (skipped_rows)",
                first=[b.describe() for b in result.skipped[:3]],
            ),
            err=True,
        )
    if quiet:
        return
    click.echo(
        f"audited {result.n_rows:,} rows: {result.n_flagged:,} flagged "
        f"({100 * result.n_flagged / max(result.n_rows, 1):.2f} %)"
    )
    click.echo(verdict(result))
    high = [c for c in result.candidates if c.score >= config.threshold]
    for rank, cand in enumerate(result.candidates[:5], start=1):
        click.echo(
            f"  #{rank} {cand.text!r}  {cand.kind}  score {cand.score:.3f}  "
            f"rows {len(cand.rows)}  group {cand.group}"
        )
    if not high:
        click.echo("no high-confidence trigger candidate")
    click.echo(f"report: {Path(out) / 'report.html'}")
    if clean_out:
        click.echo(f"clean corpus: {clean_out} ({result.n_rows - result.n_flagged:,} rows)")


COMMANDS = [audit]
