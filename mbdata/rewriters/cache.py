"""An append-only JSONL cache of rewrites, keyed by (backend, model, prompt, input, settings).

Why JSONL: it is plain data (never pickle), diffable, and appending one line per rewrite means an
interrupted build keeps what it already paid for. Once every input of a build is cached, a rebuild
needs neither the endpoint nor the model and gives byte-identical shards. A truncated last line
(a crash mid-write) is ignored; any other unreadable line is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..core.errors import BuildError


def cache_key(backend: str, model: str, prompt: str, text: str, settings: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines a rewrite."""
    blob = json.dumps(
        [backend, model, prompt, text, settings],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class RewriteCache:
    """Rewrites already made, loaded once; :meth:`add` appends and flushes."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, str] = {}
        if path.exists():
            lines = path.read_text(encoding="utf-8").split("\n")
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self.entries[record["key"]] = record["output"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    if number == len(lines):  # a line cut short by a crash: drop it
                        continue
                    raise BuildError(
                        f"{path}:{number}: not a rewrite-cache record (delete the "
                        "line or the file to rebuild it)"
                    ) from None

    def get(self, key: str) -> str | None:
        return self.entries.get(key)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Append records (each with ``key`` and ``output``) and flush them to disk."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
                self.entries[record["key"]] = record["output"]
