"""The audit's reference-model loader, provided to mbdata as the ``mbdefense.model_loaders``
entry point ``reference`` (mbdata never imports mbtrain)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mbdata.core.errors import InputError
from mbtrain.config import ModelSettings
from mbtrain.engine.models import MARKER, is_loadable_folder, load_model


def load_reference_model(path: str | Path) -> tuple[Any, Any]:
    """A causal LM and its tokenizer on CPU in eval mode, ``trust_remote_code`` off: an mbtrain
    model folder (LoRA adapters merged onto their parent chain), a Hugging Face folder or a
    ``.gguf`` file."""
    path = Path(path)
    if path.is_dir() and not is_loadable_folder(path):
        raise InputError(f"{path}: not a model folder (no config.json or {MARKER})")
    off = ModelSettings(trust_remote_code=False)
    model, tokenizer = load_model(path if path.is_dir() else ModelSettings(name=str(path)), off)
    model.eval()
    return model, tokenizer
