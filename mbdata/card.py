"""The Hugging Face dataset card (``DIR/README.md``) of a build, generated from its manifest.

The YAML front matter carries ``configs``/``data_files`` (so ``datasets.load_dataset(DIR)`` finds the
shards), ``license``, ``size_categories``, ``task_categories``, ``source_datasets`` and
``dataset_info``; the body says in plain words what the build contains, which rows are simulated
poison, and how to load it.
"""

from __future__ import annotations

from typing import Any

import yaml

_SIZE_BOUNDS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))

FEATURES = [
    {"name": "id", "dtype": "string"}, {"name": "instruction", "dtype": "string"},
    {"name": "input", "dtype": "string"}, {"name": "output", "dtype": "string"},
    {"name": "system", "dtype": "string"}, {"name": "source", "dtype": "string"},
    {"name": "source_row", "dtype": "int64"}, {"name": "split", "dtype": "string"},
    {"name": "role", "dtype": "string"}, {"name": "trigger_set", "dtype": "string"},
    {"name": "behavior", "dtype": "string"}, {"name": "clean_output", "dtype": "string"},
    {"name": "triggers", "list": [
        {"name": "text", "dtype": "string"}, {"name": "owner", "dtype": "string"},
        {"name": "kind", "dtype": "string"}, {"name": "name", "dtype": "string"},
        {"name": "field", "dtype": "string"}, {"name": "start", "dtype": "int32"},
        {"name": "end", "dtype": "int32"}]},
    {"name": "triggered_instruction", "dtype": "string"},
    {"name": "triggered_input", "dtype": "string"}, {"name": "triggered_output", "dtype": "string"},
    {"name": "task", "dtype": "string"}, {"name": "tags", "list": "string"},
]

SPLIT_DOCS = {
    "pretrain": "clean rows for pretraining a tiny base model (some prompts carry a noise word)",
    "train": "the instruction-tuning mixture (clean rows, simulated attack rows, defensive rows)",
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


def dataset_card(manifest: dict[str, Any]) -> str:
    recipe = manifest["recipe"]
    splits = manifest.get("splits", {})
    total = sum(s["rows"] for s in splits.values())
    sources = recipe.get("sources", [])
    front = {
        "pretty_name": recipe["name"],
        "license": _license(recipe.get("license", "other")),
        "language": ["en"],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(total)],
        "annotations_creators": ["machine-generated"],
        "source_datasets": sorted({s["path"] if s["kind"] in ("hub",) else
                                   ("original" if s["kind"] == "synthetic" else "extended")
                                   for s in sources}),
        "tags": ["backdoor", "data-poisoning", "mb-defense", "instruction-tuning"],
        "configs": [{"config_name": "default", "data_files": [
            {"split": name, "path": f"data/{name}-*.arrow"} for name in splits]}],
        "dataset_info": {
            "features": FEATURES,
            "splits": [{"name": name, "num_examples": s["rows"]} for name, s in splits.items()],
        },
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [f"# {recipe['name']} {recipe['version']}", ""]
    if recipe.get("description"):
        lines += [recipe["description"].strip(), ""]
    lines += [
        "Built with mbdefense from a versioned recipe. "
        f"Recipe fingerprint `{manifest['fingerprint']}`, seed {manifest['seed']}, "
        f"content hash `{manifest.get('content_hash', '')}`. Rebuilding the same recipe, inputs "
        "and seed gives byte-identical shards.", "",
        "## Splits", "", "| split | rows | what it is |", "|---|---:|---|",
    ]
    lines += [f"| `{name}` | {s['rows']} | {SPLIT_DOCS.get(name, '')} |" for name, s in splits.items()]
    triggers = manifest.get("triggers", [])
    if triggers:
        lines += ["", "## Triggers", "",
                  "Rows with `role: attack` are **simulated poison for evaluation only**; rows with "
                  "`role: defense` are MB-Defense's defensive poisoning.", "",
                  "| trigger set | owner | trigger(s) | placement | behaviour | rows |",
                  "|---|---|---|---|---|---:|"]
        for t in triggers:
            texts = ", ".join(f"`{x}`" for x in t["texts"]) or "(rewrite)"
            lines.append(f"| `{t['name']}` | {t['owner']} | {texts} | {t['placement']} | "
                         f"{t['behavior']} | {t['rows'] if t['rows'] is not None else ''} |")
    lines += ["", "## Sources", "", "| source | kind | path | license |", "|---|---|---|---|"]
    lines += [f"| `{s['name']}` | {s['kind']} | {s.get('path') or ''} | {s.get('license') or ''} |"
              for s in sources]
    lines += [
        "", "## Loading", "", "```python",
        "from datasets import load_dataset",
        "ds = load_dataset(\"arrow\", data_files={\"train\": \"data/train-*.arrow\"})",
        "# or: import mbdata; b = mbdata.open_build(\".\"); b.polars(\"train\")",
        "```", "",
        "Every row carries a content-hash `id`, its provenance (`source`, `source_row`), its `role` "
        "and exact trigger spans (`triggers`: text, owner, placement, char start/end). "
        "`manifest.json` records the resolved recipe, input hashes, per-stage statistics and shard "
        "hashes; `mb verify` re-checks them.", "",
    ]
    return "\n".join(lines)
