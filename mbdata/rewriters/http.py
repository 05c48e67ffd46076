"""``http``: rewrites from any OpenAI-compatible chat-completions endpoint (stdlib only).

vLLM, the llama.cpp server and hosted APIs all accept ``POST <url>/chat/completions``. Inputs are
sent ``concurrency`` at a time from a thread pool; a request that fails with a 5xx, a 429 or a
network error is retried ``retries`` times with exponential backoff (``backoff``, 2x, 4x ...).
Any other HTTP error is the user's to fix and stops the build at once, as does an endpoint that
stays down: the message names the URL, the reason and how many inputs the cache lacks.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..core.errors import BuildError

RETRYABLE = {429, 500, 502, 503, 504}


class EndpointError(BuildError):
    """The endpoint could not give a rewrite (down, or kept failing)."""


class HttpBackend:
    """One chat-completions call per input; ``generate`` keeps the input order."""

    name = "http"
    deterministic = False

    def __init__(
        self,
        url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        max_tokens: int = 128,
        concurrency: int = 4,
        retries: int = 3,
        backoff: float = 1.0,
        timeout: float = 60.0,
    ):
        self.endpoint = url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointError(
                    f"rewriter.api_key_env: environment variable {self.api_key_env} is not set"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(self, prompt: str, temperature: float, seed: int) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
            "max_tokens": self.max_tokens,
            "seed": seed,
            "n": 1,
        }
        data = json.dumps(body).encode("utf-8")
        delay = self.backoff
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.endpoint, data=data, headers=self._headers(), method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                return str(payload["choices"][0]["message"]["content"])
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code}"
                if exc.code not in RETRYABLE:
                    raise EndpointError(
                        f"rewriter: {self.endpoint} answered {reason} "
                        f"({exc.reason}); check url, model and api_key_env"
                    ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
            except (json.JSONDecodeError, KeyError, IndexError, TypeError):
                raise EndpointError(
                    f"rewriter: {self.endpoint} did not answer in the "
                    "chat-completions format (choices[0].message.content)"
                ) from None
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise EndpointError(
            f"rewriter: {self.endpoint} unreachable after {self.retries + 1} tries ({reason})"
        )

    def generate(self, prompts: list[str], temperature: float, seed: int) -> list[str]:
        """One rewrite per prompt, in order, ``concurrency`` requests at a time."""
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            return list(pool.map(lambda p: self._request(p, temperature, seed), prompts))
