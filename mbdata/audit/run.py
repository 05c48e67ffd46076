"""``mb audit`` as a function: read any input, audit it, write the folder (and a clean corpus)."""

from __future__ import annotations

from pathlib import Path

from ..core.atomic import check_output_dir, check_separate
from ..io.readers import read_input
from .config import AuditConfig
from .core import AuditResult, audit_table
from .files import check_clean_out, commit_audit


def audit_path(
    input_path: str | Path,
    out_dir: str | Path,
    config: AuditConfig | None = None,
    *,
    clean_out: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    kind: str | None = None,
    layout: str = "alpaca",
    fields: dict[str, str] | None = None,
    split: str | None = None,
    engine: str = "local",
    delimiter: str | None = None,
) -> AuditResult:
    """Audit ``input_path`` (any source ``mb build`` reads, or a build folder) into ``out_dir``.

    ``source_row`` in the outputs is the 0-based index of the row in the input as read, skipped
    rows included (for a build folder: the position in its splits concatenated in manifest order,
    or only ``split``). Rows with empty texts are audited (they are data, and maybe a signal);
    only rows that cannot be parsed are skipped, and they are listed in ``summary.json``
    (``skipped_rows``) and returned in ``result.skipped``. Output paths are checked before any work, so a mistake
    costs nothing. ``engine`` names the executor (:mod:`mbdata.executors`) the corpus statistics
    are computed on per batch; the flags are those of ``local`` on every one."""
    from ..executors import check_engine, open_executor

    engine = check_engine(engine)
    out_dir = Path(out_dir)
    check_separate([input_path], [out_dir])
    check_output_dir(out_dir, overwrite, kind="audit")
    if clean_out is not None:
        check_clean_out(clean_out, input_path, overwrite, out_dir=out_dir)
    read = read_input(
        input_path,
        kind=kind,
        layout=layout,
        fields=fields,
        delimiter=delimiter,
        split=split,
        lenient=True,
    )
    table = read.table
    with open_executor(engine):
        result = audit_table(table, config, progress=progress, engine=engine)
    result.source_rows = read.row_numbers
    result.skipped = read.skipped
    commit_audit(
        result,
        out_dir,
        table=table,
        clean_out=clean_out,
        source=str(input_path),
        overwrite=overwrite,
        skipped=[b.record() for b in read.skipped],
    )
    return result
