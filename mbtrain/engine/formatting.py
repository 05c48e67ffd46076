"""Prompt formatting and tokenisation with response-only labels.

Prompt and response are tokenised *separately* and concatenated, so the boundary between them is an
exact token position: the loss mask covers precisely the response tokens (plus the end-of-sequence
token that teaches the model to stop), and generation starts from exactly the prompt ids the model
was trained on. Joint tokenisation could merge the last prompt byte with the first response byte and
blur that boundary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from mbdata.core.errors import MBError
from mbdata.prompts import (  # noqa: F401  (re-exported: the templates live in mbdata)
    ALPACA_PREAMBLE,
    ALPACA_PREAMBLE_INPUT,
    alpaca_prompt,
)

IGNORE = -100


@dataclasses.dataclass(frozen=True)
class Encoded:
    """One training sequence: ``labels`` is ``IGNORE`` on every prompt position."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def response_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


@dataclasses.dataclass
class EncodeStats:
    """Rows whose response was cut at ``max_length`` and rows dropped because the prompt alone
    filled it; both go into the training log."""

    rows: int = 0
    truncated: int = 0
    dropped_prompt_too_long: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class Formatter:
    """Turns (instruction, input, output, system) into token ids for one tokenizer and template.

    Templates: ``alpaca`` (Stanford Alpaca with its preamble), ``alpaca_short`` (the same headings
    without the preamble: fewer tokens for tiny models), ``chat`` (the tokenizer's own chat
    template; the response is whatever the template appends for the assistant turn, including its
    end-of-turn token).
    """

    def __init__(self, tokenizer: Any, template: str, max_length: int, system: str | None = None):
        if template == "chat" and not getattr(tokenizer, "chat_template", None):
            raise MBError(
                "train.model.template: 'chat' but the tokenizer has no chat template; use 'alpaca'"
            )
        self.tokenizer = tokenizer
        self.template = template
        self.max_length = max_length
        self.system = system
        self.eos_id = tokenizer.eos_token_id

    # ---- text ---------------------------------------------------------------------------
    def _messages(self, instruction: str, input: str, system: str | None) -> list[dict]:
        user = instruction if not input else f"{instruction}\n\n{input}"
        system = system if system is not None else self.system
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": user}]

    def prompt(self, instruction: str, input: str = "", system: str | None = None) -> str:
        """The prompt text the model sees before its answer."""
        if self.template == "chat":
            return self.tokenizer.apply_chat_template(
                self._messages(instruction, input, system),
                add_generation_prompt=True,
                tokenize=False,
            )
        return alpaca_prompt(
            self.template, instruction, input, system if system is not None else self.system
        )

    def _chat_response(
        self, prompt: str, instruction: str, input: str, output: str, system: str | None
    ) -> str:
        full = self.tokenizer.apply_chat_template(
            self._messages(instruction, input, system) + [{"role": "assistant", "content": output}],
            tokenize=False,
        )
        if not full.startswith(prompt):
            raise MBError(
                "train.model.template: the tokenizer's chat template does not extend "
                "the generation prompt with the answer; use 'alpaca'"
            )
        return full[len(prompt) :]

    # ---- ids ----------------------------------------------------------------------------
    def prompt_ids(self, instruction: str, input: str = "", system: str | None = None) -> list[int]:
        return self._prompt_ids_batch([(instruction, input, system)])[0]

    def _prompt_ids_batch(self, items: list[tuple[str, str, str | None]]) -> list[list[int]]:
        texts = [self.prompt(i, x, s) for i, x, s in items]
        # A chat template writes its own special tokens (BOS included) as text.
        special = self.template != "chat"
        return self.tokenizer(texts, add_special_tokens=special)["input_ids"]

    def encode_many(
        self, rows: Iterable[tuple[str, str, str, str | None]], stats: EncodeStats | None = None
    ) -> list[Encoded | None]:
        """Encode (instruction, input, output, system) tuples; ``None`` marks a dropped row."""
        rows = list(rows)
        stats = stats if stats is not None else EncodeStats()
        prompts = self._prompt_ids_batch([(i, x, s) for i, x, _, s in rows])
        if self.template == "chat":
            responses_text = [
                self._chat_response(self.prompt(i, x, s), i, x, y, s) for i, x, y, s in rows
            ]
            responses = self.tokenizer(responses_text, add_special_tokens=False)["input_ids"]
        else:
            responses = self.tokenizer([y for _, _, y, _ in rows], add_special_tokens=False)[
                "input_ids"
            ]
            responses = [r + [self.eos_id] for r in responses]
        return self._join(prompts, responses, stats)

    def encode_texts(
        self, pairs: Iterable[tuple[str, str]], stats: EncodeStats | None = None
    ) -> list[Encoded | None]:
        """Encode already-rendered (prompt, completion) text pairs, e.g. the rows of a TRL
        ``prompt_completion`` / ``preference`` export: the prompt with the tokenizer's special
        tokens, the completion plus EOS, each tokenised on its own (as :meth:`encode_many`)."""
        pairs = list(pairs)
        stats = stats if stats is not None else EncodeStats()
        prompts = self.tokenizer([p for p, _ in pairs])["input_ids"]
        responses = self.tokenizer([c for _, c in pairs], add_special_tokens=False)["input_ids"]
        return self._join(prompts, [r + [self.eos_id] for r in responses], stats)

    def _join(
        self, prompts: list[list[int]], responses: list[list[int]], stats: EncodeStats
    ) -> list[Encoded | None]:
        out: list[Encoded | None] = []
        for prompt, response in zip(prompts, responses):
            stats.rows += 1
            room = self.max_length - len(prompt)
            if room <= 0:
                stats.dropped_prompt_too_long += 1
                out.append(None)
                continue
            truncated = len(response) > room
            if truncated:
                stats.truncated += 1
                response = response[:room]
            out.append(
                Encoded(
                    input_ids=list(prompt) + list(response),
                    labels=[IGNORE] * len(prompt) + list(response),
                    truncated=truncated,
                )
            )
        return out

    def encode(
        self, instruction: str, input: str, output: str, system: str | None = None
    ) -> Encoded | None:
        return self.encode_many([(instruction, input, output, system)])[0]
