"""The audit's output contract: ``rows.parquet``, ``triggers.json``, ``summary.json``, the reports,
and the ``--clean-out`` corpus. Documented in docs/audit.md; keep the two in step.

Everything is deterministic (same input and settings give byte-identical files) and written
atomically: the output folder appears complete or not at all, and ``--clean-out`` goes through a
temporary file renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.atomic import (
    Output,
    already_exists,
    atomic_dir,
    atomic_write_all,
    check_output_file,
    check_separate,
    commit_outputs,
)
from ..core.errors import BuildError, InputError
from .core import AuditResult
from .report import render_html, render_markdown

ROWS_SCHEMA = pa.schema(
    [
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("flagged", pa.bool_(), nullable=False),
        pa.field(
            "reasons", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False
        ),
    ]
)
CLEAN_FORMATS = (".jsonl", ".json", ".parquet")
ALPACA_COLUMNS = ("instruction", "input", "output", "system")


def source_rows(result: AuditResult) -> np.ndarray:
    """The input row number of every audited row (0-based, skipped rows included)."""
    if result.source_rows is None:
        return np.arange(result.n_rows, dtype=np.int64)
    return np.asarray(result.source_rows, dtype=np.int64)


def rows_table(result: AuditResult) -> pa.Table:
    """One row per audited row, in input order (``source_row`` = the 0-based index of the row in
    the input as read, skipped rows included)."""
    return pa.table(
        {
            "source_row": pa.array(source_rows(result)),
            "score": pa.array(result.score.astype(np.float64)),
            "flagged": pa.array(result.flagged.astype(bool)),
            "reasons": pa.array(result.reasons, type=ROWS_SCHEMA.field("reasons").type),
        },
        schema=ROWS_SCHEMA,
    )


def trigger_records(result: AuditResult) -> list[dict[str, Any]]:
    """The ranked candidates as plain JSON records (``triggers.json``)."""
    records = []
    for rank, cand in enumerate(result.candidates, start=1):
        records.append(
            {
                "rank": rank,
                "text": cand.text,
                "score": round(cand.score, 4),
                "rows": int(len(cand.rows)),
                "poisoned_rows": int(len(cand.poisoned)),
                "positions": {k: int(v) for k, v in cand.placement.counts.items()},
                "fields": {k: int(v) for k, v in cand.placement.fields.items()},
                "target_example": result.target_example(cand),
                "target_clusters": [int(c) for c in cand.targets],
                "group": int(cand.group),
                "kind": cand.kind,
                "style_word": cand.style_word,
                "case_insensitive": bool(cand.mixed_case),
                "evidence": {
                    "purity": round(cand.purity, 4),
                    "base_rate": round(cand.base, 4),
                    "excess": round(cand.excess, 4),
                    "concentration": round(cand.concentration, 4),
                    "g": round(cand.g, 2),
                    "insertion": round(cand.evidence, 4),
                    "support": round(cand.support, 4),
                    "unusual": round(cand.unusual, 4),
                    **(
                        {}
                        if cand.model_evidence is None
                        else {"model": round(cand.model_evidence, 4)}
                    ),
                    **{k: round(float(v), 4) for k, v in cand.placement.parts.items()},
                    **{
                        k: (float(f"{v:.4g}") if k in ("p", "q") else round(float(v), 4))
                        for k, v in cand.signal_evidence.items()
                    },
                },
                "comparable": cand.comparable,
            }
        )
    return records


def summary(result: AuditResult) -> dict[str, Any]:
    """Counts and settings (``summary.json``)."""
    from ..core.config import to_mapping

    reasons: dict[str, int] = {}
    for row, flagged in zip(result.reasons, result.flagged.tolist()):
        if flagged:
            for reason in row:
                kind = reason.split(":", 1)[0]
                reasons[kind] = reasons.get(kind, 0) + 1
    clusters = result.corpus.clusters
    from .report import verdict

    return {
        "verdict": verdict(result),
        "rows": result.n_rows,
        "distinct_rows": int(len(result.distinct)),
        "flagged": result.n_flagged,
        "flagged_share": round(result.n_flagged / max(result.n_rows, 1), 6),
        "flagged_reasons": dict(sorted(reasons.items())),
        "candidates": len(result.candidates),
        "high_confidence_candidates": sum(
            c.score >= result.config.threshold for c in result.candidates
        ),
        "repeated_output_clusters": int((clusters.size >= 2).sum()),
        "orphan_clusters": [int(c) for c in result.orphan_clusters],
        "signals": {
            name: {k: int(v) for k, v in extra.items()}
            for name, extra in result.signal_extra.items()
        },
        "config": to_mapping(result.config),
    }


def _dump(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def _audit_fill(result: AuditResult, source: str, skipped: list[dict[str, Any]] | None = None):
    info = summary(result)
    if skipped:
        info["skipped_rows"] = skipped

    def fill(tmp: Path) -> None:
        pq.write_table(
            rows_table(result), tmp / "rows.parquet", compression="zstd", write_statistics=False
        )
        (tmp / "triggers.json").write_text(_dump(trigger_records(result)), encoding="utf-8")
        (tmp / "summary.json").write_text(_dump(info), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(result, source), encoding="utf-8")
        (tmp / "report.html").write_text(render_html(result, source), encoding="utf-8")

    return fill


def write_audit(
    result: AuditResult,
    out_dir: str | Path,
    *,
    source: str = "",
    overwrite: bool = False,
    skipped: list[dict[str, Any]] | None = None,
) -> Path:
    """Write the audit folder atomically; returns its path. ``skipped``: the input rows that
    could not be parsed (``summary.json`` lists them under ``skipped_rows``)."""
    out_dir = Path(out_dir)
    atomic_dir(out_dir, _audit_fill(result, source, skipped), overwrite=overwrite, kind="audit")
    return out_dir


def commit_audit(
    result: AuditResult,
    out_dir: str | Path,
    *,
    table: pa.Table | None = None,
    clean_out: str | Path | None = None,
    source: str = "",
    overwrite: bool = False,
    skipped: list[dict[str, Any]] | None = None,
) -> Path:
    """The audit folder and (with ``clean_out``) the clean corpus and its ``.removed.jsonl``,
    committed as one step under one lock (:func:`mbdata.core.atomic.commit_outputs`): a report never
    sits beside a clean corpus from another run, whatever is killed when."""
    out_dir = Path(out_dir)
    outputs = [Output(out_dir, _audit_fill(result, source, skipped), is_dir=True, kind="audit")]
    if clean_out is not None:
        if table is None:
            raise ValueError("clean_out needs the audited table")
        path = _clean_out_path(clean_out)
        write_removed, write_clean_file = _clean_fills(table, result, path)
        outputs += [Output(removed_path(path), write_removed), Output(path, write_clean_file)]
    commit_outputs(outputs, overwrite=overwrite)
    return out_dir


def _clean_out_path(path: str | Path) -> Path:
    """``path`` if it can take a clean corpus (a known extension, not a folder)."""
    path = Path(path)
    if path.suffix.lower() not in CLEAN_FORMATS:
        raise InputError(f"{path}: --clean-out must end in " + ", ".join(CLEAN_FORMATS))
    if path.is_dir():
        raise InputError(f"{path}: --clean-out is a folder, expected a file path")
    return path


def removed_path(clean_path: str | Path) -> Path:
    """Where ``--clean-out PATH`` explains its removals: ``PATH`` with ``.removed.jsonl``."""
    clean_path = Path(clean_path)
    return clean_path.with_name(clean_path.name[: -len(clean_path.suffix)] + ".removed.jsonl")


def write_clean(table: pa.Table, result: AuditResult, path: str | Path) -> tuple[Path, Path]:
    """The corpus without its flagged rows, as alpaca rows (JSONL, JSON or Parquet by the
    extension), plus ``<name>.removed.jsonl``: one record per removed row with its
    ``source_row``, ``score``, ``reasons`` and text."""
    path = _clean_out_path(path)
    write_removed, write_clean_file = _clean_fills(table, result, path)
    explained = removed_path(path)
    # Renamed together once both are complete: never a clean corpus without its explanation.
    atomic_write_all([(explained, write_removed), (path, write_clean_file)])
    return path, explained


def _clean_fills(table: pa.Table, result: AuditResult, path: Path):
    """The two writers of ``--clean-out``: the removal record and the clean corpus."""
    columns = [c for c in ALPACA_COLUMNS if c in table.column_names]
    if "system" in columns and table.column("system").null_count == table.num_rows:
        columns.remove("system")
    keep = ~result.flagged
    kept = table.select(columns).filter(pa.array(keep))
    fmt = path.suffix.lower()

    def write_clean_file(tmp: Path) -> None:
        if fmt == ".parquet":
            pq.write_table(kept, tmp, compression="zstd", write_statistics=False)
            return
        rows = kept.to_pylist()
        with tmp.open("w", encoding="utf-8") as fh:
            if fmt == ".json":
                fh.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
            else:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    removed = np.flatnonzero(result.flagged)
    texts = table.select(columns).take(pa.array(removed)).to_pylist()
    numbers = source_rows(result)

    def write_removed(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as fh:
            for row, text in zip(removed.tolist(), texts):
                fh.write(
                    json.dumps(
                        {
                            "source_row": int(numbers[row]),
                            "score": float(result.score[row]),
                            "reasons": result.reasons[row],
                            **text,
                        },
                        ensure_ascii=False,
                    )
                    + "\n"
                )

    return write_removed, write_clean_file


def check_clean_out(
    path: str | Path, input_path: str | Path, overwrite: bool, out_dir: str | Path | None = None
) -> None:
    """Refuse a ``--clean-out`` that would replace, contain or sit inside the input, sit inside the
    audit folder, or replace an existing file without ``--overwrite`` (checked before any work;
    the existence check is repeated under the lock at commit)."""
    path = _clean_out_path(path)
    for target in (path, removed_path(path)):
        if target.resolve() == Path(input_path).resolve():
            raise InputError(
                f"{target}: --clean-out would overwrite the audited input; choose another path"
            )
        try:
            check_separate([input_path], [target])
        except BuildError as exc:
            raise InputError(f"--clean-out {exc}") from None
        if out_dir is not None and target.resolve().is_relative_to(Path(out_dir).resolve()):
            raise InputError(
                f"{target}: --clean-out must not lie inside the audit folder "
                f"{out_dir}; choose a path outside it"
            )
        check_output_file(target, overwrite=True)  # repairs an interrupted run first
        if target.exists() and not overwrite:
            raise InputError(already_exists(target))
