"""``mb dedup IN -o OUT``: dedup (and optionally decontaminate) any readable input, no recipe.

The output is a build-like folder (:func:`mbdata.shards.write_build`): the kept rows per split, the
``dedup/clusters`` (and ``dedup/decontamination``) side tables, and a manifest with the resolved
``dedup`` settings and per-stage statistics, so ``mb inspect`` and ``mb verify`` work on it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ..config import from_mapping, to_mapping
from ..errors import RecipeError
from ..pipeline import BuildContext, StageStats, run_stage
from .config import DedupConfig
from .decontaminate import decontaminate
from .stage import DedupStage


class _Decontaminate:
    """Adapter running :func:`decontaminate` as a pipeline stage against a fixed reference."""

    name = "decontaminate"

    def __init__(self, reference: pa.Table, config: DedupConfig):
        self.reference, self.config = reference, config

    def run(self, table: pa.Table, ctx: BuildContext) -> tuple[pa.Table, StageStats]:
        return decontaminate(table, self.reference, self.config, ctx)


def config_from_options(config_path: str | Path | None, overrides: dict) -> DedupConfig:
    """A :class:`DedupConfig` from an optional YAML file (a recipe with a ``dedup:`` block, or the
    block itself) with the non-null ``overrides`` applied, validated like a recipe block."""
    data: dict = {}
    if config_path is not None:
        import yaml

        path = Path(config_path)
        try:
            from ..limits import YamlLimitError, load_yaml

            loaded = load_yaml(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecipeError(f"{path}: config file not found") from None
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


def dedup_table(table: pa.Table, config: DedupConfig | None = None,
                reference: pa.Table | None = None,
                ctx: BuildContext | None = None) -> tuple[pa.Table, list[StageStats], BuildContext]:
    """Decontaminate ``table`` against ``reference`` (if given), then dedup it.

    Decontamination runs first, so a contaminated row is removed even when it is the first member
    of a duplicate cluster (its near copies are then judged against what remains).
    """
    config = config or DedupConfig()
    ctx = ctx or BuildContext(seed=0)
    stats = []
    if reference is not None:
        table, s = run_stage(_Decontaminate(reference, config), table, ctx)
        stats.append(s)
    table, s = run_stage(DedupStage(config), table, ctx)
    stats.append(s)
    return table, stats, ctx


def dedup_path(input_path: str | Path, out_dir: str | Path, config: DedupConfig | None = None, *,
               reference_path: str | Path | None = None, overwrite: bool = False,
               skip_bad_rows: bool = False) -> Path:
    """Read ``input_path`` (anything :func:`mbdata.readers.read_any` reads), dedup it, write
    ``out_dir``."""
    from ..manifest import MANIFEST_VERSION, input_record, library_versions
    from ..recipe import canonical_json
    from ..readers import read_any
    from ..schema import SCHEMA_VERSION
    from ..atomic import check_output_dir, check_separate
    from ..shards import write_build

    config = config or DedupConfig()
    check_separate([input_path, reference_path], [out_dir])
    check_output_dir(Path(out_dir), overwrite)
    table = read_any(input_path, skip_bad_rows=skip_bad_rows)
    reference = None
    inputs = {"input": input_record(Path(input_path), str(input_path))}
    if reference_path is not None:
        reference = read_any(reference_path, skip_bad_rows=skip_bad_rows)
        inputs["reference"] = input_record(Path(reference_path), str(reference_path))
    kept, stats, ctx = dedup_table(table, config, reference)
    splits = sorted(set(kept.column("split").to_pylist()))
    tables = {s: kept.filter(pc.equal(kept.column("split"), s)) for s in splits}
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
    timings = {s.name: round(s.seconds, 4) for s in stats}
    return write_build(out_dir, tables, manifest, side_tables=ctx.side_tables, overwrite=overwrite,
                       timings=timings)
