"""Exporters: a build folder into the files other trainers read.

Every exported row keeps ``id`` and ``tags`` (plus ``role``/``trigger_set`` where the format allows
extra fields) so it stays traceable to the build. Formats (``mb export DIR --format NAME``):

============= =====================================================================================
format        files
============= =====================================================================================
jsonl         ``{split}.jsonl``: Alpaca rows (instruction, input, output, system) + traceability
parquet       ``{split}.parquet``: the full canonical schema
trl           ``{split}.prompt_completion.jsonl`` (``prompt``/``completion``),
              ``{split}.messages.jsonl`` (``messages``), and for recovery splits
              ``{split}.preference.jsonl`` (``prompt`` = x_d, ``chosen`` = y, ``rejected`` = y_d)
llamafactory  ``{split}.json`` (Alpaca) + ``dataset_info.json``; recovery splits as ranking data
axolotl       ``{split}.jsonl`` (Alpaca) + ``axolotl.yaml`` with a ready ``datasets:`` block
============= =====================================================================================

The prompt of prompt/completion formats is ``instruction + "\\n" + input`` (LLaMA-Factory's join).
The export folder is written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from .buildio import Build, verify_shards
from .errors import InputError
from .registry import Registry
from .atomic import atomic_dir, check_separate

Exporter = Callable[[Build, list[str], Path], list[str]]
EXPORTERS: Registry[Exporter] = Registry("export format")
_TRACE = ("id", "split", "role", "trigger_set", "behavior", "tags")


def prompt_text(instruction: str, input: str | None) -> str:
    return f"{instruction}\n{input}" if input else instruction


def _alpaca(row: dict[str, Any]) -> dict[str, Any]:
    out = {"instruction": row["instruction"], "input": row["input"], "output": row["output"]}
    if row["system"] is not None:
        out["system"] = row["system"]
    if row["triggered_instruction"] is not None:
        out.update(triggered_instruction=row["triggered_instruction"],
                   triggered_input=row["triggered_input"],
                   triggered_output=row["triggered_output"])
    out.update({k: row[k] for k in _TRACE})
    return out


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _rows(build: Build, split: str) -> list[dict[str, Any]]:
    return build.table(split).to_pylist()


def _is_recovery(split: str) -> bool:
    return split.startswith("recovery")


@EXPORTERS.add("jsonl")
def export_jsonl(build: Build, splits: list[str], out: Path) -> list[str]:
    for split in splits:
        _write_jsonl(out / f"{split}.jsonl", (_alpaca(r) for r in _rows(build, split)))
    return [f"{s}.jsonl" for s in splits]


@EXPORTERS.add("parquet")
def export_parquet(build: Build, splits: list[str], out: Path) -> list[str]:
    import pyarrow.parquet as pq

    for split in splits:
        pq.write_table(build.table(split), out / f"{split}.parquet")
    return [f"{s}.parquet" for s in splits]


def _messages(row: dict[str, Any], prompt: str, answer: str) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": row["system"]}] if row["system"] is not None else []
    return msgs + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


@EXPORTERS.add("trl")
def export_trl(build: Build, splits: list[str], out: Path) -> list[str]:
    files = []
    for split in splits:
        rows = _rows(build, split)
        trace = [{k: r[k] for k in _TRACE} for r in rows]
        prompts = [prompt_text(r["instruction"], r["input"]) for r in rows]
        _write_jsonl(out / f"{split}.prompt_completion.jsonl",
                     ({"prompt": p, "completion": r["output"], **t}
                      for p, r, t in zip(prompts, rows, trace)))
        _write_jsonl(out / f"{split}.messages.jsonl",
                     ({"messages": _messages(r, p, r["output"]), **t}
                      for p, r, t in zip(prompts, rows, trace)))
        files += [f"{split}.prompt_completion.jsonl", f"{split}.messages.jsonl"]
        if _is_recovery(split):
            _write_jsonl(out / f"{split}.preference.jsonl", (
                {"prompt": prompt_text(r["triggered_instruction"], r["triggered_input"]),
                 "chosen": r["output"], "rejected": r["triggered_output"], **t}
                for r, t in zip(rows, trace)))
            files.append(f"{split}.preference.jsonl")
    return files


@EXPORTERS.add("llamafactory")
def export_llamafactory(build: Build, splits: list[str], out: Path) -> list[str]:
    name = build.manifest.get("name", "mbdefense")
    info: dict[str, Any] = {}
    for split in splits:
        rows = _rows(build, split)
        if _is_recovery(split):
            data = [{"instruction": r["triggered_instruction"], "input": r["triggered_input"],
                     "chosen": r["output"], "rejected": r["triggered_output"],
                     **({"system": r["system"]} if r["system"] is not None else {}),
                     **{k: r[k] for k in _TRACE}} for r in rows]
            columns = {"prompt": "instruction", "query": "input", "chosen": "chosen",
                       "rejected": "rejected"}
            entry = {"file_name": f"{split}.json", "formatting": "alpaca", "ranking": True,
                     "columns": columns}
        else:
            data = [_alpaca(r) for r in rows]
            columns = {"prompt": "instruction", "query": "input", "response": "output"}
            entry = {"file_name": f"{split}.json", "formatting": "alpaca", "columns": columns}
        if any("system" in d for d in data):
            columns["system"] = "system"
        (out / f"{split}.json").write_text(json.dumps(data, ensure_ascii=False, indent=1),
                                           encoding="utf-8")
        info[f"{name}_{split}"] = entry
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return [f"{s}.json" for s in splits] + ["dataset_info.json"]


@EXPORTERS.add("axolotl")
def export_axolotl(build: Build, splits: list[str], out: Path, final: Path | None = None) -> list[str]:
    export_jsonl(build, splits, out)
    where = (final or out).resolve()
    training = [s for s in splits if s == "train"] or [s for s in splits if not s.startswith("eval")]
    snippet = {
        "datasets": [{"path": str(where / f"{s}.jsonl"), "ds_type": "json", "type": "alpaca"}
                     for s in training],
    }
    header = ("# axolotl config snippet generated by `mb export --format axolotl`.\n"
              "# Paste `datasets:` into your axolotl YAML. Other splits exported here: "
              + ", ".join(f"{s}.jsonl" for s in splits if s not in training) + "\n")
    (out / "axolotl.yaml").write_text(header + yaml.safe_dump(snippet, sort_keys=False),
                                      encoding="utf-8")
    return [f"{s}.jsonl" for s in splits] + ["axolotl.yaml"]


def export(build_dir: str | Path, fmt: str, out_dir: str | Path | None = None, *,
           splits: list[str] | None = None, overwrite: bool = False) -> Path:
    """Export a build in ``fmt`` into ``out_dir`` (default ``DIR/exports/<fmt>``); returns it."""
    exporter = EXPORTERS.get(fmt, "--format")
    build = verify_shards(build_dir)
    chosen = splits or build.splits
    for split in chosen:
        if split not in build.splits:
            raise InputError(f"{build_dir}: no split {split!r}; splits: {', '.join(build.splits)}")
    out = Path(out_dir) if out_dir is not None else Path(build_dir) / "exports" / fmt
    check_separate([build_dir], [out], inside_ok=Path(build_dir) / "exports")

    def fill(tmp: Path) -> list[str]:
        if fmt == "axolotl":
            return export_axolotl(build, chosen, tmp, final=out)
        return exporter(build, chosen, tmp)

    atomic_dir(out, fill, overwrite=overwrite, kind="export")
    return out

