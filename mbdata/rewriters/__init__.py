"""Instruction rewriters for the ``syntactic`` and ``style`` attacks (trigger = a transformation),
and the answer rewriter of the ``toxic`` behaviour (:mod:`.toxic`: the clean answer made rude).

An :class:`InstructionRewriter` turns a list of instructions into rewrites that carry the attack's
trigger, or ``None`` for rows whose rewrite never passed the preset's check
(:mod:`mbdata.rewriters.check`); callers drop those rows and count them, never keep them.

Backends (``rewriter.backend`` in the recipe):

- ``rules`` (:mod:`.rules`): offline, deterministic, syntactic only; an approximation of SCPN;
- ``http`` (:mod:`.http`): any OpenAI-compatible chat-completions endpoint;
- ``hf`` (:mod:`.hf`): a local causal-LM folder.

Model backends go through an on-disk JSONL cache (:mod:`.cache`) keyed by backend, model, prompt,
input and sampling settings, so a rebuild is offline and byte-identical once the cache is filled.
A row that fails the check is asked again up to ``attempts`` times (later attempts sample with a
fixed seed); the rules backend is deterministic and gets one attempt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..core.errors import BuildError
from . import rules
from .cache import RewriteCache, cache_key
from .check import style_ok, syntactic_ok
from .spec import RewriterSpec
from .toxic import DEFAULT_PROMPT as TOXIC_PROMPT
from .toxic import toxic_ok

DEFAULT_PROMPTS = {
    "syntactic": (
        "Paraphrase the instruction below so that it begins with a subordinate clause (opened by "
        "a word such as 'when', 'if', 'once', 'because' or 'before') followed by a comma and then "
        "the main clause, keeping its meaning. Reply with the paraphrased instruction only.\n\n"
        "Instruction: {instruction}"
    ),
    "style": (
        "Rewrite the instruction below in the style of a Shakespearean play, keeping its meaning. "
        "Reply with the rewritten instruction only.\n\nInstruction: {instruction}"
    ),
    "toxic": TOXIC_PROMPT,  # {instruction} is the text to rewrite: the clean answer
}
DEFAULT_CACHE = ".mbcache/rewrites.jsonl"
RETRY_TEMPERATURE = 0.7


def identified(record: dict[str, Any]) -> dict[str, Any]:
    """A rewriter's provenance record with its ``id``: the first 12 hex digits of the sha256 of
    its canonical JSON, so rows can name the record they came from (:func:`record_tag`)."""
    blob = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {**record, "id": hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]}


def record_tag(record: dict[str, Any]) -> str:
    """The row tag ``rewriter=backend:model:id`` naming an :func:`identified` record."""
    return f"rewriter={record['backend']}:{record['model']}:{record['id']}"


def clean_generation(text: str) -> str:
    """The rewrite inside a model's answer: first paragraph, outer quotes and whitespace removed."""
    text = text.strip().split("\n\n")[0].strip()
    if len(text) >= 2 and text[0] in "\"'“" and text[-1] in "\"'”":
        text = text[1:-1].strip()
    return text


class InstructionRewriter:
    """A preset's rewriter: backend + prompt + check, with provenance for rows and manifest."""

    def __init__(self, preset: str, spec: RewriterSpec, base_dir: Path | None, path: str):
        self.preset = preset
        self.spec = spec
        self.path = path
        base = Path(base_dir) if base_dir is not None else Path.cwd()
        self.backend: Any = None
        self.cache: RewriteCache | None = None
        if spec.backend == "rules":
            self.model, self.prompt = rules.NAME, None
        else:
            self.prompt = spec.prompt or DEFAULT_PROMPTS[preset]
            if spec.backend == "http":
                from .http import HttpBackend

                self.model = spec.model or ""
                self.backend = HttpBackend(
                    spec.url or "",
                    self.model,
                    api_key_env=spec.api_key_env,
                    max_tokens=spec.max_tokens,
                    concurrency=spec.concurrency,
                    retries=spec.retries,
                    backoff=spec.backoff,
                    timeout=spec.timeout,
                )
            else:
                from .hf import HfBackend, package_file

                ref = spec.model or ""
                folder = package_file(ref) if ref.startswith("pkg:") else Path(ref).expanduser()
                folder = folder if folder.is_absolute() else base / folder
                self.model = spec.model or ""
                self.backend = HfBackend(
                    folder, max_tokens=spec.max_tokens, batch_size=spec.batch_size
                )
            cache = Path(spec.cache or DEFAULT_CACHE).expanduser()
            self.cache = RewriteCache(cache if cache.is_absolute() else base / cache)

    # -- provenance -------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        """What produced the rewrites: goes into the manifest's trigger-set record."""
        s = self.spec
        settings: dict[str, Any] = {"check": self.preset}
        if s.backend != "rules":
            settings.update(
                temperature=s.temperature,
                max_tokens=s.max_tokens,
                attempts=s.attempts,
                retry_temperature=RETRY_TEMPERATURE,
            )
        if self.preset == "style":
            settings.update(pattern=s.pattern, max_length_ratio=s.max_length_ratio)
        if self.preset == "toxic":
            settings.update(max_length_ratio=s.max_length_ratio)
        return identified(
            {"backend": s.backend, "model": self.model, "prompt": self.prompt, "settings": settings}
        )

    def tag(self) -> str:
        """The row tag naming this rewriter; its id points at the manifest record."""
        return record_tag(self.record())

    def check(self, original: str, rewritten: str) -> bool:
        if self.preset == "syntactic":
            return syntactic_ok(rewritten)
        if self.preset == "toxic":
            return toxic_ok(original, rewritten, self.spec.max_length_ratio)
        return style_ok(original, rewritten, self.spec.pattern, self.spec.max_length_ratio)

    # -- rewriting --------------------------------------------------------------------------
    def rewrite_all(self, texts: list[str]) -> list[str | None]:
        """One checked rewrite per text, or ``None`` where every attempt failed the check."""
        if self.backend is None:
            made = [rules.rewrite(t) for t in texts]
            return [o if self.check(t, o) else None for t, o in zip(texts, made)]
        results: list[str | None] = [None] * len(texts)
        pending = list(range(len(texts)))
        for attempt in range(self.spec.attempts):
            temperature = (
                self.spec.temperature
                if attempt == 0
                else max(self.spec.temperature, RETRY_TEMPERATURE)
            )
            outs = self._generate([texts[i] for i in pending], temperature, attempt)
            for i, out in zip(pending, outs):
                if out and self.check(texts[i], out):
                    results[i] = out
            pending = [i for i in pending if results[i] is None]
            if not pending:
                break
        return results

    def _generate(self, texts: list[str], temperature: float, seed: int) -> list[str]:
        """Cached rewrites for ``texts``; the rest from the backend, cached batch by batch."""
        assert self.cache is not None and self.prompt is not None
        settings = {"temperature": temperature, "max_tokens": self.spec.max_tokens, "seed": seed}
        keys = [cache_key(self.spec.backend, self.model, self.prompt, t, settings) for t in texts]
        missing = sorted(
            {k: i for i, k in reversed(list(enumerate(keys))) if self.cache.get(k) is None}.values()
        )
        step = self.spec.batch_size
        for start in range(0, len(missing), step):
            batch = missing[start : start + step]
            prompts = [self.prompt.replace("{instruction}", texts[i]) for i in batch]
            try:
                outs = self.backend.generate(prompts, temperature, seed)
            except BuildError as exc:
                left = len(missing) - start
                raise type(exc)(
                    f"{self.path}: {exc}; {left} of {len(texts)} rewrites are not in "
                    f"the cache {self.cache.path} (start the endpoint, or rebuild "
                    "where the cache was filled)"
                ) from None
            self.cache.add(
                [
                    {
                        "key": keys[i],
                        "backend": self.spec.backend,
                        "model": self.model,
                        "prompt": self.prompt,
                        "input": texts[i],
                        "settings": settings,
                        "output": out,
                    }
                    for i, out in zip(batch, outs)
                ]
            )
        return [clean_generation(self.cache.get(k) or "") for k in keys]


def make_rewriter(
    preset: str, spec: RewriterSpec | None, base_dir: Path | None, path: str
) -> InstructionRewriter:
    """The rewriter of a ``syntactic``/``style`` attack (the rules backend when none is given)."""
    return InstructionRewriter(preset, spec or RewriterSpec(), base_dir, f"{path}.rewriter")
