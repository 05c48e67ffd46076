"""The recipe's ``rewriter:`` block: how a model (or the offline rules) rewrites text.

It lives apart from :mod:`mbdata.recipe` because two recipe blocks use it, an attack's rewriter
(``syntactic``/``style`` instructions) and the ``toxic`` behaviour's (answers), and the behaviour
specs are read before the recipe module (no import cycle)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from ..core.config import spec
from ..core.errors import RecipeError


@dataclasses.dataclass(frozen=True)
class RewriterSpec:
    """How the ``syntactic`` and ``style`` attacks rewrite instructions (see docs/mixtures.md)."""

    backend: Literal["rules", "http", "hf"] = spec(
        "rules",
        doc="rules (offline SCPN approximation, syntactic only), http (OpenAI-compatible "
        "endpoint) or hf (local causal-LM folder)",
    )
    model: str | None = spec(
        None,
        doc="http: model name sent to the endpoint; hf: a model folder "
        "or .gguf file (relative to the recipe), or "
        "pkg:PACKAGE/FILE.gguf",
    )
    url: str | None = spec(
        None,
        pattern=r"https?://\S+",
        form="an http(s):// URL",
        doc="http: base URL, e.g. http://127.0.0.1:8000/v1 (POSTs to <url>/chat/completions)",
    )
    api_key_env: str | None = spec(
        None,
        pattern=r"[A-Za-z_][A-Za-z0-9_]*",
        form="an environment variable name",
        doc="http: environment variable holding the API key (never the key itself)",
    )
    prompt: str | None = spec(None, doc="prompt template with {instruction} (default per preset)")
    pattern: str | None = spec(None, doc="style: a regex the rewrite must match")
    max_length_ratio: float = spec(4.0, ge=1.0, doc="style: rewrite/original length ratio bound")
    temperature: float = spec(0.0, ge=0.0, le=2.0, doc="first attempt's temperature (0 = greedy)")
    max_tokens: int = spec(128, ge=1, le=4096, doc="tokens generated per rewrite")
    batch_size: int = spec(8, ge=1, doc="inputs per generate call (hf) or per cache flush (http)")
    concurrency: int = spec(4, ge=1, le=64, doc="http: requests in flight at once")
    retries: int = spec(3, ge=0, le=10, doc="http: retries of a failed request (5xx, 429, network)")
    backoff: float = spec(1.0, ge=0.0, doc="http: first retry delay in seconds, doubled each retry")
    timeout: float = spec(60.0, gt=0.0, doc="http: seconds per request")
    attempts: int = spec(
        2,
        ge=1,
        le=10,
        doc="http/hf: tries per row before a rewrite that fails "
        "the check is dropped (later tries sample)",
    )
    cache: str | None = spec(
        None,
        doc="http/hf: JSONL cache of rewrites (default .mbcache/rewrites.jsonl beside the recipe)",
    )

    def validate(self, path: str) -> None:
        if self.backend == "http" and not (self.url and self.model):
            raise RecipeError(f"{path}: backend 'http' needs `url` and `model`")
        if self.backend == "hf" and not self.model:
            raise RecipeError(f"{path}.model: required for backend 'hf' (a local model folder)")
        if self.prompt is not None and "{instruction}" not in self.prompt:
            raise RecipeError(f"{path}.prompt: must contain the placeholder {{instruction}}")
        if self.pattern is not None:
            import re

            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise RecipeError(f"{path}.pattern: not a valid regex: {exc}") from None
