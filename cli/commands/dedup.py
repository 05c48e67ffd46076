"""``mb dedup IN -o OUT``: exact + near dedup (and decontamination) of any input, no recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..params import LiteralChoice, engine_option, reading_options

if TYPE_CHECKING:
    from mbdata.io.readers import ReadOptions


@click.command("dedup")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=str),
    help="Output folder (build layout: data/, dedup/*.arrow, manifest.json).",
)
@click.option(
    "--reference",
    "references",
    type=click.Path(path_type=str),
    multiple=True,
    help="Remove rows whose prompt exactly or nearly matches a prompt of this input "
    "(eval prompts, a benchmark, a blocklist); the reference is only read. One per run.",
)
@reading_options()
@reading_options("reference-", "reference_read", "the reference")
@click.option(
    "--reference-threshold",
    type=float,
    default=None,
    help="Jaccard threshold of a near match to the reference (default 0.7).",
)
@click.option(
    "--keep-all",
    is_flag=True,
    help="Drop no duplicates: tag cluster members (dup_cluster=ID, dup_role=...).",
)
@click.option(
    "--fields",
    type=LiteralChoice("mbdata.dedup.config:FieldGroup"),
    default=None,
    help="What is compared (default: all).",
)
@click.option("--no-exact", is_flag=True, help="Skip exact dedup.")
@click.option("--no-near", is_flag=True, help="Skip near (MinHash) dedup.")
@click.option("--threshold", type=float, default=None, help="Jaccard threshold (default 0.8).")
@click.option(
    "--shingle",
    type=LiteralChoice("mbdata.dedup.config:ShingleKind"),
    default=None,
    help="Shingle kind (default: word).",
)
@click.option("--ngram", type=int, default=None, help="Shingle size (default: 2 word, 5 char).")
@click.option("--num-perm", type=int, default=None, help="MinHash permutations (default 128).")
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Verify LSH candidates with exact Jaccard (default: up to 1M rows).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=str),
    default=None,
    help="YAML file with a `dedup:` block (or the block itself); flags override it.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@engine_option()
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
def dedup(
    input_path: str,
    out: str,
    references: tuple[str, ...],
    read: ReadOptions,
    reference_read: ReadOptions,
    reference_threshold: float | None,
    keep_all: bool,
    fields: str | None,
    no_exact: bool,
    no_near: bool,
    threshold: float | None,
    shingle: str | None,
    ngram: int | None,
    num_perm: int | None,
    verify: bool | None,
    config_path: str | None,
    overwrite: bool,
    engine: str,
    quiet: bool,
) -> None:
    """Deduplicate IN (JSONL/JSON/Parquet/CSV/TSV, save_to_disk folder or build) into OUT.

    OUT is a build-like folder (Arrow shards, dedup/clusters.arrow, manifest.json); get a corpus
    file back with `mb export OUT --format jsonl` (or parquet, trl, ...). The input is streamed
    (memory: one batch plus ~200 bytes per row), with --reference too (the reference is read
    whole and indexed once); `--engine process|ray` runs the per-batch sketch on worker
    processes or on Ray (RAY_ADDRESS selects an existing cluster); the output is the same."""
    from pathlib import Path

    from mbdata.dedup.standalone import config_from_options, dedup_path
    from mbdata.io.buildio import open_build

    from ..notes import manifest_skipped_line

    # A repeated single-value option used to keep only the last value, silently: a user checking
    # several benchmarks believed all were checked (issue 24). One reference per run, said so.
    if len(references) > 1:
        raise click.UsageError(
            f"--reference given {len(references)} times ({', '.join(references)}); one "
            "reference per run: concatenate the prompt files into one, or run mb dedup once "
            "per reference (the output of one run as the input of the next)"
        )
    reference = references[0] if references else None

    overrides = {
        "keep_all": keep_all or None,
        "fields": fields,
        "threshold": threshold,
        "shingle": shingle,
        "ngram": ngram,
        "num_perm": num_perm,
        "verify": verify,
        "exact": False if no_exact else None,
        "near": False if no_near else None,
        "decontaminate_threshold": reference_threshold,
    }
    config = config_from_options(config_path, overrides)
    path = dedup_path(
        input_path,
        out,
        config,
        reference_path=reference,
        overwrite=overwrite,
        read=read,
        reference_read=reference_read,
        engine=engine,
        progress=False if quiet else None,
    )
    manifest = open_build(path).manifest
    skipped = manifest_skipped_line(manifest, path, "unparseable")
    if skipped:
        click.echo(skipped, err=True)
    click.echo(
        f"wrote {path}: " + ", ".join(f"{k}={v['rows']}" for k, v in manifest["splits"].items())
    )
    for stage in manifest["stages"]:
        dropped = ", ".join(f"{k}={v}" for k, v in stage["dropped"].items()) or "nothing"
        clusters = stage["info"].get("clusters")
        extra = f"; {clusters} clusters" if clusters is not None else ""
        click.echo(
            f"{stage['name']}: {stage['rows_in']} -> {stage['rows_out']} rows; "
            f"dropped {dropped}{extra}"
        )
    click.echo(
        f"corpus file: mb export {path} --format jsonl  (writes "
        f"{Path(path) / 'exports' / 'jsonl'}; or --format parquet, trl, llamafactory, axolotl)"
    )


COMMANDS = [dedup]
