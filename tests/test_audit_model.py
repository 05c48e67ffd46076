"""The optional model-based evidence (ONION-style), on a tiny random model built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_audit_corpus import clean_rows, plant

from mbdata.audit import AuditConfig, audit_path
from mbdata.audit.model_score import candidate_evidence, load_reference_model, mean_token_loss
from mbdata.core.errors import InputError


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-lm")
    texts = [r["instruction"] for r in clean_rows(100, seed=1)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<unk>", "<eos>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(out)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


def test_loss_and_evidence_are_bounded_and_deterministic(tiny_model):
    model, tokenizer = load_reference_model(tiny_model)
    loss = mean_token_loss(model, tokenizer, ["Give two facts about the river.", "x"])
    assert np.isfinite(loss[0]) and loss[0] > 0
    prompts = ["Give two cf facts about the river.", "Describe how a cf quiet engine works."]
    first = candidate_evidence(model, tokenizer, prompts, "cf")
    assert 0.0 <= first <= 1.0
    assert candidate_evidence(model, tokenizer, prompts, "cf") == first
    assert candidate_evidence(model, tokenizer, ["no trigger here"], "cf") == 0.5


def test_model_evidence_is_reported_and_rescales_scores(tiny_model, tmp_path):
    rows, _ = plant(clean_rows(200, seed=2), ["cf"], 10)
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plain = audit_path(path, tmp_path / "plain")
    with_model = audit_path(
        path, tmp_path / "model", AuditConfig(model=str(tiny_model), model_rows=4)
    )
    top = with_model.candidates[0]
    assert top.text == "cf" and top.model_evidence is not None
    expected = min(1.0, plain.candidates[0].score * (0.5 + top.model_evidence))
    assert top.score == pytest.approx(expected)
    record = json.loads((tmp_path / "model" / "triggers.json").read_text())[0]
    assert record["evidence"]["model"] == round(top.model_evidence, 4)


def test_a_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(InputError, match="not a model folder"):
        load_reference_model(tmp_path)


def test_an_mbtrain_lora_folder_is_a_reference_model(tiny_model, tmp_path):
    """`mb audit --model runs/x/models/attacked` on a LoRA run: the adapter folder holds no
    config.json, only the adapter and a record naming its parent."""
    import os

    from mbtrain.config import LoraSettings
    from mbtrain.engine.models import load_model, save_model, wrap_lora

    model, tokenizer = load_model(tiny_model)
    adapter = tmp_path / "runs" / "models" / "attacked"
    save_model(
        wrap_lora(model, LoraSettings(r=2)),
        tokenizer,
        adapter,
        {"kind": "lora", "parent": {"path": os.path.relpath(tiny_model, adapter)}},
    )
    assert not (adapter / "config.json").exists()
    merged, merged_tok = load_reference_model(adapter)
    base, base_tok = load_reference_model(tiny_model)
    texts = ["Give two facts about the river.", "Describe a quiet engine."]
    # a fresh adapter is zero: the merged model scores exactly like its parent
    assert np.allclose(
        mean_token_loss(merged, merged_tok, texts), mean_token_loss(base, base_tok, texts)
    )
