"""The preference and SFT formats: their parsers, detection per row, and canonicalisation."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from alignment.data.errors import (
    BAD_ROLE,
    EMPTY_TEXT,
    IDENTICAL_PAIR,
    MISSING_FIELD,
    PROMPT_MISMATCH,
    SCORE_GAP,
    WRONG_TYPE,
    DataError,
    Message,
    Pair,
    Record,
    _type_name,
)
from alignment.data.fields import (
    _check_system_first,
    _message,
    _message_list,
    _normalise,
    _normalised_messages,
    _prompt_messages,
    _responses,
    _split_pair,
    _text,
    _with_system,
)

AUTO = "auto"
STANDARD = "standard"
CONVERSATIONAL = "conversational"
IMPLICIT = "implicit"
HH = "hh"
ULTRAFEEDBACK = "ultrafeedback"
SFT_MESSAGES = "sft_messages"
SFT_PROMPT_COMPLETION = "sft_prompt_completion"
SFT_CHOSEN = "sft_chosen"  # a preference row read as SFT data: its prompt and chosen response
UNPAIRED = "unpaired"  # TRL's unpaired preference format: prompt, completion, label (true: desirable)
PREFERENCE_FORMATS = (STANDARD, CONVERSATIONAL, IMPLICIT, HH, ULTRAFEEDBACK)
SFT_FORMATS = (SFT_MESSAGES, SFT_PROMPT_COMPLETION, SFT_CHOSEN)
UNPAIRED_FORMATS = (UNPAIRED,)

_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _parse_standard(row: Mapping[str, Any]) -> Pair:
    prompt = [_message("user", _text(row, "prompt"))]
    return (
        prompt,
        [_message("assistant", _text(row, "chosen"))],
        [_message("assistant", _text(row, "rejected"))],
    )


def _parse_conversational(row: Mapping[str, Any]) -> Pair:
    return _prompt_messages(row), _responses(row, "chosen"), _responses(row, "rejected")


def _parse_whole_conversations(row: Mapping[str, Any]) -> Pair:
    """Implicit / UltraFeedback: chosen and rejected hold whole conversations."""
    chosen, rejected = _message_list(row, "chosen"), _message_list(row, "rejected")
    if not _has_prompt_turns(chosen) and not _has_prompt_turns(rejected) and "prompt" in row:
        return _prompt_messages(row), chosen, rejected
    prompt, chosen_reply, rejected_reply = _split_pair(chosen, rejected)
    _check_prompt_text(row, prompt)
    return prompt, chosen_reply, rejected_reply


def _check_prompt_text(row: Mapping[str, Any], prompt: Sequence[Message]) -> None:
    """An optional ``prompt`` string must match the conversations' last user message."""
    if row.get("prompt") is None:
        return
    text = _text(row, "prompt")
    if _normalise(text) != _normalise(prompt[-1]["content"]):
        raise DataError(
            PROMPT_MISMATCH, "'prompt' differs from the conversations' last user message", field="prompt"
        )


def _hh_messages(row: Mapping[str, Any], key: str) -> list[Message]:
    """Split an HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") into messages."""
    parts = _HH_MARKER.split(_text(row, key))
    if len(parts) == 1:
        raise DataError(BAD_ROLE, f"{key} has no 'Human:' / 'Assistant:' turns", field=key)
    if parts[0].strip():
        raise DataError(BAD_ROLE, f"{key} has text before its first 'Human:' turn", field=key)
    messages = []
    for turn, (speaker, content) in enumerate(zip(parts[1::2], parts[2::2], strict=True)):
        if not content.strip():
            raise DataError(EMPTY_TEXT, f"{key} turn {turn} ({speaker}) is empty or whitespace", field=key)
        messages.append(_message(_HH_ROLES[speaker], content.strip()))
    return messages


def _parse_hh(row: Mapping[str, Any]) -> Pair:
    return _split_pair(_hh_messages(row, "chosen"), _hh_messages(row, "rejected"))


_PREFERENCE_PARSERS: dict[str, Callable[[Mapping[str, Any]], Pair]] = {
    STANDARD: _parse_standard,
    CONVERSATIONAL: _parse_conversational,
    IMPLICIT: _parse_whole_conversations,
    HH: _parse_hh,
    ULTRAFEEDBACK: _parse_whole_conversations,
}


def _check_distinct(chosen: Sequence[Message], rejected: Sequence[Message]) -> None:
    if _normalised_messages(chosen) == _normalised_messages(rejected):
        raise DataError(IDENTICAL_PAIR, "chosen and rejected are identical", field="rejected")


def _score(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    if value is None:
        raise DataError(MISSING_FIELD, f"'{key}' is missing (needed for min_score_gap)", field=key)
    number = _as_float(value)
    if number is None:
        raise DataError(WRONG_TYPE, f"'{key}' is {_type_name(value)}; expected a finite number", field=key)
    return number


def _as_float(value: Any) -> float | None:
    """Return a finite number as float; None for bools, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _check_score_gap(row: Mapping[str, Any], min_score_gap: float) -> None:
    gap = _score(row, "score_chosen") - _score(row, "score_rejected")
    if gap < min_score_gap:
        raise DataError(SCORE_GAP, f"score gap {gap:g} is below {min_score_gap:g}", field="score_chosen")


def _has_prompt_turns(messages: Any) -> bool:
    return isinstance(messages, list) and any(
        isinstance(m, Mapping) and m.get("role") != "assistant" for m in messages
    )


def _looks_like_hh(text: str) -> bool:
    return "\n\nAssistant:" in text or text.lstrip().startswith("Human:")


def _detect_preference(row: Mapping[str, Any]) -> str:
    sample = row.get("chosen") if row.get("chosen") is not None else row.get("rejected")
    if isinstance(sample, str):
        return HH if "prompt" not in row and _looks_like_hh(sample) else STANDARD
    if isinstance(sample, list):
        if "score_chosen" in row or "score_rejected" in row:
            return ULTRAFEEDBACK
        if isinstance(row.get("prompt"), list) or not _has_prompt_turns(sample):
            return CONVERSATIONAL
        return IMPLICIT
    if sample is None:
        raise DataError(MISSING_FIELD, "'chosen' and 'rejected' are missing", field="chosen")
    raise DataError(
        WRONG_TYPE,
        f"'chosen' is {_type_name(sample)}; expected a string or a list of messages",
        field="chosen",
    )


def _detect_sft(row: Mapping[str, Any]) -> str:
    if "messages" in row:
        return SFT_MESSAGES
    if "completion" in row:
        return SFT_PROMPT_COMPLETION
    if "chosen" in row:
        return SFT_CHOSEN
    keys = ", ".join(sorted(map(str, row))[:8])
    raise DataError(
        MISSING_FIELD, f"no 'messages' or 'prompt'/'completion' fields (keys: {keys})", field="messages"
    )


def _detect_in_family(row: Mapping[str, Any], formats: Sequence[str]) -> str:
    """Detect a row's format among one family (preference, SFT or unpaired)."""
    if formats == SFT_FORMATS:
        return _detect_sft(row)
    if formats == UNPAIRED_FORMATS:
        return UNPAIRED
    if "chosen" not in row and "rejected" not in row:
        keys = ", ".join(sorted(map(str, row))[:8])
        raise DataError(MISSING_FIELD, f"no 'chosen'/'rejected' fields (keys: {keys})", field="chosen")
    return _detect_preference(row)


def detect_format(row: Mapping[str, Any]) -> str:
    """Name the format of one row (a preference format first, then an SFT one).

    Raises DataError (missing_field / wrong_type) when no format fits.
    """
    if not isinstance(row, Mapping):
        raise DataError(WRONG_TYPE, f"row is {_type_name(row)}; expected an object")
    if "chosen" in row or "rejected" in row:
        return _detect_preference(row)
    return _detect_sft(row)


def canonicalize_preference(
    row: Mapping[str, Any], fmt: str = AUTO, *, min_score_gap: float | None = None
) -> Record:
    """Return ``{"prompt", "chosen", "rejected"}`` for one row; raise DataError if it is invalid."""
    if not isinstance(row, Mapping):
        raise DataError(WRONG_TYPE, f"row is {_type_name(row)}; expected an object")
    _check_options(fmt, "strict", PREFERENCE_FORMATS)
    row_fmt = _detect_in_family(row, PREFERENCE_FORMATS) if fmt == AUTO else fmt
    prompt, chosen, rejected = _PREFERENCE_PARSERS[row_fmt](row)
    _check_distinct(chosen, rejected)
    if min_score_gap is not None:
        _check_score_gap(row, min_score_gap)
    return {"prompt": _with_system(prompt, row), "chosen": chosen, "rejected": rejected}


def _parse_sft_messages(row: Mapping[str, Any]) -> list[Message]:
    return _with_system(_message_list(row, "messages"), row)


def _parse_sft_prompt_completion(row: Mapping[str, Any]) -> list[Message]:
    return _with_system(_prompt_messages(row), row) + _responses(row, "completion")


def _parse_sft_chosen(row: Mapping[str, Any]) -> list[Message]:
    """Any preference format: the prompt followed by the chosen response (HH-RLHF's usual SFT data)."""
    prompt, chosen, _ = _PREFERENCE_PARSERS[_detect_preference(row)](row)
    return _with_system(prompt, row) + chosen


_SFT_PARSERS: dict[str, Callable[[Mapping[str, Any]], list[Message]]] = {
    SFT_MESSAGES: _parse_sft_messages,
    SFT_PROMPT_COMPLETION: _parse_sft_prompt_completion,
    SFT_CHOSEN: _parse_sft_chosen,
}


def _check_conversation(messages: Sequence[Message], key: str) -> None:
    """SFT conversations: system messages first, then a user turn, ending with the assistant."""
    _check_system_first(messages, key)
    first = next((m for m in messages if m["role"] != "system"), None)
    if first is None or first["role"] != "user":
        raise DataError(
            BAD_ROLE, f"{key} must start with a user message (after any system message)", field=key
        )
    if messages[-1]["role"] != "assistant":
        raise DataError(BAD_ROLE, f"{key} must end with an assistant message", field=key)


def canonicalize_sft(row: Mapping[str, Any], fmt: str = AUTO) -> Record:
    """Return ``{"messages": [...]}`` for one SFT row; raise DataError if it is invalid."""
    if not isinstance(row, Mapping):
        raise DataError(WRONG_TYPE, f"row is {_type_name(row)}; expected an object")
    _check_options(fmt, "strict", SFT_FORMATS)
    row_fmt = _detect_in_family(row, SFT_FORMATS) if fmt == AUTO else fmt
    messages = _SFT_PARSERS[row_fmt](row)
    _check_conversation(messages, "messages")
    return {"messages": messages}



def canonicalize_unpaired(row: Mapping[str, Any], fmt: str = AUTO) -> Record:
    """Return ``{"prompt", "completion", "label"}`` for one unpaired example (TRL's unpaired preference format:
    `prompt` a string or messages ending with a user turn, `completion` a string or assistant messages, `label`
    true for a desirable answer, false for an undesirable one); raise DataError naming the field if it is
    invalid."""
    if not isinstance(row, Mapping):
        raise DataError(WRONG_TYPE, f"row is {_type_name(row)}; expected an object")
    _check_options(fmt, "strict", UNPAIRED_FORMATS)
    for key in ("prompt", "completion", "label"):
        if row.get(key) is None:
            raise DataError(MISSING_FIELD, f"'{key}' is missing", field=key)
    label = row["label"]
    if not isinstance(label, bool):
        raise DataError(WRONG_TYPE, f"'label' is {_type_name(label)}; expected true (desirable) or false "
                                    f"(undesirable)", field="label")
    return {"prompt": _with_system(_prompt_messages(row), row), "completion": _responses(row, "completion"),
            "label": label}


def _check_options(fmt: str, policy: str, formats: Sequence[str]) -> None:
    if policy not in ("strict", "drop"):
        raise ValueError(f"policy must be 'strict' or 'drop', not {policy!r}")
    if fmt != AUTO and fmt not in formats:
        raise ValueError(f"unknown format {fmt!r}; expected 'auto' or one of {', '.join(formats)}")
