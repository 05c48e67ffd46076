"""``mb inspect``: what a build holds, at a glance.

:func:`summarize` returns plain data (also printed by ``mb inspect --json``): the recipe identity,
row counts by split, role, source, behaviour and trigger set, the exact rates each trigger set
achieved against its target, per-stage drops (dedup, audit, hold-out...), and a few sample rows.
:func:`render` turns it into aligned text tables.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .buildio import verify_shards


def _counts(values: list[Any]) -> dict[str, int]:
    return dict(sorted(Counter("-" if v is None else str(v) for v in values).items()))


def summarize(path: str | Path, samples: int = 3, seed: int = 0) -> dict[str, Any]:
    build = verify_shards(path)
    m = build.manifest
    by: dict[str, dict[str, dict[str, int]]] = {}
    sample_rows: dict[str, list[dict[str, Any]]] = {}
    rng = np.random.default_rng(seed)
    for split in build.splits:
        table = build.table(split)
        by[split] = {
            col: _counts(table.column(col).to_pylist())
            for col in ("role", "source", "behavior", "trigger_set")
        }
        if samples:
            idx = np.sort(
                rng.choice(table.num_rows, size=min(samples, table.num_rows), replace=False)
            )
            keep = ("id", "role", "trigger_set", "instruction", "input", "output")
            sample_rows[split] = [{k: r[k] for k in keep} for r in table.take(idx).to_pylist()]
    train_rows = None
    for stage in m.get("stages", []):
        for info in stage.get("info", {}).values():
            if isinstance(info, dict) and "train_rows" in info:
                train_rows = info["train_rows"]
    triggers = []
    for t in m.get("triggers", []):
        rows = t.get("rows")
        achieved = rows / train_rows if rows is not None and train_rows else None
        triggers.append(
            {
                "name": t["name"],
                "owner": t["owner"],
                "texts": t["texts"],
                "placement": t["placement"],
                "behavior": t["behavior"],
                "rows": rows,
                "target_rate": t["rate"],
                "achieved_rate": achieved,
            }
        )
    return {
        "path": str(build.path),
        "name": m.get("name"),
        "version": m.get("version"),
        "fingerprint": m.get("fingerprint"),
        "content_hash": m.get("content_hash"),
        "seed": m.get("seed"),
        "splits": {s: v["rows"] for s, v in m.get("splits", {}).items()},
        "by_split": by,
        "train_rows_before_poisoning": train_rows,
        "triggers": triggers,
        "stages": [
            {
                "name": s["name"],
                "rows_in": s["rows_in"],
                "rows_out": s["rows_out"],
                "dropped": s["dropped"],
            }
            for s in m.get("stages", [])
        ],
        "side_tables": {k: v["rows"] for k, v in m.get("side_tables", {}).items()},
        "skipped_rows": m.get("skipped_rows"),
        "samples": sample_rows,
    }


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(cells[0], widths)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells[1:]]
    return out


def _short(text: str, n: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _pairs(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items())


def _show(value: Any) -> str:
    return "-" if value is None else str(value)


def _trigger_lines(s: dict[str, Any]) -> list[str]:
    """The trigger-set table: target and achieved rates and where each set's rows went."""
    if not s["triggers"]:
        return []
    rows = []
    for t in s["triggers"]:
        per_split = {sp: s["by_split"][sp]["trigger_set"].get(t["name"], 0) for sp in s["splits"]}
        rate = "" if t["achieved_rate"] is None else f"{t['achieved_rate']:.4f}"
        rows.append(
            [
                t["name"],
                t["owner"],
                " | ".join(t["texts"]),
                t["placement"],
                t["behavior"],
                t["rows"],
                f"{t['target_rate']:.4f}",
                rate,
                ", ".join(f"{k}={v}" for k, v in per_split.items() if v),
            ]
        )
    header = [
        "trigger set",
        "owner",
        "trigger",
        "placement",
        "behaviour",
        "train rows",
        "target",
        "achieved",
        "rows per split",
    ]
    return [
        "",
        f"trigger sets (rates against {s['train_rows_before_poisoning']} train rows "
        "before poisoning)",
        *_table(header, rows),
    ]


def _sample_lines(s: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for split, rows in s["samples"].items():
        lines += ["", f"samples from {split}"]
        for r in rows:
            tag = r["role"] + (f"/{r['trigger_set']}" if r["trigger_set"] else "")
            prompt = r["instruction"] + (f" | {r['input']}" if r["input"] else "")
            lines.append(f"  [{tag}] {_short(prompt)}  ->  {_short(r['output'], 50)}")
    return lines


def render(summary: dict[str, Any]) -> str:
    """:func:`summarize`'s summary as the text ``mb inspect`` prints: header, splits, trigger
    sets, behaviours, stages, skipped rows, side tables, samples."""
    s = summary
    lines = [
        f"{_show(s['name'])} {_show(s['version'])}  ({s['path']})",
        f"fingerprint  {_show(s['fingerprint'])}",
        f"content hash {_show(s['content_hash'])}",
        f"seed         {_show(s['seed'])}",
        "",
        "splits",
    ]
    lines += _table(
        ["split", "rows", "roles", "sources"],
        [
            [sp, n, _pairs(s["by_split"][sp]["role"]), _pairs(s["by_split"][sp]["source"])]
            for sp, n in s["splits"].items()
        ],
    )
    lines += _trigger_lines(s)
    lines += ["", "behaviours"]
    lines += _table(
        ["split", "counts"], [[sp, _pairs(v["behavior"])] for sp, v in s["by_split"].items()]
    )
    lines += ["", "stages"]
    lines += _table(
        ["stage", "rows in", "rows out", "dropped"],
        [[st["name"], st["rows_in"], st["rows_out"], _pairs(st["dropped"])] for st in s["stages"]],
    )
    skipped = s.get("skipped_rows")
    if skipped:
        lines += [
            "",
            f"skipped input rows: {skipped['rows']} ({_pairs(skipped['by_reason'])}), "
            f"each listed in {skipped['file']}",
        ]
    if s["side_tables"]:
        lines += [
            "",
            "side tables: " + ", ".join(f"{k} ({v} rows)" for k, v in s["side_tables"].items()),
        ]
    lines += _sample_lines(s)
    return "\n".join(lines)
