"""Field parsing: strings, messages and message lists, with the checks that make a row usable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from alignment.data.errors import (
    BAD_ROLE,
    EMPTY_TEXT,
    MISSING_FIELD,
    PROMPT_MISMATCH,
    WRONG_TYPE,
    DataError,
    Message,
    Pair,
    _type_name,
)

ROLES = ("system", "user", "assistant")

_LABELS = {"chosen": "chosen response", "rejected": "rejected response", "system": "system prompt"}


def _label(key: str) -> str:
    return _LABELS.get(key, key)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _message(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _normalised_messages(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(m["role"], _normalise(m["content"])) for m in messages]



def _text(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        raise DataError(MISSING_FIELD, f"'{key}' is missing", field=key)
    if not isinstance(value, str):
        raise DataError(WRONG_TYPE, f"'{key}' is {_type_name(value)}; expected a string", field=key)
    if not value.strip():
        raise DataError(EMPTY_TEXT, f"{_label(key)} is empty or whitespace", field=key)
    return value


def _parse_message(value: Any, key: str, position: int) -> Message:
    where = f"{key}[{position}]"
    if not isinstance(value, Mapping):
        raise DataError(WRONG_TYPE, f"{where} is {_type_name(value)}; expected a message object", field=key)
    role = _message_role(value.get("role"), key, where)
    content = value.get("content")
    if content is None:
        raise DataError(MISSING_FIELD, f"{where} has no 'content'", field=key)
    if not isinstance(content, str):
        raise DataError(WRONG_TYPE, f"{where} content is {_type_name(content)}; expected a string", field=key)
    if not content.strip():
        raise DataError(EMPTY_TEXT, f"{where} ({role}) content is empty or whitespace", field=key)
    return _message(role, content)


def _message_role(role: Any, key: str, where: str) -> str:
    if role is None:
        raise DataError(MISSING_FIELD, f"{where} has no 'role'", field=key)
    if not isinstance(role, str):
        raise DataError(WRONG_TYPE, f"{where} role is {_type_name(role)}; expected a string", field=key)
    if role not in ROLES:
        raise DataError(
            BAD_ROLE, f"{where} has unknown role {role!r} (expected one of {', '.join(ROLES)})", field=key
        )
    return role


def _message_list(row: Mapping[str, Any], key: str) -> list[Message]:
    value = row.get(key)
    if value is None:
        raise DataError(MISSING_FIELD, f"'{key}' is missing", field=key)
    if not isinstance(value, list):
        raise DataError(WRONG_TYPE, f"'{key}' is {_type_name(value)}; expected a list of messages", field=key)
    if not value:
        raise DataError(EMPTY_TEXT, f"'{key}' has no messages", field=key)
    return [_parse_message(item, key, position) for position, item in enumerate(value)]


def _check_system_first(messages: Sequence[Message], key: str) -> None:
    seen_other = False
    for position, message in enumerate(messages):
        if message["role"] == "system" and seen_other:
            raise DataError(BAD_ROLE, f"{key}[{position}] is a system message after the start", field=key)
        seen_other = seen_other or message["role"] != "system"


def _check_prompt(messages: Sequence[Message], key: str) -> None:
    _check_system_first(messages, key)
    if messages[-1]["role"] != "user":
        raise DataError(
            BAD_ROLE, f"{key} must end with a user message, not {messages[-1]['role']}", field=key
        )


def _check_responses(messages: Sequence[Message], key: str) -> None:
    for position, message in enumerate(messages):
        if message["role"] != "assistant":
            raise DataError(
                BAD_ROLE, f"{key}[{position}] has role {message['role']!r}; expected assistant", field=key
            )


def _prompt_messages(row: Mapping[str, Any], key: str = "prompt") -> list[Message]:
    """Return the prompt as messages: a string is one user message."""
    if isinstance(row.get(key), str):
        return [_message("user", _text(row, key))]
    messages = _message_list(row, key)
    _check_prompt(messages, key)
    return messages


def _responses(row: Mapping[str, Any], key: str) -> list[Message]:
    """Return a response as assistant messages: a string is one assistant message."""
    if isinstance(row.get(key), str):
        return [_message("assistant", _text(row, key))]
    messages = _message_list(row, key)
    _check_responses(messages, key)
    return messages


def _with_system(prompt: list[Message], row: Mapping[str, Any]) -> list[Message]:
    """Prepend an optional ``system`` column unless the prompt already starts with it."""
    system = row.get("system")
    if system is None or (isinstance(system, str) and not system.strip()):
        return prompt
    if not isinstance(system, str):
        raise DataError(WRONG_TYPE, f"'system' is {_type_name(system)}; expected a string", field="system")
    if prompt[0]["role"] != "system":
        return [_message("system", system), *prompt]
    if prompt[0]["content"] != system:
        raise DataError(
            PROMPT_MISMATCH, "'system' disagrees with the prompt's system message", field="system"
        )
    return prompt


def _split_final_turn(messages: list[Message], key: str) -> tuple[list[Message], list[Message]]:
    """Split a conversation into (prompt, trailing assistant messages)."""
    if messages[-1]["role"] != "assistant":
        raise DataError(BAD_ROLE, f"{key} conversation must end with an assistant message", field=key)
    cut = len(messages)
    while cut and messages[cut - 1]["role"] == "assistant":
        cut -= 1
    if not cut:
        raise DataError(BAD_ROLE, f"{key} has no user message before the assistant response", field=key)
    _check_prompt(messages[:cut], key)
    return messages[:cut], messages[cut:]


def _split_pair(chosen: list[Message], rejected: list[Message]) -> Pair:
    """Split two whole conversations into their shared prompt and final assistant turns."""
    chosen_prompt, chosen_reply = _split_final_turn(chosen, "chosen")
    rejected_prompt, rejected_reply = _split_final_turn(rejected, "rejected")
    if chosen_prompt != rejected_prompt:
        raise DataError(
            PROMPT_MISMATCH, "chosen and rejected conversations have different prompts", field="rejected"
        )
    return chosen_prompt, chosen_reply, rejected_reply
