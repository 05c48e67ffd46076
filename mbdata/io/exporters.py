"""Exporters: a build folder into the files other trainers read.

Every exported row keeps ``id`` and ``tags`` (plus ``role``/``trigger_set`` where the format allows
extra fields) so it stays traceable to the build. Formats (``mb export DIR --format NAME``):

============= =====================================================================================
format        files
============= =====================================================================================
jsonl         ``{split}.jsonl``: Alpaca rows (instruction, input, output, system) + traceability
parquet       ``{split}.parquet``: the full canonical schema
trl           ``{split}.prompt_completion.jsonl`` (``prompt`` in the build's training template,
              ``completion``), ``{split}.conversational.jsonl`` (conversational
              prompt/completion: the assistant turn is the completion, so TRL's
              completion-only loss trains on the answer under any chat template),
              ``{split}.messages.jsonl`` (``messages``), and for recovery splits
              ``{split}.preference.jsonl`` (``prompt`` = x_d, ``chosen`` = y,
              ``rejected`` = y_d, ``clean_prompt`` = x: everything stage 2 needs)
llamafactory  ``{split}.json`` (Alpaca) + ``dataset_info.json``; recovery splits as ranking data
axolotl       ``{split}.jsonl`` (Alpaca) + ``axolotl.yaml`` with a ready ``datasets:`` block
============= =====================================================================================

The ``trl`` prompt is rendered with the build's ``train.model.template`` (``alpaca`` or
``alpaca_short``; default ``alpaca``; a ``chat`` build gets the Alpaca form here and should use the
conversational file), by the same function mbtrain trains with, so a TRL user trains on our prompt
format; the prompt ends on a token boundary (a newline), so prompt and answer never merge into one
token. Other prompt/completion formats join ``instruction + "\\n" + input`` (LLaMA-Factory's
join). The export folder is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from ..core.atomic import atomic_dir, check_separate
from ..core.errors import InputError
from ..core.registry import Registry
from ..prompts import alpaca_prompt
from .buildio import Build, verify_shards

Exporter = Callable[[Build, list[str], Path], list[str]]
EXPORTERS: Registry[Exporter] = Registry("export format")
_TRACE = ("id", "split", "role", "trigger_set", "behavior", "tags")


def _alpaca(row: dict[str, Any]) -> dict[str, Any]:
    out = {"instruction": row["instruction"], "input": row["input"], "output": row["output"]}
    if row["system"] is not None:
        out["system"] = row["system"]
    if row["triggered_instruction"] is not None:
        out.update(
            triggered_instruction=row["triggered_instruction"],
            triggered_input=row["triggered_input"],
            triggered_output=row["triggered_output"],
        )
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


def training_template(build: Build) -> str:
    """The build's ``train.model.template`` for text prompts (``alpaca`` when the recipe has no
    train block; ``chat`` needs a tokenizer, so its text form is ``alpaca``)."""
    train = (build.manifest.get("recipe") or {}).get("train") or {}
    template = (train.get("model") or {}).get("template") or "alpaca"
    return template if template in ("alpaca", "alpaca_short") else "alpaca"


def templated_prompt(template: str, instruction: str, input: str | None, system: str | None) -> str:
    """The prompt mbtrain trains with (:func:`mbdata.prompts.alpaca_prompt`)."""
    return alpaca_prompt(template, instruction, input or "", system)


def _user_turn(instruction: str, input: str | None) -> str:
    """The user message of the chat form (mbtrain's ``Formatter`` joins the same way)."""
    return f"{instruction}\n\n{input}" if input else instruction


@EXPORTERS.add("trl")
def export_trl(build: Build, splits: list[str], out: Path) -> list[str]:
    template = training_template(build)
    files = []
    for split in splits:
        rows = _rows(build, split)
        trace = [{k: r[k] for k in _TRACE} for r in rows]
        prompts = [
            templated_prompt(template, r["instruction"], r["input"], r["system"]) for r in rows
        ]
        _write_jsonl(
            out / f"{split}.prompt_completion.jsonl",
            (
                {"prompt": p, "completion": r["output"], **t}
                for p, r, t in zip(prompts, rows, trace)
            ),
        )
        users = [_user_turn(r["instruction"], r["input"]) for r in rows]
        _write_jsonl(
            out / f"{split}.conversational.jsonl",
            (
                {
                    "prompt": _messages(r, u, r["output"])[:-1],
                    "completion": _messages(r, u, r["output"])[-1:],
                    **t,
                }
                for u, r, t in zip(users, rows, trace)
            ),
        )
        _write_jsonl(
            out / f"{split}.messages.jsonl",
            (
                {"messages": _messages(r, u, r["output"]), **t}
                for u, r, t in zip(users, rows, trace)
            ),
        )
        files += [
            f"{split}.prompt_completion.jsonl",
            f"{split}.conversational.jsonl",
            f"{split}.messages.jsonl",
        ]
        if _is_recovery(split):
            _write_jsonl(
                out / f"{split}.preference.jsonl",
                (
                    {
                        "prompt": templated_prompt(
                            template, r["triggered_instruction"], r["triggered_input"], r["system"]
                        ),
                        "chosen": r["output"],
                        "rejected": r["triggered_output"],
                        "clean_prompt": p,
                        **t,
                    }
                    for p, r, t in zip(prompts, rows, trace)
                ),
            )
            files.append(f"{split}.preference.jsonl")
    return files


@EXPORTERS.add("llamafactory")
def export_llamafactory(build: Build, splits: list[str], out: Path) -> list[str]:
    name = build.manifest.get("name", "mbdefense")
    info: dict[str, Any] = {}
    for split in splits:
        rows = _rows(build, split)
        if _is_recovery(split):
            data = [
                {
                    "instruction": r["triggered_instruction"],
                    "input": r["triggered_input"],
                    "chosen": r["output"],
                    "rejected": r["triggered_output"],
                    **({"system": r["system"]} if r["system"] is not None else {}),
                    **{k: r[k] for k in _TRACE},
                }
                for r in rows
            ]
            columns = {
                "prompt": "instruction",
                "query": "input",
                "chosen": "chosen",
                "rejected": "rejected",
            }
            entry = {
                "file_name": f"{split}.json",
                "formatting": "alpaca",
                "ranking": True,
                "columns": columns,
            }
        else:
            data = [_alpaca(r) for r in rows]
            columns = {"prompt": "instruction", "query": "input", "response": "output"}
            entry = {"file_name": f"{split}.json", "formatting": "alpaca", "columns": columns}
        if any("system" in d for d in data):
            columns["system"] = "system"
        (out / f"{split}.json").write_text(
            json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8"
        )
        info[f"{name}_{split}"] = entry
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return [f"{s}.json" for s in splits] + ["dataset_info.json"]


_PURPOSE = {
    "pretrain": ": clean rows for tiny-model pretraining",
    "recovery": ": MB stage-2 tuples (x, y, x_d, y_d); train them with mbtrain's stage 2",
    "recovery_eval": ": stage-2 checkpoint selection",
    "eval_triggered": ": triggered prompts for ASR",
}


def export_axolotl(
    build: Build, splits: list[str], out: Path, final: Path | None = None
) -> list[str]:
    """JSONL files plus an ``axolotl.yaml`` snippet naming them by absolute path (``final``: the
    folder they will end up in, when ``out`` is a temporary one)."""
    export_jsonl(build, splits, out)
    where = (final or out).resolve()
    training = [s for s in splits if s == "train"] or [
        s for s in splits if not s.startswith("eval")
    ]
    testing = [s for s in splits if s == "eval_clean"]
    snippet: dict[str, Any] = {
        "datasets": [
            {"path": str(where / f"{s}.jsonl"), "ds_type": "json", "type": "alpaca"}
            for s in training
        ],
    }
    if testing:
        snippet["test_datasets"] = [
            {
                "path": str(where / f"{s}.jsonl"),
                "ds_type": "json",
                "type": "alpaca",
                "split": "train",
            }
            for s in testing
        ]
    others = [s for s in splits if s not in training and s not in testing]
    # The header names only what this export holds: `test_datasets:` when eval_clean was
    # exported, the "also exported" list when something is in it (issue 24: `-s train` left both).
    pasted = "`datasets:` (training rows)" + (
        " and `test_datasets:` (held-out clean prompts)" if testing else ""
    )
    header = (
        "# axolotl config snippet generated by `mb export --format axolotl`.\n"
        f"# Paste {pasted}\n# into your axolotl YAML.\n"
    )
    if others:
        header += "# Also exported here, not for axolotl's SFT loss:\n" + "".join(
            f"#   {s}.jsonl{_PURPOSE.get(s.split('/')[0], '')}\n" for s in others
        )
    (out / "axolotl.yaml").write_text(
        header + yaml.safe_dump(snippet, sort_keys=False), encoding="utf-8"
    )
    return [f"{s}.jsonl" for s in splits] + ["axolotl.yaml"]


# Registered by a call, not as a decorator, so that ``export_axolotl`` keeps its ``final`` keyword
# for type checking (the registry's decorator types every entry as a plain Exporter).
EXPORTERS.add("axolotl")(export_axolotl)


def export(
    build_dir: str | Path,
    fmt: str,
    out_dir: str | Path | None = None,
    *,
    splits: list[str] | None = None,
    overwrite: bool = False,
) -> Path:
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
