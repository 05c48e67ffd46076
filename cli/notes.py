"""What the data commands say about input rows they read but did not use, worded once.

``mb build --skip-bad-rows``, ``mb dedup`` and ``mb audit`` each skip rows (the build: malformed
rows it was told to drop; dedup and audit: rows they cannot parse) and list every one in a file;
the line that says so had been written three ways (issue 28)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def skipped_rows_line(
    count: int,
    *,
    what: str,
    where: str | Path,
    reasons: dict[str, int] | None = None,
    first: list[str] | None = None,
) -> str:
    """``skipped N WHAT input rows (reasons | the first ones); each is listed ... in WHERE``."""
    detail = ""
    if reasons:
        detail = " (" + ", ".join(f"{k}={v}" for k, v in reasons.items()) + ")"
    elif first:
        shown = "; ".join(first)
        detail = f" (first {len(first)}: {shown})" if count > len(first) else f": {shown}"
    plural = "" if count == 1 else "s"
    return (
        f"skipped {count:,} {what} input row{plural}{detail}; each is listed with its reason "
        f"in {where}"
    )


def manifest_skipped_line(manifest: dict[str, Any], out: str | Path, what: str) -> str | None:
    """The line for a build or dedup output's ``skipped_rows`` (None when nothing was skipped)."""
    skipped = manifest.get("skipped_rows")
    if not skipped:
        return None
    return skipped_rows_line(
        skipped["rows"], what=what, where=Path(out) / skipped["file"], reasons=skipped["by_reason"]
    )
