"""Saving a stage trained under DeepSpeed ZeRO-3 / FSDP: each process holds a shard, so the
trained model comes from the Trainer's gathering ``save_model`` (reloaded on rank 0), and LoRA
under sharding is refused before training. DeepSpeed/FSDP themselves need GPUs: here a stand-in
trainer plays the Trainer's part (its ``save_model`` writes what the real one writes on rank 0),
which checks mbtrain's glue, not DeepSpeed."""

from __future__ import annotations

import types

import pytest
import torch

from mbdata.core.errors import MBError
from mbtrain.config import TinyModel
from mbtrain.engine.tiny import tiny_model, train_tokenizer
from mbtrain.engine.trainer import gathered_model, sharded

SETTINGS = TinyModel(
    vocab_size=300, hidden_size=16, layers=1, heads=2, intermediate_size=32, max_positions=64
)


def _stand_in(model, rank0=True, write=True):
    calls = []

    def save_model(path):
        calls.append(path)
        if write and rank0:
            model.save_pretrained(path)  # safetensors, as the Trainer's _save

    return types.SimpleNamespace(
        is_deepspeed_enabled=True,
        is_fsdp_enabled=False,
        model=model,
        save_model=save_model,
        is_world_process_zero=lambda: rank0,
        accelerator=types.SimpleNamespace(wait_for_everyone=lambda: calls.append("barrier")),
        calls=calls,
    )


@pytest.fixture(scope="module")
def model():
    tok = train_tokenizer(["alpha beta gamma delta"] * 4, 300)
    return tiny_model(SETTINGS, tok, seed=2)


def test_rank0_gets_the_gathered_full_model_and_other_ranks_their_shard(model, tmp_path):
    trainer = _stand_in(model)
    assert sharded(trainer) and not sharded(types.SimpleNamespace())
    out = gathered_model(trainer, tmp_path)
    assert trainer.calls == [str(tmp_path / "gathered"), "barrier"]
    assert out is not model and not out.training
    for (name, a), (_, b) in zip(out.state_dict().items(), model.state_dict().items()):
        assert a.dtype == torch.float32 and torch.equal(a, b), name
    other = _stand_in(model, rank0=False)
    assert gathered_model(other, tmp_path / "r1") is model  # every rank joins the gather
    assert other.calls == [str(tmp_path / "r1" / "gathered"), "barrier"]


def test_weights_that_were_not_gathered_are_a_one_line_error_naming_the_setting(model, tmp_path):
    with pytest.raises(MBError, match="zero3_save_16bit_model: true"):
        gathered_model(_stand_in(model, write=False), tmp_path)


def test_lora_under_deepspeed_or_fsdp_is_refused_before_training(model, tmp_path, monkeypatch):
    import mbtrain.engine.trainer as trainer_module
    from mbtrain.config import LoraSettings
    from mbtrain.engine.formatting import Formatter
    from mbtrain.engine.models import lora_config
    from mbtrain.engine.objectives import SFTObjective
    from mbtrain.engine.trainer import FitSettings, fit

    tok = train_tokenizer(["alpha beta gamma delta"] * 4, 300)
    items = Formatter(tok, "alpaca_short", 64).encode_many([("alpha", "", "beta", None)] * 2)
    monkeypatch.setattr(trainer_module, "sharded", lambda trainer: True)
    steps = []
    with pytest.raises(MBError, match=r"^LoRA under DeepSpeed/FSDP is not supported"):
        fit(
            tiny_model(SETTINGS, tok, seed=2),
            items,
            SFTObjective(tok.pad_token_id),
            FitSettings(epochs=1, lr=1e-3, batch_size=2),
            tmp_path,
            tokenizer=tok,
            progress=False,
            peft_config=lora_config(LoraSettings(r=2)),
            on_step=steps.append,
        )
    assert steps == []  # refused before any step
