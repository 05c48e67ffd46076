"""The optional vLLM generation backend of the evaluation (``train.eval.backend: vllm``).

Why: on a GPU, vLLM's paged attention and continuous batching generate many times faster than
batched ``model.generate``; the evaluation of a large model is then no longer the slow part. Why
optional: vLLM is a large CUDA-only install; it is imported only when a recipe asks for it, and a
missing install is a one-line error that names ``pip install vllm``.

What stays the same as the default ``hf`` backend (:mod:`mbtrain.evaluation.generate`): the prompts are the
very token ids the formatter makes (passed as ``prompt_token_ids``, so no second templating or
tokenisation happens inside vLLM), greedy decoding (``temperature=0``), the same
``max_new_tokens`` and stop ids (the tokenizer's and the model's end-of-sequence), answers cut
after the first stop id and decoded by our tokenizer (special tokens dropped, stripped), and the
same :class:`~mbtrain.evaluation.generate.Generation` records, so scoring, ``metrics.json`` and the report
do not know which backend ran.

Which weights vLLM loads: a full model folder (an mbtrain ``kind: full`` folder, or a plain
Hugging Face folder with safetensors) is handed over as it is. Anything else (an mbtrain LoRA
folder, whose adapter may sit on a chain of parents; a GGUF base; base settings) is loaded and
merged by :func:`mbtrain.engine.models.load_model` exactly as the ``hf`` backend does, and written once
to a temporary safetensors folder that vLLM loads (merged, not ``LoRARequest``: one path for every
chain, and the same merged weights the ``hf`` backend scores). Greedy outputs can still differ
from the ``hf`` backend's in rare near-ties (other kernels, other numerics).
"""

from __future__ import annotations

import contextlib
import gc
import tempfile
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from mbdata.core.errors import MBError
from mbtrain.config import ModelSettings
from mbtrain.engine.models import (
    MARKER,
    _base_source,
    _from_pretrained,
    is_model_folder,
    load_model,
    prepare_tokenizer,
    read_marker,
)
from mbtrain.evaluation.generate import Generation, stop_ids

INSTALL = "pip install vllm (or pip install 'mbdefense[vllm]')"


def require_vllm() -> Any:
    """The ``vllm`` module, or a one-line error saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise MBError(
            f"train.eval.backend: 'vllm' needs vLLM, which is not installed; {INSTALL}, "
            "or use backend: hf"
        ) from None
    return vllm


def direct_folder(model_ref: Any) -> Path | None:
    """A folder vLLM can load as it is (full weights in safetensors, a config), else ``None``."""
    if isinstance(model_ref, ModelSettings | tuple):
        return None
    path = Path(model_ref)
    if not path.is_dir() or not (path / "config.json").is_file():
        return None
    if is_model_folder(path) and read_marker(path).get("kind") != "full":
        return None
    if not (
        (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
    ):
        return None
    return path


def load_tokenizer(model_ref: Any, trust_remote_code: bool) -> Any:
    """The tokenizer :func:`mbtrain.engine.models.load_model` would give for ``model_ref``, without
    loading the weights (vLLM loads them)."""
    from transformers import AutoTokenizer

    if isinstance(model_ref, ModelSettings):
        source, kwargs = _base_source(model_ref)
    elif is_model_folder(model_ref):  # an mbtrain folder: never remote code (as load_model)
        source, kwargs = str(model_ref), {"trust_remote_code": False}
    else:
        settings = ModelSettings(name=str(model_ref), trust_remote_code=trust_remote_code)
        source, kwargs = _base_source(settings)
    return prepare_tokenizer(_from_pretrained(AutoTokenizer, source, kwargs, "a tokenizer"))


def _generation_config(folder: Path) -> Any:
    from transformers import GenerationConfig

    if (folder / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(folder))
    return None


@contextlib.contextmanager
def model_folder(
    model_ref: Any, trust_remote_code: bool, dtype: torch.dtype | None
) -> Iterator[tuple[Path, Any, list[int], bool]]:
    """(folder for vLLM, our tokenizer, stop ids, trust_remote_code for vLLM): the folder itself
    when vLLM can load it, else a temporary folder with the merged weights (``dtype``: bf16 when
    evaluating in bf16), removed on exit. Remote code only as :func:`~mbtrain.engine.models.load_model`
    allows it: never for a full mbtrain folder (its record is data from disk), for merged
    weights as the base was loaded."""
    folder = direct_folder(model_ref)
    if folder is not None:
        trust = trust_remote_code and not (folder / MARKER).is_file()
        tokenizer = load_tokenizer(folder, trust_remote_code)
        carrier = types.SimpleNamespace(generation_config=_generation_config(folder))
        yield folder, tokenizer, stop_ids(tokenizer, carrier), trust
        return
    model, tokenizer = load_model(model_ref, ModelSettings(trust_remote_code=trust_remote_code))
    eos = stop_ids(tokenizer, model)
    trust = trust_remote_code  # the merged base's code, as load_model trusted it
    if dtype is not None:
        model = model.to(dtype)
    with tempfile.TemporaryDirectory(prefix="mbtrain-vllm-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del model
        gc.collect()
        yield Path(tmp), tokenizer, eos, trust


def generate_vllm(
    model_ref: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    trust_remote_code: bool = False,
    amp: torch.dtype | None = None,
    seed: int = 0,
    llm_args: dict[str, Any] | None = None,
    progress: bool = False,
) -> list[Generation]:
    """Greedy continuations of token-id ``prompts`` with vLLM (see the module docstring).
    ``llm_args``: further ``vllm.LLM`` arguments (``eval.vllm_args``)."""
    vllm = require_vllm()
    dtype = "bfloat16" if amp == torch.bfloat16 else "float32"
    with model_folder(model_ref, trust_remote_code, amp) as (folder, tokenizer, eos, trust):
        if not prompts:
            return []
        llm = vllm.LLM(
            **{
                "model": str(folder),
                "tokenizer": str(folder),
                "dtype": dtype,
                "seed": seed,
                "trust_remote_code": trust,
                **(llm_args or {}),
            }
        )
        params = vllm.SamplingParams(
            n=1,
            temperature=0.0,
            max_tokens=max_new_tokens,
            stop_token_ids=list(eos),
            skip_special_tokens=True,
        )
        try:
            outputs = llm.generate(
                [{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=progress
            )
        finally:
            del llm
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if len(outputs) != len(prompts):
        raise MBError(f"vllm returned {len(outputs)} outputs for {len(prompts)} prompts")
    return [_generation(out, tokenizer, eos) for out in outputs]


def _generation(request_output: Any, tokenizer: Any, eos: Sequence[int]) -> Generation:
    """One vLLM ``RequestOutput`` as the ``hf`` backend's record: tokens cut after the first stop
    id, decoded by our tokenizer."""
    completion = request_output.outputs[0]
    tokens = list(completion.token_ids)
    stopped = False
    for j, t in enumerate(tokens):
        if t in eos:
            tokens, stopped = tokens[: j + 1], True
            break
    stopped = stopped or getattr(completion, "finish_reason", None) == "stop"
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return Generation(text=text.strip(), tokens=len(tokens), stopped=stopped)
