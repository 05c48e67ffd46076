"""`--quiet` is quiet at the source (issue 24 item 6): loading the best epoch of a model with tied
embeddings no longer logs "There were missing keys in the checkpoint model loaded:
['lm_head.weight']" (other missing keys still warn), and transformers' GGUF de-quantising bar is
switched off while mbtrain loads a GGUF file."""

from __future__ import annotations

import logging
import types

import pytest
import torch

pytest.importorskip("transformers")

from mbtrain.config import TinyModel  # noqa: E402
from mbtrain.engine.models import quiet_gguf, understand_tied_weights  # noqa: E402
from mbtrain.engine.tiny import tiny_model, train_tokenizer  # noqa: E402


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _tiny():
    texts = [f"row {i} says hello to the tiny model" for i in range(50)]
    tokenizer = train_tokenizer(texts, 300)
    settings = TinyModel(vocab_size=300, hidden_size=16, layers=1, heads=2, intermediate_size=32)
    return tiny_model(settings, tokenizer, seed=0)


def _best_epoch_load(model, state, tmp_path):
    """What the Trainer does at load_best_model_at_end: load the saved safetensors non-strictly
    and report the keys through its own warning code."""
    from safetensors.torch import load_file
    from transformers import Trainer

    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    saved = {k: v for k, v in saved.items() if k in state}
    result = model.load_state_dict(saved, strict=False)
    records = _Records()
    logger = logging.getLogger("transformers.trainer")
    logger.addHandler(records)
    try:
        Trainer._issue_warnings_after_load(types.SimpleNamespace(model=model), result)
    finally:
        logger.removeHandler(records)
    return result, records.messages


def test_tied_embeddings_load_back_without_the_missing_keys_warning(tmp_path):
    model = _tiny()
    assert model._keys_to_ignore_on_save == {"lm_head.weight"}
    result, messages = _best_epoch_load(model, model.state_dict(), tmp_path)
    assert result.missing_keys == ["lm_head.weight"]  # the checkpoint holds one copy
    assert not [m for m in messages if "missing keys" in m], messages
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied


def test_other_missing_keys_still_warn(tmp_path):
    model = _tiny()
    state = {k: v for k, v in model.state_dict().items() if "norm" not in k}
    _, messages = _best_epoch_load(model, state, tmp_path)
    assert any("There were missing keys" in m and "norm" in m for m in messages), messages


def test_saved_weights_are_unchanged_by_declaring_the_tie(tmp_path):
    from safetensors.torch import load_file

    model = _tiny()
    model.save_pretrained(tmp_path / "a")
    model._keys_to_ignore_on_save = set()
    model.save_pretrained(tmp_path / "b")
    a, b = load_file(tmp_path / "a/model.safetensors"), load_file(tmp_path / "b/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert understand_tied_weights(model) is model


def test_gguf_bar_is_off_during_the_load():
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    with quiet_gguf():
        bar = gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors...")
        assert bar.disable
        list(bar)
    assert gguf_utils.tqdm is original
