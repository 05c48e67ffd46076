"""``mb dedup IN -o OUT``: exact + near dedup (and decontamination) of any input, no recipe."""

from __future__ import annotations

import click


@click.command("dedup")
@click.argument("input_path", metavar="IN", type=click.Path(path_type=str))
@click.option("-o", "--out", "out", required=True, type=click.Path(path_type=str),
              help="Output folder (build layout: data/, dedup/*.arrow, manifest.json).")
@click.option("--reference", "reference", type=click.Path(path_type=str), default=None,
              help="Remove rows whose prompt exactly or nearly matches a prompt of this input "
                   "(eval prompts, a benchmark, a blocklist); the reference is only read.")
@click.option("--reference-threshold", type=float, default=None,
              help="Jaccard threshold of a near match to the reference (default 0.7).")
@click.option("--keep-all", is_flag=True,
              help="Drop no duplicates: tag cluster members (dup_cluster=ID, dup_role=...).")
@click.option("--fields", type=click.Choice(["prompt", "output", "all"]), default=None,
              help="What is compared (default: all).")
@click.option("--no-exact", is_flag=True, help="Skip exact dedup.")
@click.option("--no-near", is_flag=True, help="Skip near (MinHash) dedup.")
@click.option("--threshold", type=float, default=None, help="Jaccard threshold (default 0.8).")
@click.option("--shingle", type=click.Choice(["word", "char"]), default=None,
              help="Shingle kind (default: word).")
@click.option("--ngram", type=int, default=None, help="Shingle size (default: 2 word, 5 char).")
@click.option("--num-perm", type=int, default=None, help="MinHash permutations (default 128).")
@click.option("--verify/--no-verify", default=None,
              help="Verify LSH candidates with exact Jaccard (default: up to 1M rows).")
@click.option("--config", "config_path", type=click.Path(path_type=str), default=None,
              help="YAML file with a `dedup:` block (or the block itself); flags override it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@click.option("--skip-bad-rows", is_flag=True, help="Drop malformed input rows instead of failing.")
def dedup(input_path: str, out: str, reference: str | None, reference_threshold: float | None,
          keep_all: bool, fields: str | None,
          no_exact: bool, no_near: bool, threshold: float | None, shingle: str | None,
          ngram: int | None, num_perm: int | None, verify: bool | None, config_path: str | None,
          overwrite: bool, skip_bad_rows: bool) -> None:
    """Deduplicate IN (JSONL/JSON/Parquet/CSV, save_to_disk folder or build) into OUT."""
    from mbdata.buildio import open_build
    from mbdata.dedup.standalone import config_from_options, dedup_path

    overrides = {"keep_all": keep_all or None, "fields": fields, "threshold": threshold,
                 "shingle": shingle, "ngram": ngram, "num_perm": num_perm, "verify": verify,
                 "exact": False if no_exact else None, "near": False if no_near else None,
                 "decontaminate_threshold": reference_threshold}
    config = config_from_options(config_path, overrides)
    path = dedup_path(input_path, out, config, reference_path=reference, overwrite=overwrite,
                      skip_bad_rows=skip_bad_rows)
    manifest = open_build(path).manifest
    click.echo(f"wrote {path}: " + ", ".join(f"{k}={v['rows']}"
                                              for k, v in manifest["splits"].items()))
    for stage in manifest["stages"]:
        dropped = ", ".join(f"{k}={v}" for k, v in stage["dropped"].items()) or "nothing"
        clusters = stage["info"].get("clusters")
        extra = f"; {clusters} clusters" if clusters is not None else ""
        click.echo(f"{stage['name']}: {stage['rows_in']} -> {stage['rows_out']} rows; "
                   f"dropped {dropped}{extra}")


COMMANDS = [dedup]
