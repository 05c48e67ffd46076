"""The chat layouts, ``sharegpt`` (``conversations`` of from/value turns) and ``messages``
(OpenAI-style role/content turns): the first user turn and the first answer after it make the
canonical single-turn row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .records import RowProblem, text_field
from .registry import LAYOUTS

if TYPE_CHECKING:
    from .source import SourceSpec


_USER_ROLES = {"human", "user"}


_ASSISTANT_ROLES = {"gpt", "assistant", "model", "bot", "chatgpt"}


_SYSTEM_ROLES = {"system"}


def _turns(record: dict, column: str, role_key: str, text_key: str) -> dict[str, Any]:
    turns = record.get(column)
    if turns is None:
        raise RowProblem(f"missing:{column}", column, "missing")
    if not isinstance(turns, list):
        raise RowProblem(
            f"not_list:{column}", column, f"expected a list of turns, got {type(turns).__name__}"
        )
    system = prompt = answer = None
    extra_turns = 0
    for i, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get(role_key), str)
            or not isinstance(turn.get(text_key), str)
        ):
            raise RowProblem(
                f"bad_turn:{column}",
                f"{column}[{i}]",
                f"each turn needs string '{role_key}' and '{text_key}'",
            )
        role = turn[role_key].lower()
        if role in _SYSTEM_ROLES and prompt is None:
            system = turn[text_key]
        elif role in _USER_ROLES and prompt is None:
            prompt = turn[text_key]
        elif role in _ASSISTANT_ROLES and prompt is not None and answer is None:
            answer = turn[text_key]
        elif role not in _SYSTEM_ROLES | _USER_ROLES | _ASSISTANT_ROLES:
            raise RowProblem(
                f"bad_role:{column}",
                f"{column}[{i}].{role_key}",
                f"unknown role {turn[role_key]!r}",
            )
        else:
            extra_turns += 1
    if prompt is None:
        raise RowProblem(f"no_user_turn:{column}", column, "no user turn")
    if answer is None:
        raise RowProblem(f"no_assistant_turn:{column}", column, "no assistant turn after the user")
    return {
        "instruction": prompt,
        "input": "",
        "output": answer,
        "system": system,
        "_extra_turns": extra_turns,
    }


@LAYOUTS.add("sharegpt")
def sharegpt_layout(record: dict, fields: dict[str, str]) -> dict[str, Any]:
    """``{"conversations": [{"from": "human"|"gpt"|"system", "value": str}, ...]}``.

    The first user turn and the first assistant turn after it make the row; later turns are counted
    (``info.extra_turns_dropped``) because the canonical row is single-turn."""
    row = _turns(record, fields.get("conversations", "conversations"), "from", "value")
    if "system" in fields:
        row["system"] = text_field(record, fields["system"], "system", False) or row["system"]
    return row


@LAYOUTS.add("messages")
def messages_layout(record: dict, fields: dict[str, str]) -> dict[str, Any]:
    """OpenAI-style ``{"messages": [{"role": ..., "content": ...}, ...]}`` (first exchange kept)."""
    return _turns(record, fields.get("messages", "messages"), "role", "content")


def layout_without_answer(record: dict, source: SourceSpec) -> dict[str, Any]:
    """A chat record whose first user turn has no answer (a prompts-only reference)."""
    key = "conversations" if source.layout == "sharegpt" else "messages"
    role_key, text_key = ("from", "value") if source.layout == "sharegpt" else ("role", "content")
    turns = list(record.get(source.fields.get(key, key)) or [])
    padded = {
        **record,
        source.fields.get(key, key): turns + [{role_key: "assistant", text_key: ""}],
    }
    return LAYOUTS.get(source.layout, "layout")(padded, source.fields)
