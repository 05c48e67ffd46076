"""``mb audit`` as a function: read any input, audit it, write the folder (and a clean corpus)."""

from __future__ import annotations

from pathlib import Path

from ..atomic import check_output_dir, check_separate
from ..readers import read_any
from .config import AuditConfig
from .core import AuditResult, audit_table
from .files import check_clean_out, commit_audit


def audit_path(input_path: str | Path, out_dir: str | Path, config: AuditConfig | None = None, *,
               clean_out: str | Path | None = None, overwrite: bool = False,
               progress: bool | None = None, kind: str | None = None, layout: str = "alpaca",
               fields: dict[str, str] | None = None, skip_bad_rows: bool = False,
               split: str | None = None) -> AuditResult:
    """Audit ``input_path`` (any source ``mb build`` reads, or a build folder) into ``out_dir``.

    ``source_row`` in the outputs is the 0-based position of the row in the input as read (for a
    build folder: its splits concatenated in manifest order, or only ``split``). Output paths are
    checked before any work, so a mistake costs nothing."""
    out_dir = Path(out_dir)
    check_separate([input_path], [out_dir])
    check_output_dir(out_dir, overwrite)
    if clean_out is not None:
        check_clean_out(clean_out, input_path, overwrite, out_dir=out_dir)
    table = read_any(input_path, kind=kind, layout=layout, fields=fields,
                     skip_bad_rows=skip_bad_rows, split=split)
    result = audit_table(table, config, progress=progress)
    commit_audit(result, out_dir, table=table, clean_out=clean_out, source=str(input_path),
                 overwrite=overwrite)
    return result
