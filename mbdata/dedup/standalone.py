"""``mb dedup IN -o OUT``: dedup (and optionally decontaminate) any readable input, no recipe.

The output is a build-like folder (:func:`mbdata.io.shards.write_build`): the kept rows per split, the
``dedup/clusters`` (and ``dedup/decontamination``) side tables, and a manifest with the resolved
``dedup`` settings and per-stage statistics, so ``mb inspect`` and ``mb verify`` work on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from ..core.config import from_mapping, to_mapping
from ..core.errors import RecipeError
from ..pipeline import BuildContext, StageStats, run_stage
from .config import DedupConfig
from .decontaminate import decontaminate
from .stage import CLUSTERS_TABLE, DedupStage

if TYPE_CHECKING:
    from ..io.readers import InputRead, ReadOptions


class _Decontaminate:
    """Adapter running :func:`decontaminate` as a pipeline stage against a fixed reference."""

    name = "decontaminate"

    def __init__(self, reference: pa.Table, config: DedupConfig, reference_rows=None):
        self.reference, self.config, self.reference_rows = reference, config, reference_rows

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        return decontaminate(
            table, self.reference, self.config, ctx, reference_rows=self.reference_rows
        )


def config_from_options(config_path: str | Path | None, overrides: dict) -> DedupConfig:
    """A :class:`DedupConfig` from an optional YAML file (a recipe with a ``dedup:`` block, or the
    block itself) with the non-null ``overrides`` applied, validated like a recipe block."""
    data: dict = {}
    if config_path is not None:
        import yaml

        path = Path(config_path)
        try:
            from ..core.limits import YamlLimitError, load_yaml
            from ..io.inputfile import read_yaml_text

            if not path.exists():
                raise RecipeError(f"{path}: config file not found")
            loaded = load_yaml(read_yaml_text(path))
        except (yaml.YAMLError, YamlLimitError, UnicodeDecodeError) as exc:
            raise RecipeError(f"{path}: unreadable YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(loaded, dict) and "dedup" in loaded:
            loaded = loaded["dedup"]
        if not isinstance(loaded, dict):
            raise RecipeError(f"{path}: expected a `dedup:` block (a mapping)")
        data = dict(loaded)
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return from_mapping(DedupConfig, data, "dedup")
    except RecipeError as exc:
        where = f"{config_path}: " if config_path is not None else ""
        raise RecipeError(f"{where}{exc}") from None


def dedup_table(
    table: pa.Table,
    config: DedupConfig | None = None,
    reference: pa.Table | None = None,
    ctx: BuildContext | None = None,
    *,
    reference_rows=None,
) -> tuple[pa.Table, list[StageStats], BuildContext]:
    """Decontaminate ``table`` against ``reference`` (if given), then dedup it.
    ``reference_rows`` names the reference rows in the decontamination table (default: positions).

    Decontamination runs first, so a contaminated row is removed even when it is the first member
    of a duplicate cluster (its near copies are then judged against what remains).
    """
    config = config or DedupConfig()
    ctx = ctx or BuildContext(seed=0)
    stats = []
    if reference is not None:
        table, s = run_stage(_Decontaminate(reference, config, reference_rows), table, ctx)
        stats.append(s)
    table, s = run_stage(DedupStage(config), table, ctx)
    stats.append(s)
    return table, stats, ctx


def read_reference(
    reference_path: str | Path, options: ReadOptions
) -> tuple[InputRead, list[dict], dict]:
    """The decontamination reference, read whole (it is small by nature: benchmarks, eval sets)
    as prompts only, by its own reading ``options``; its skipped rows marked ``reference:``; its
    input record for the manifest."""
    from ..io.manifest import input_record
    from ..io.readers import read_input

    ref = read_input(reference_path, options, lenient=True, prompts_only=True)
    skipped = [{**b.record(), "source": f"reference:{b.source}"} for b in ref.skipped]
    return ref, skipped, input_record(Path(reference_path), str(reference_path), ref.state)


def dedup_path(
    input_path: str | Path,
    out_dir: str | Path,
    config: DedupConfig | None = None,
    *,
    reference_path: str | Path | None = None,
    overwrite: bool = False,
    fields: dict[str, str] | None = None,
    reference_fields: dict[str, str] | None = None,
    engine: str = "local",
    progress: bool | None = False,
    stream: bool = True,
    read: ReadOptions | None = None,
    reference_read: ReadOptions | None = None,
) -> Path:
    """Read ``input_path`` (anything :func:`mbdata.io.readers.read_any` reads), dedup it, write
    ``out_dir``.

    Rows with empty texts are deduplicated like any other (they are data); only rows that cannot
    be parsed are skipped, counted in the manifest (``skipped_rows``) and listed with their reason
    in ``OUT/skipped.jsonl``.
    The reference may be prompts only (``output`` optional). How the input and the reference are
    read is ``read`` / ``reference_read`` (:class:`~mbdata.io.readers.ReadOptions`: kind, layout,
    column mapping, CSV delimiter; a mapping may name a list element, ``instruction=turns[0]``);
    ``fields`` / ``reference_fields`` alone are the column mappings of alpaca inputs.
    ``source_row`` (clusters, kept rows) and ``reference_row``
    (decontamination) are 0-based indices in the files as read, skipped rows included.

    The input is streamed (:func:`dedup_path_streaming`: memory bounded by the batch plus the
    per-row index and the reference index); with ``stream=False`` (the reference implementation
    the streaming path is tested against; local engine only) it is read whole."""
    from ..executors import check_engine

    engine = check_engine(engine)
    from ..build import SKIPPED_FILE, skipped_jsonl
    from ..core.atomic import check_output_dir, check_separate
    from ..io.manifest import input_record
    from ..io.readers import read_input
    from ..io.readers.options import read_options
    from ..io.shards import write_build

    read = read_options(read, fields=fields)
    reference_read = read_options(
        reference_read, fields=reference_fields, field_option="--reference-field"
    )
    config = config or DedupConfig()
    check_separate([input_path, reference_path], [out_dir])
    check_output_dir(Path(out_dir), overwrite, kind="build")
    if stream or engine != "local":
        return dedup_path_streaming(
            input_path,
            out_dir,
            config,
            overwrite=overwrite,
            engine=engine,
            progress=progress,
            reference_path=reference_path,
            read=read,
            reference_read=reference_read,
        )
    whole = read_input(input_path, read, lenient=True)
    table = whole.table
    skipped = [b.record() for b in whole.skipped]
    reference = reference_rows = None
    inputs = {"input": input_record(Path(input_path), str(input_path), whole.state)}
    if reference_path is not None:
        ref, ref_skipped, inputs["reference"] = read_reference(reference_path, reference_read)
        reference, reference_rows = ref.table, ref.row_numbers
        skipped += ref_skipped
    kept, stats, ctx = dedup_table(table, config, reference, reference_rows=reference_rows)
    splits = sorted(set(kept.column("split").to_pylist()))
    tables = {s: kept.filter(pc.equal(kept.column("split"), s)) for s in splits}
    manifest = _manifest(config, input_path, inputs, stats, read, reference_read, skipped)
    timings = {s.name: round(s.seconds, 4) for s in stats}
    return write_build(
        out_dir,
        tables,
        manifest,
        side_tables=ctx.side_tables,
        overwrite=overwrite,
        timings=timings,
        extra_files={SKIPPED_FILE: skipped_jsonl(skipped)} if skipped else None,
    )


def _manifest(config, input_path, inputs, stats, read, reference_read, skipped) -> dict:
    """The ``kind: dedup`` manifest (before ``splits``/``side_tables``/``content_hash``)."""
    from ..build import skipped_summary
    from ..io.manifest import MANIFEST_VERSION, library_versions
    from ..io.schema import SCHEMA_VERSION
    from ..recipe import canonical_json

    settings = to_mapping(config)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "schema_version": SCHEMA_VERSION,
        "kind": "dedup",
        "name": Path(input_path).stem or "dedup",
        # sha256 of the resolved settings: two outputs with the same fingerprint and input hashes
        # were made the same way (the role a recipe fingerprint plays for builds).
        "fingerprint": hashlib.sha256(canonical_json(settings).encode("utf-8")).hexdigest(),
        "dedup": settings,
        "inputs": inputs,
        "versions": library_versions(),
        "stages": [s.as_manifest() for s in stats],
    }
    if read.fields or reference_read.fields:
        manifest["fields"] = {"input": dict(read.fields), "reference": dict(reference_read.fields)}
    # kind, layout, delimiter: recorded only when not the defaults (older outputs keep their hash)
    if read.recorded() or reference_read.recorded():
        manifest["read"] = {"input": read.recorded(), "reference": reference_read.recorded()}
    if skipped:
        manifest["skipped_rows"] = skipped_summary(skipped)
    return manifest


def dedup_path_streaming(
    input_path: str | Path,
    out_dir: str | Path,
    config: DedupConfig,
    *,
    overwrite: bool = False,
    fields: dict[str, str] | None = None,
    engine: str = "local",
    progress: bool | None = False,
    batch_rows: int | None = None,
    num_cpus: int | None = None,
    reference_path: str | Path | None = None,
    reference_fields: dict[str, str] | None = None,
    read: ReadOptions | None = None,
    reference_read: ReadOptions | None = None,
) -> Path:
    """:func:`dedup_path` streamed (see :mod:`.stream`): the same output folder, byte for byte,
    with memory bounded by the batch plus the per-row index. With ``reference_path``, the
    reference is read whole and indexed once, and every input batch is decontaminated against it
    before dedup sees its remaining rows (:class:`.decontaminate.Decontaminator`). The per-batch
    steps run on the executor ``engine`` (``num_cpus``: its workers; :mod:`mbdata.executors`)."""
    from ..core.atomic import atomic_dir
    from ..executors import open_executor
    from ..io.manifest import input_record
    from ..io.readers import BATCH_ROWS, iter_input_batches
    from ..io.readers.options import read_options
    from .stream import env_batch_rows

    rows = batch_rows or env_batch_rows(BATCH_ROWS)
    read = read_options(read, fields=fields)
    reference_read = read_options(
        reference_read, fields=reference_fields, field_option="--reference-field"
    )

    def open_stream():
        return iter_input_batches(input_path, read, lenient=True, batch_rows=rows)

    first_stream = open_stream()  # a missing or unreadable input fails here, before any work
    inputs: dict[str, dict] = {}
    reference = None
    ref_skipped: list[dict] = []
    if reference_path is not None:
        reference, ref_skipped, inputs["reference"] = read_reference(reference_path, reference_read)
    job = _StreamJob(config, reference, progress, open_stream)

    def fill(tmp: Path) -> dict:
        stream, decon, result = job.run(tmp, first_stream)
        skipped = [b.record() for b in stream.skipped] + ref_skipped
        # hashed once read, against the file's state during the read: the manifest's sha256 is of
        # the bytes whose rows are in the output (a file rewritten meanwhile is refused)
        inputs["input"] = input_record(Path(input_path), str(input_path), stream.state)
        manifest = _manifest(config, input_path, inputs, [], read, reference_read, skipped)
        return _write_stream_output(tmp, manifest, decon, result, skipped)

    with open_executor(engine, num_cpus):  # a missing Ray fails here, before any work
        atomic_dir(Path(out_dir), fill, overwrite=overwrite, kind="build")
    return Path(out_dir)


class _StreamJob:
    """Decontamination (when there is a reference) then dedup of one input stream; started again
    with verification off when ``verify: null`` turns out unverified too late (see
    :class:`.decontaminate.RestartUnverified`)."""

    def __init__(self, config: DedupConfig, reference, progress, open_stream):
        self.config, self.reference = config, reference
        self.progress, self.open_stream = progress, open_stream

    def run(self, tmp: Path, stream):
        from .decontaminate import RestartUnverified

        try:
            return self._once(tmp, stream, force_unverified=False)
        except RestartUnverified:
            return self._once(tmp, self.open_stream(), force_unverified=True)

    def _once(self, tmp: Path, stream, force_unverified: bool):
        from ..core.progress import show_progress
        from .decontaminate import Decontaminator
        from .stream import Progress, dedup_stream

        decon = None
        batches: Iterable[pa.RecordBatch] = stream
        if self.reference is not None:
            decon = Decontaminator(
                self.reference.table,
                self.config,
                reference_rows=self.reference.row_numbers,
                force_unverified=force_unverified,
            )
            batches = decon.filter(stream)
        # no \r into a file or pipe
        result = dedup_stream(
            batches, self.config, tmp, progress=Progress(show_progress(self.progress))
        )
        return stream, decon, result


def _write_stream_output(tmp: Path, manifest: dict, decon, result, skipped: list[dict]) -> dict:
    """Side tables, manifest (with the stage statistics), skipped rows and timings of a
    streamed run, written into ``tmp``; returns the final manifest."""
    import json

    from ..build import SKIPPED_FILE, skipped_jsonl
    from ..io.manifest import finalize_manifest
    from ..io.shards import write_side_tables
    from .decontaminate import DECONTAMINATION_TABLE

    tables = {CLUSTERS_TABLE: result.clusters}
    stats = [result.stats]
    timings = {}
    if decon is not None:
        side, decon_stats = decon.finish()
        tables[DECONTAMINATION_TABLE] = side
        stats.insert(0, decon_stats)
        timings[decon_stats.name] = round(decon_stats.seconds, 4)
    manifest["stages"] = [s.as_manifest() for s in stats]
    sides = write_side_tables(tmp, tables)
    final = finalize_manifest({**manifest, "splits": result.splits, "side_tables": sides})
    if skipped:
        (tmp / SKIPPED_FILE).write_bytes(skipped_jsonl(skipped))
    timings.update({result.stats.name: round(result.stats.seconds, 4), **result.timings})
    (tmp / "timings.json").write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")
    (tmp / "manifest.json").write_text(
        json.dumps(final, indent=2, sort_keys=True, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    return final
