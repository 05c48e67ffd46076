"""``train.trainer_args`` in the recipe: checked against the real SFTConfig/TrainingArguments at
recipe load time (unknown key, key owned by the recipe, value of the wrong type: one line naming
the key), merged with ``--trainer-arg`` (the command wins), left out of the resolved recipe while
empty (existing fingerprints and content hashes unchanged), and applied by the trainers (SFT-only
keys skip stage 2)."""

from __future__ import annotations

import json

import pytest
import torch

from mbdata.core.config import from_mapping, to_mapping
from mbdata.core.errors import MBError, RecipeError
from mbdata.recipe import fingerprint, parse_recipe
from mbtrain.config import TrainConfig


def recipe(train: dict | None) -> dict:
    data = {
        "name": "x",
        "version": "1.0.0",
        "sources": [{"name": "s", "kind": "synthetic", "count": 5}],
    }
    if train is not None:
        data["train"] = train
    return data


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("logging_step", 5, "not a SFTConfig field (did you mean 'logging_steps'?)"),
        ("zzqqxx", 1, "not a SFTConfig field (see the transformers/TRL docs)"),
        ("learning_rate", 1e-4, "set by the recipe (train.stageN.lr); change it there"),
        ("seed", 3, "set by the recipe (train.seed); change it there"),
        ("logging_steps", "often", "expected a number, got str 'often'"),
        ("torch_compile", "yes", "expected true or false, got 'yes'"),
        ("bf16", "yes", "expected true or false, got 'yes'"),
        ("dataloader_num_workers", 1.5, "expected an integer, got float 1.5"),
        ("report_to", 3, "expected str | list of str | null, got int 3"),
        (
            "optim",
            "adamw_fused",
            "'adamw_fused' is not one of the OptimizerNames (did you mean 'adamw_torch_fused'?)",
        ),
        ("gradient_checkpointing_kwargs", [1], "expected mapping"),
    ],
)
def test_recipe_trainer_args_are_checked_at_load_time(key, value, message):
    with pytest.raises(RecipeError) as err:
        parse_recipe(recipe({"trainer_args": {key: value}}))
    text = str(err.value)
    assert text.startswith(f"train.trainer_args.{key}: {message}") and "\n" not in text


def test_valid_trainer_args_load_normalised_and_round_trip():
    loaded = parse_recipe(
        recipe(
            {
                "trainer_args": {
                    "optim": "adamw_torch_fused",
                    "report_to": ["none"],
                    "warmup_steps": "1e-2",  # YAML 1.1 reads 1e-2 as text
                    "packing": True,
                    "gradient_checkpointing_kwargs": {"use_reentrant": False},
                }
            }
        )
    )
    cfg = loaded.train
    assert cfg.trainer_args["warmup_steps"] == 0.01 and cfg.trainer_args["report_to"] == ["none"]
    assert from_mapping(TrainConfig, to_mapping(cfg), "train") == cfg


def test_an_empty_trainer_args_leaves_the_resolved_recipe_and_its_fingerprint_as_before():
    """The key is left out while empty: recipes (and builds) made before it keep their
    fingerprint and content hash."""
    assert "trainer_args" not in to_mapping(TrainConfig())
    plain = parse_recipe(recipe({}))
    empty = parse_recipe(recipe({"trainer_args": {}}))
    assert fingerprint(plain) == fingerprint(empty)
    given = parse_recipe(recipe({"trainer_args": {"logging_steps": 2}}))
    assert fingerprint(given) != fingerprint(plain)
    assert to_mapping(given.train)["trainer_args"] == {"logging_steps": 2}


def test_the_command_line_wins_over_the_recipe_key_by_key():
    from mbtrain.runs.stages import make_runtime

    cfg = from_mapping(
        TrainConfig,
        {"model": {"device": "cpu"}, "trainer_args": {"logging_steps": 5, "report_to": "none"}},
        "train",
    )
    merged = dict(make_runtime(cfg, False, {"logging_steps": 2}).trainer_args)
    assert merged == {"logging_steps": 2, "report_to": "none"}
    assert dict(make_runtime(cfg, False).trainer_args) == {"logging_steps": 5, "report_to": "none"}
    with pytest.raises(MBError, match=r"^trainer_args\.logging_stepz: not a SFTConfig field"):
        make_runtime(cfg, False, {"logging_stepz": 2})


def test_sft_only_keys_apply_to_the_sft_stages_and_skip_stage_2(tmp_path):
    from mbtrain.engine.trainer import FitSettings, training_arguments

    s = FitSettings(
        epochs=1,
        lr=1e-3,
        batch_size=2,
        trainer_args=(("logging_steps", 3), ("pad_to_multiple_of", 8)),
    )
    common = dict(
        steps_per_epoch=4,
        has_eval=False,
        device=torch.device("cpu"),
        bf16=False,
        progress=False,
        gradient_checkpointing=False,
    )
    sft = training_arguments(s, tmp_path, sft=True, **common)
    plain = training_arguments(s, tmp_path, sft=False, **common)
    assert type(sft).__name__ == "SFTConfig" and sft.pad_to_multiple_of == 8
    assert type(plain).__name__ == "TrainingArguments" and not hasattr(plain, "pad_to_multiple_of")
    assert sft.logging_steps == 3 and plain.logging_steps == 3


def test_recipe_trainer_args_reach_the_trainer(tmp_path):
    """``train.trainer_args: {logging_steps: 2}`` on a 4-step SFT run: the JSONL log has the
    Trainer's loss records at steps 1 (first step), 2 and 4 only."""
    from test_train_engine import TEXTS, examples, fresh_model

    from mbtrain.engine.tiny import train_tokenizer
    from mbtrain.runs.stages import make_runtime, train_sft

    torch.set_num_threads(1)
    tokenizer = train_tokenizer(TEXTS * 3, 300)
    cfg = from_mapping(
        TrainConfig,
        {
            "model": {"device": "cpu", "template": "alpaca_short", "max_length": 64},
            "stage1": {"epochs": 1, "batch_size": 2},
            "trainer_args": {"logging_steps": 2},
        },
        "train",
    )
    out = train_sft(
        (fresh_model(tokenizer), tokenizer),
        examples(8),
        tmp_path / "m",
        cfg,
        name="s1",
        stage=cfg.stage1,
        runtime=make_runtime(cfg, False),
    )
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r.get("event") == "log" and "loss" in r]
    assert steps == [1, 2, 4]
    start = next(r for r in records if r.get("event") == "start")
    assert start["settings"]["trainer_args"] == [["logging_steps", 2]]


def test_the_train_blocks_in_docs_train_md_are_valid():
    """The documented recipes (trainer_args, the 8B LoRA and full blocks) load as written."""
    import re
    import textwrap
    from pathlib import Path

    import yaml

    text = (Path(__file__).resolve().parent.parent / "docs" / "train.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "train:" in b]
    assert len(blocks) >= 3
    modes = set()
    for block in blocks:
        cfg = from_mapping(TrainConfig, yaml.safe_load(textwrap.dedent(block))["train"], "train")
        modes.add((cfg.stage1.mode, cfg.model.gradient_checkpointing))
    assert {("lora", True), ("full", True)} <= modes  # the 8B blocks were read, not defaults
