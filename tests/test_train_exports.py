"""The TRL export as a TRL user meets it: TRL tokenises ``prompt_completion.jsonl`` into exactly the
ids and completion mask mbtrain trains on, trains a step on it, and the stage-2 trainer trains on
``recovery.preference.jsonl`` in a few lines."""

from __future__ import annotations

import pytest
import torch
from conftest import small_recipe

import mbdata
from mbdata.recipe import recipe_from_dict
from mbtrain.config import TinyModel
from mbtrain.engine.exported import recovery_items, sft_items
from mbtrain.engine.formatting import IGNORE
from mbtrain.engine.tiny import tiny_model, train_tokenizer

SETTINGS = TinyModel(
    vocab_size=400, hidden_size=16, layers=1, heads=2, intermediate_size=32, max_positions=512
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("x")
    build = mbdata.build(recipe_from_dict(small_recipe(eval={"size": 10})), root / "build")
    out = mbdata.export(build, "trl", root / "trl")
    rows = mbdata.open_build(build).table("train").to_pylist()
    tok = train_tokenizer(
        [r["instruction"] + " " + r["input"] + " " + r["output"] for r in rows], SETTINGS.vocab_size
    )
    return out, tok


def _args(tmp_path, cls_name="SFTConfig", **extra):
    import transformers
    import trl

    cls = getattr(trl, cls_name, None) or getattr(transformers, cls_name)
    return cls(
        output_dir=str(tmp_path / "o"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **extra,
    )


def test_trl_tokenises_the_export_exactly_as_mbtrain_and_trains(exported, tmp_path):
    import datasets
    from trl import SFTTrainer

    out, tok = exported
    path = out / "train.prompt_completion.jsonl"
    ds = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "c")
    ).select_columns(["prompt", "completion"])
    trainer = SFTTrainer(
        model=tiny_model(SETTINGS, tok, 0),
        args=_args(tmp_path, max_length=None),
        train_dataset=ds,
        processing_class=tok,
    )
    ours = sft_items(path, tok, max_length=10_000)
    theirs = trainer.train_dataset
    assert len(ours) == len(theirs) == ds.num_rows
    for e, t in zip(ours, theirs, strict=True):
        assert t["input_ids"] == e.input_ids  # no token merges across the prompt boundary
        assert t["labels"] == [x if x != IGNORE else -100 for x in e.labels]
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))


def test_stage2_trainer_runs_on_the_preference_export(exported, tmp_path):
    from mbtrain.engine.trainer import NeutralizationTrainer

    out, tok = exported
    items = recovery_items(out / "recovery.preference.jsonl", tok, max_length=512)
    assert items and all(it.clean.input_ids != it.triggered_clean.input_ids for it in items)
    assert all(
        it.triggered_clean.input_ids[
            : len(it.triggered_clean.input_ids) - it.triggered_clean.response_tokens
        ]
        == it.triggered_defense.input_ids[
            : len(it.triggered_defense.input_ids) - it.triggered_defense.response_tokens
        ]
        for it in items
    )  # x_d is shared by (x_d, y) and (x_d, y_d)
    trainer = NeutralizationTrainer(
        model=tiny_model(SETTINGS, tok, 0),
        args=_args(tmp_path, "TrainingArguments"),
        train_dataset=items,
        lam=1.0,
        pad_id=tok.pad_token_id,
    )
    result = trainer.train()
    assert torch.isfinite(torch.tensor(result.training_loss))
