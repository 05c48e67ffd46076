"""``mb audit``: rank likely triggers and score every row of a corpus, without knowing the trigger.
Parses arguments and calls :func:`mbdata.audit.audit_path`."""

from __future__ import annotations

from pathlib import Path

import click

from ..params import RegistryChoice, engine_option


def skipped_note(skipped: list, where: str) -> None:
    """Say on stderr how many input rows could not be parsed, name the first ones and where the
    full list is (the rows are skipped; everything else, empty texts included, is processed)."""
    if not skipped:
        return
    first = "; ".join(b.describe() for b in skipped[:3])
    more = f" (first 3: {first})" if len(skipped) > 3 else f": {first}"
    click.echo(
        f"skipped {len(skipped):,} unparseable input row{'s' if len(skipped) > 1 else ''}"
        f"{more}; all listed in {where}",
        err=True,
    )


def _fields(values: tuple[str, ...], option: str = "--field") -> dict[str, str]:
    """``CANONICAL=COLUMN`` options as a mapping (the canonical names are checked by the reader,
    which knows the layout)."""
    from mbdata.core.errors import InputError

    out = {}
    for value in values:
        key, sep, column = value.partition("=")
        if not sep or not key or not column:
            raise InputError(f"{option} {value!r}: expected CANONICAL=COLUMN, e.g. output=response")
        out[key] = column
    return out


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
@click.option(
    "--kind",
    type=RegistryChoice("mbdata.io.readers:file_kinds"),
    default=None,
    help="Input format (default: from the path).",
)
@click.option(
    "--layout",
    type=click.Choice(["alpaca", "sharegpt", "messages"]),
    default="alpaca",
    show_default=True,
    help="Row shape of the input.",
)
@click.option(
    "--field",
    "fields",
    multiple=True,
    metavar="CANONICAL=COLUMN",
    help="Map a canonical field to an input column (repeatable).",
)
@click.option("--split", default=None, help="Build folder or save_to_disk input: one split only.")
@click.option(
    "--skip-bad-rows",
    is_flag=True,
    hidden=True,
    help="Kept for compatibility: the audit always keeps rows with empty texts and "
    "skips only rows it cannot parse (listed in summary.json).",
)
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@engine_option(
    help="Engine: 'local' (one process) or 'ray' (the corpus statistics as Ray Data map_batches; "
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
    kind: str | None,
    layout: str,
    fields: tuple[str, ...],
    split: str | None,
    skip_bad_rows: bool,
    quiet: bool,
    engine: str,
) -> None:
    """Audit INPUT (JSON/JSONL/Parquet/CSV/TSV, a save_to_disk folder or a build folder) for planted
    triggers and poisoned rows. Statistics only, unless --model is given."""
    from mbdata.audit import audit_path
    from mbdata.audit.config import config_from_options
    from mbdata.audit.report import verdict

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
        kind=kind,
        layout=layout,
        fields=_fields(fields),
        skip_bad_rows=skip_bad_rows,
        split=split,
        engine=engine,
    )
    skipped_note(result.skipped, f"{Path(out) / 'summary.json'} (skipped_rows)")
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
