"""``hf``: rewrites from a local causal-LM folder with batched generation (transformers).

Weights load from safetensors only, ``trust_remote_code`` stays off and nothing is downloaded
(``local_files_only``). Prompts go through the tokenizer's chat template when it has one, else
as plain text; batches are left-padded and decoded past the prompt. The first attempt is greedy;
later attempts (after a rewrite failed its check) sample with a seeded generator, so a rebuild
gives the same text. transformers is imported only when this backend is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BuildError


class HfBackend:
    name = "hf"
    deterministic = False

    def __init__(self, folder: Path, *, max_tokens: int = 128, batch_size: int = 8):
        if not folder.is_dir():
            raise BuildError(f"rewriter.model: {folder} is not a model folder")
        self.folder = folder
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                            trust_remote_code=False)
            self._model = AutoModelForCausalLM.from_pretrained(
                self.folder, local_files_only=True, trust_remote_code=False,
                use_safetensors=True)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BuildError(f"rewriter.model: cannot load {self.folder} (safetensors weights "
                             f"and a tokenizer are needed): {first}") from None
        self._model.eval()
        tok = self._tokenizer
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

    def _render(self, prompt: str) -> str:
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
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
            batch = [self._render(p) for p in prompts[start:start + self.batch_size]]
            enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs: dict[str, Any] = {"max_new_tokens": self.max_tokens,
                                      "pad_token_id": tok.pad_token_id}
            if temperature > 0:
                torch.manual_seed(seed * 1_000_003 + start)
                kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
            else:
                kwargs.update(do_sample=False)
            with torch.no_grad():
                out = model.generate(**enc, **kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            outputs.extend(tok.batch_decode(new, skip_special_tokens=True))
        return outputs
