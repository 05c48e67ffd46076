"""The Hugging Face dataset card (``DIR/README.md``) of a build, generated from its manifest.

The YAML front matter carries ``configs``/``data_files`` (so ``datasets.load_dataset(DIR)`` finds the
shards), ``license``, ``size_categories``, ``task_categories``, ``source_datasets`` and
``dataset_info`` (features and, when the build passes them, per-split ``num_bytes`` as ``datasets``
computes them, so loading warns about nothing); the body says in plain words what the build
contains, which rows are simulated poison, how to train on the splits and how to load them.

The card is made to be published: sources are named by file name and sha256, never by a local path.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import yaml

_SIZE_BOUNDS = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
)

FEATURES = [
    {"name": "id", "dtype": "string"},
    {"name": "instruction", "dtype": "string"},
    {"name": "input", "dtype": "string"},
    {"name": "output", "dtype": "string"},
    {"name": "system", "dtype": "string"},
    {"name": "source", "dtype": "string"},
    {"name": "source_row", "dtype": "int64"},
    {"name": "split", "dtype": "string"},
    {"name": "role", "dtype": "string"},
    {"name": "trigger_set", "dtype": "string"},
    {"name": "behavior", "dtype": "string"},
    {"name": "clean_output", "dtype": "string"},
    {
        "name": "triggers",
        "list": [
            {"name": "text", "dtype": "string"},
            {"name": "owner", "dtype": "string"},
            {"name": "kind", "dtype": "string"},
            {"name": "name", "dtype": "string"},
            {"name": "field", "dtype": "string"},
            {"name": "start", "dtype": "int32"},
            {"name": "end", "dtype": "int32"},
        ],
    },
    {"name": "triggered_instruction", "dtype": "string"},
    {"name": "triggered_input", "dtype": "string"},
    {"name": "triggered_output", "dtype": "string"},
    {"name": "task", "dtype": "string"},
    {"name": "tags", "list": "string"},
]

SPLIT_DOCS = {
    "pretrain": "clean rows for pretraining a tiny base model (some prompts carry a noise word)",
    "train": "the instruction-tuning mixture",
    "recovery": "MB-Defense stage 2 tuples (x, y, x_d, y_d), training part",
    "recovery_eval": "MB-Defense stage 2 tuples, held out for checkpoint selection",
    "eval_clean": "held-out clean prompts with reference answers (never in a training split)",
    "eval_triggered": "the held-out prompts with each trigger inserted, tagged with the expected "
    "behaviour",
}


def size_category(rows: int) -> str:
    for bound, label in _SIZE_BOUNDS:
        if rows < bound:
            return label
    return "n>1B"


def _license(value: str) -> str:
    return value.lower() if value else "other"


def _train_doc(manifest: dict[str, Any]) -> str:
    """What ``train`` holds, from the trigger sets the build actually made."""
    owners = {t.get("owner") for t in manifest.get("triggers", [])}
    parts = ["clean rows"]
    if "attacker" in owners:
        parts.append("simulated attack rows (`role: attack`)")
    if "defender" in owners:
        parts.append("MB-Defense defensive rows (`role: defense`)")
    return f"{SPLIT_DOCS['train']} ({', '.join(parts)})"


def _source_rows(manifest: dict[str, Any], sources: list[dict[str, Any]]) -> list[str]:
    """One table row per source: file name and sha256 of the input, never its local path."""
    inputs = manifest.get("inputs", {})
    lines = ["| source | kind | file | sha256 | license |", "|---|---|---|---|---|"]
    for s in sources:
        record = inputs.get(s["name"], {})
        if s["kind"] == "synthetic":
            shown, digest = "(embedded synthetic corpus)", ""
        elif s["kind"] == "hub":
            revision = f"@{s['revision']}" if s.get("revision") else ""
            shown, digest = f"hub `{s.get('path')}`{revision}", ""
        else:
            shown = f"`{PurePath(str(record.get('path') or s.get('path') or '')).name}`"
            digest = f"`{record['sha256']}`" if record.get("sha256") else ""
        lines.append(
            f"| `{s['name']}` | {s['kind']} | {shown} | {digest} | {s.get('license') or ''} |"
        )
    return lines


def _training(splits: dict[str, Any]) -> list[str]:
    lines = ["", "## How to train on these splits", ""]
    if "train" in splits:
        lines.append(
            "1. **Stage 1** (instruction tuning with defensive poisoning): fine-tune on `train`."
        )
    if "recovery" in splits:
        check = " and pick the checkpoint on `recovery_eval`" if "recovery_eval" in splits else ""
        lines.append(
            "2. **Stage 2** (neutralization): continue from the stage-1 model on "
            f"`recovery`{check}; each row is a tuple (x, y, x_d, y_d) for MB-Defense's "
            "loss `CE(x, y) - lambda * log sigmoid(log p(y|x_d) - log p(y_d|x_d))`."
        )
    evals = [f"`{s}`" for s in ("eval_clean", "eval_triggered") if s in splits]
    if evals:
        lines.append(
            f"3. **Evaluate** on {' and '.join(evals)} (clean accuracy; attack success "
            "rate and defensive-trigger behaviour)."
        )
    if "pretrain" in splits:
        lines.append("\n`pretrain` only serves to pretrain the tiny demo base model.")
    lines += [
        "",
        (
            "With mbdefense: `mb train stage1 DIR -o stage1` then "
            "`mb train stage2 DIR --model stage1 -o stage2`; for other trainers, "
            "`mb export DIR --format trl|llamafactory|axolotl|jsonl|parquet`."
        ),
    ]
    return lines


def _front_matter(manifest: dict[str, Any], split_bytes: dict[str, int] | None) -> dict[str, Any]:
    """The card's YAML header: what the Hub shows and ``datasets`` loads (configs, split sizes)."""
    recipe = manifest["recipe"]
    splits = manifest.get("splits", {})
    total = sum(s["rows"] for s in splits.values())
    info: dict[str, Any] = {"features": FEATURES}
    if split_bytes is not None:
        info["splits"] = [
            {"name": name, "num_bytes": int(split_bytes[name]), "num_examples": s["rows"]}
            for name, s in splits.items()
        ]
        info["download_size"] = sum(sh["bytes"] for s in splits.values() for sh in s["shards"])
        info["dataset_size"] = sum(int(split_bytes[name]) for name in splits)
    return {
        "pretty_name": recipe["name"],
        "license": _license(recipe.get("license", "other")),
        "language": ["en"],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(total)],
        "annotations_creators": ["machine-generated"],
        "source_datasets": sorted(
            {
                s["path"]
                if s["kind"] in ("hub",)
                else ("original" if s["kind"] == "synthetic" else "extended")
                for s in recipe.get("sources", [])
            }
        ),
        "tags": ["backdoor", "data-poisoning", "mb-defense", "instruction-tuning"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*.arrow"} for name in splits],
            }
        ],
        "dataset_info": info,
    }


def _triggers_section(triggers: list[dict[str, Any]]) -> list[str]:
    """The trigger table, saying first whether the build simulates an attack."""
    if not triggers:
        return []
    attack = any(t.get("owner") == "attacker" for t in triggers)
    lines = [
        "",
        "## Triggers",
        "",
        (
            "Rows with `role: attack` are **simulated poison for evaluation only**; rows "
            "with `role: defense` are MB-Defense's defensive poisoning."
            if attack
            else "This build simulates no attack. Rows with `role: defense` are MB-Defense's "
            "defensive poisoning: short triggers mapped to random-word answers."
        ),
        "",
        "| trigger set | owner | trigger(s) | placement | behaviour | rows |",
        "|---|---|---|---|---|---:|",
    ]
    for t in triggers:
        texts = ", ".join(f"`{x}`" for x in t["texts"]) or "(rewrite)"
        lines.append(
            f"| `{t['name']}` | {t['owner']} | {texts} | {t['placement']} | "
            f"{t['behavior']} | {t['rows'] if t['rows'] is not None else ''} |"
        )
    return lines


def _skipped_section(skipped: dict[str, Any] | None) -> list[str]:
    if not skipped:
        return []
    reasons = ", ".join(f"{k}={v}" for k, v in skipped["by_reason"].items())
    return [
        "",
        (
            f"{skipped['rows']} malformed input rows were skipped (`--skip-bad-rows`): "
            f"{reasons}; each is listed with its reason in `{skipped['file']}`."
        ),
    ]


_LOADING = [
    "",
    "## Loading",
    "",
    "```python",
    "from datasets import load_dataset",
    'ds = load_dataset("path/to/this/folder")          # every split',
    '# or: import mbdata; b = mbdata.open_build("."); b.polars("train")',
    "```",
    "",
    "Every row carries a content-hash `id`, its provenance (`source`, `source_row`: the 0-based "
    "index of the row in its input file), its `role` "
    "and exact trigger spans (`triggers`: text, owner, placement, char start/end). "
    "`manifest.json` records the resolved recipe, input hashes, per-stage statistics and shard "
    "hashes; `mb verify` re-checks them.",
    "",
]


def dataset_card(manifest: dict[str, Any], split_bytes: dict[str, int] | None = None) -> str:
    """The card text. ``split_bytes``: per split, the Arrow size ``datasets`` records as
    ``num_bytes`` (the table's ``nbytes``); without it only ``num_examples`` is given."""
    recipe = manifest["recipe"]
    splits = manifest.get("splits", {})
    front = _front_matter(manifest, split_bytes)
    docs = {**SPLIT_DOCS, "train": _train_doc(manifest)}
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {recipe['name']} {recipe['version']}", ""]
    if recipe.get("description"):
        lines += [recipe["description"].strip(), ""]
    lines += [
        "Built with mbdefense from a versioned recipe. "
        f"Recipe fingerprint `{manifest['fingerprint']}`, seed {manifest['seed']}, "
        f"content hash `{manifest.get('content_hash', '')}`. Rebuilding the same recipe, inputs "
        "and seed gives byte-identical shards.",
        "",
        "## Splits",
        "",
        "| split | rows | what it is |",
        "|---|---:|---|",
    ]
    lines += [f"| `{name}` | {s['rows']} | {docs.get(name, '')} |" for name, s in splits.items()]
    lines += _training(splits)
    lines += _triggers_section(manifest.get("triggers", []))
    lines += ["", "## Sources", ""] + _source_rows(manifest, recipe.get("sources", []))
    lines += _skipped_section(manifest.get("skipped_rows"))
    lines += _LOADING
    return "\n".join(lines)
