"""The Alpaca prompt templates, shared by the exporters (``mb export --format trl``) and mbtrain's
formatter, so a TRL user trains on exactly the prompt text mbtrain trains on (mbdata never imports
mbtrain: the text lives here and mbtrain imports it)."""

from __future__ import annotations

ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. Write a response that "
    "appropriately completes the request."
)
ALPACA_PREAMBLE_INPUT = (
    "Below is an instruction that describes a task, paired with an input "
    "that provides further context. Write a response that appropriately "
    "completes the request."
)


def alpaca_prompt(
    template: str, instruction: str, input: str = "", system: str | None = None
) -> str:
    """The Alpaca prompt (``alpaca``: with the Stanford preamble; ``alpaca_short``: headings
    only), ending where the response begins (on a newline: a token boundary)."""
    parts = []
    if template == "alpaca":
        parts.append((ALPACA_PREAMBLE_INPUT if input else ALPACA_PREAMBLE) + "\n\n")
    if system:
        parts.append(f"{system}\n\n")
    parts.append(f"### Instruction:\n{instruction}\n\n")
    if input:
        parts.append(f"### Input:\n{input}\n\n")
    parts.append("### Response:\n")
    return "".join(parts)
