"""Load, validate, canonicalise, de-duplicate and split alignment data sets.

Canonical records are plain JSON-serialisable dicts:

* preference: ``{"prompt": [msg, ...], "chosen": [msg, ...], "rejected": [msg, ...],
  "source": str, "row_index": int}``; the prompt ends with a user message, chosen and
  rejected hold assistant messages (normally exactly one);
* SFT: ``{"messages": [msg, ...], "source": str, "row_index": int}`` ending with an
  assistant message;

where ``msg = {"role": "system" | "user" | "assistant", "content": str}``.

Row numbers are 0-based everywhere: ``row_index`` and "row 3" in an error both mean the
fourth data row of the file (for JSON Lines the line index, blank lines included; for CSV
the fourth row after the header). Problems with a whole file or source (missing, unreadable,
no CSV header, not parquet) raise :class:`DataError` under both policies.

Sources are local files or folders (``.jsonl``, ``.json``, ``.parquet``, ``.csv``), Hugging Face
Hub ids (``owner/name`` or ``hf://owner/name``, with a subset and split) and ``s3://bucket/key``
URIs (an object or a prefix; downloaded to a local cache by :mod:`alignment.s3io`). Reading
streams: :func:`iter_preferences` / :func:`iter_sft` yield records one by one, holding only a
16-byte hash per kept row for de-duplication.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

Message = dict[str, str]
Record = dict[str, Any]
Policy = Literal["strict", "drop"]
Pair = tuple[list[Message], list[Message], list[Message]]
RowItem = tuple[int, "dict[str, Any] | DataError"]

# Reason codes: one per kind of failure; DUPLICATE and SCORE_GAP are filters, never errors.
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
EMPTY_TEXT = "empty_text"
IDENTICAL_PAIR = "identical_pair"
PROMPT_MISMATCH = "prompt_mismatch"
BAD_ROLE = "bad_role"
BAD_JSON = "bad_json"
BAD_ENCODING = "bad_encoding"
SCORE_GAP = "score_gap"
DUPLICATE = "duplicate"
TOO_LONG = "too_long"
BAD_FILE = "bad_file"
REASONS = (
    MISSING_FIELD,
    WRONG_TYPE,
    EMPTY_TEXT,
    IDENTICAL_PAIR,
    PROMPT_MISMATCH,
    BAD_ROLE,
    BAD_JSON,
    BAD_ENCODING,
    SCORE_GAP,
    DUPLICATE,
    TOO_LONG,
    BAD_FILE,
)
FILTER_REASONS = frozenset({DUPLICATE, SCORE_GAP})

AUTO = "auto"
STANDARD = "standard"
CONVERSATIONAL = "conversational"
IMPLICIT = "implicit"
HH = "hh"
ULTRAFEEDBACK = "ultrafeedback"
SFT_MESSAGES = "sft_messages"
SFT_PROMPT_COMPLETION = "sft_prompt_completion"
SFT_CHOSEN = "sft_chosen"  # a preference row read as SFT data: its prompt and chosen response
PREFERENCE_FORMATS = (STANDARD, CONVERSATIONAL, IMPLICIT, HH, ULTRAFEEDBACK)
SFT_FORMATS = (SFT_MESSAGES, SFT_PROMPT_COMPLETION, SFT_CHOSEN)

ROLES = ("system", "user", "assistant")
SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
KNOWN_COLUMNS = ("prompt", "chosen", "rejected", "messages", "completion", "system")
MAX_STRICT_ERRORS = 10
MAX_EXAMPLES = 3
PARQUET_BATCH_ROWS = 1024

_LABELS = {"chosen": "chosen response", "rejected": "rejected response", "system": "system prompt"}
_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_SURROGATE = re.compile("[\ud800-\udfff]")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_BOM = b"\xef\xbb\xbf"


class DataError(ValueError):
    """A data problem located by file, 0-based row and field, with a reason code."""

    def __init__(
        self,
        reason: str,
        detail: str,
        file: str | None = None,
        row: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason, detail, file, row, field)
        self.reason = reason
        self.detail = detail
        self.file = file
        self.row = row
        self.field = field

    def __str__(self) -> str:
        parts = ["data error" + (f" in {self.file}" if self.file else "")]
        parts += [f"row {self.row}"] if self.row is not None else []
        parts += [f"field '{self.field}'"] if self.field else []
        return f"{', '.join(parts)}: {self.reason} — {self.detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.detail, self.file, self.row, self.field))

    def locate(self, file: str, row: int | None) -> DataError:
        """Fill in the file and row where they are not yet known; return self."""
        self.file = self.file or file
        self.row = row if self.row is None else self.row
        return self


class DataValidationError(DataError):
    """Strict-mode failure: the first few row errors plus the total count."""

    def __init__(self, errors: Sequence[DataError], total: int) -> None:
        first = errors[0]
        super().__init__(first.reason, first.detail, first.file, first.row, first.field)
        self.errors = list(errors)
        self.total = total

    def __str__(self) -> str:
        lines = [f"data validation failed: {self.total} invalid row(s); the first {len(self.errors)}:"]
        lines += [f"  - {error}" for error in self.errors]
        if self.total > len(self.errors):
            lines.append(f"  ... and {self.total - len(self.errors)} more")
        return "\n".join(lines)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.total))


@dataclass
class DropReport:
    """Rows read, kept and dropped (per reason, with up to three examples each)."""

    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rows_read: int = 0
    rows_kept: int = 0
    formats: dict[str, str] = field(default_factory=dict)  # source file -> detected (or given) format

    @property
    def rows_dropped(self) -> int:
        """Total rows dropped for any reason."""
        return sum(self.counts.values())

    def add(self, error: DataError) -> None:
        """Count one dropped row and keep it as an example if there are few so far."""
        self.counts[error.reason] = self.counts.get(error.reason, 0) + 1
        examples = self.examples.setdefault(error.reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(
                {"file": error.file, "row": error.row, "field": error.field, "message": error.detail}
            )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable copy."""
        return {
            "counts": dict(sorted(self.counts.items())),
            "examples": {reason: [dict(e) for e in items] for reason, items in sorted(self.examples.items())},
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rows_dropped": self.rows_dropped,
            "formats": dict(self.formats),
        }


# ---------------------------------------------------------------------------- small helpers


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _label(key: str) -> str:
    return _LABELS.get(key, key)


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _message(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _normalised_messages(messages: Sequence[Message]) -> list[tuple[str, str]]:
    return [(m["role"], _normalise(m["content"])) for m in messages]


def _bad_text_key(row: Mapping[str, Any]) -> str | None:
    """Return the first key whose value holds undecodable bytes (lone surrogates)."""
    for key, value in row.items():
        if _has_surrogates(key) or _has_surrogates(value):
            return str(key).encode("utf-8", "replace").decode("utf-8")
    return None


def _has_surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, Mapping):
        return any(_has_surrogates(k) or _has_surrogates(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogates(v) for v in value)
    return False


def _check_row(value: Any) -> dict[str, Any] | DataError:
    """Return the row as a dict, or the DataError that makes it unusable."""
    if not isinstance(value, Mapping):
        return DataError(WRONG_TYPE, f"row is {_type_name(value)}; expected an object")
    try:
        bad_key = _bad_text_key(value)
    except RecursionError:
        return DataError(WRONG_TYPE, "row is nested too deeply")
    if bad_key is not None:
        return DataError(BAD_ENCODING, "text is not valid UTF-8", field=bad_key)
    return dict(value)


# ---------------------------------------------------------------------------- readers


def _open_binary(path: Path, name: str) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        raise DataError(BAD_FILE, f"cannot open: {exc.strerror or exc}", file=name) from exc


def _read_jsonl(path: Path, name: str) -> Iterator[RowItem]:
    with _open_binary(path, name) as handle:
        for index, raw in enumerate(handle):
            raw = raw.removeprefix(_BOM) if index == 0 else raw
            if raw.strip():
                yield index, _parse_json_line(raw)


def _parse_json_line(raw: bytes) -> dict[str, Any] | DataError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DataError(BAD_ENCODING, f"line is not valid UTF-8 (byte {exc.start})")
    try:
        return _check_row(json.loads(text))
    except (ValueError, RecursionError) as exc:
        return DataError(BAD_JSON, f"broken JSON: {exc}")


def _read_json(path: Path, name: str) -> Iterator[RowItem]:
    with _open_binary(path, name) as handle:
        text = handle.read().removeprefix(_BOM).decode("utf-8", "surrogateescape")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        if text.lstrip().startswith("["):
            raise DataError(BAD_JSON, f"file is not valid JSON: {exc}", file=name) from exc
        yield from _read_jsonl(path, name)  # a .json file holding JSON Lines
        return
    for index, item in enumerate(_json_items(data, name)):
        yield index, _check_row(item)


def _json_items(data: Any, name: str) -> list[Any]:
    if isinstance(data, Mapping) and "data" in data:
        data = data["data"]
    elif isinstance(data, Mapping):
        data = [data]
    if not isinstance(data, list):
        raise DataError(WRONG_TYPE, 'expected a list of objects or {"data": [...]}', file=name)
    return data


def _read_csv(path: Path, name: str) -> Iterator[RowItem]:
    old_limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with _open_binary(path, name) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.DictReader(text)
            _check_csv_header(reader.fieldnames, name)
            yield from _csv_rows(reader, name)
    finally:
        csv.field_size_limit(old_limit)


def _csv_rows(reader: csv.DictReader[str], name: str) -> Iterator[RowItem]:
    index = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(BAD_FILE, f"broken CSV: {exc}", file=name, row=index) from exc
        yield (
            index,
            _check_row({key: _csv_value(key, value) for key, value in row.items() if key is not None}),
        )
        index += 1


def _check_csv_header(fieldnames: Sequence[str] | None, name: str) -> None:
    expected = ", ".join(KNOWN_COLUMNS)
    if not fieldnames or any(not (f or "").strip() for f in fieldnames):
        raise DataError(
            MISSING_FIELD,
            f"CSV header row is missing or has empty column names (expected {expected})",
            file=name,
        )
    if _has_surrogates(list(fieldnames)):
        raise DataError(BAD_ENCODING, "CSV header row is not valid UTF-8", file=name)
    if not set(fieldnames) & {*KNOWN_COLUMNS, "score_chosen", "score_rejected"}:
        shown = ", ".join(fieldnames[:5])
        raise DataError(
            MISSING_FIELD,
            f"CSV header row is missing: first row ({shown}) has none of the columns {expected}",
            file=name,
        )


def _csv_value(key: str, value: Any) -> Any:
    """Parse a cell holding a JSON list of objects, or a numeric score; else keep the text."""
    if not isinstance(value, str):
        return value
    stripped = value.strip()
    if stripped.startswith("["):
        with contextlib.suppress(ValueError, RecursionError):
            parsed = json.loads(stripped)
            if isinstance(parsed, list) and parsed and all(isinstance(x, dict) for x in parsed):
                return parsed
    if key.startswith("score_") and stripped:
        with contextlib.suppress(ValueError):
            return float(stripped)
    return value


def _read_parquet(path: Path, name: str) -> Iterator[RowItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        index = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in _parquet_rows(batch):
                yield index, row
                index += 1
    except (pa.ArrowException, OSError) as exc:
        raise DataError(BAD_FILE, f"cannot read parquet: {exc}", file=name) from exc


def _parquet_rows(batch: Any) -> list[dict[str, Any] | DataError]:
    try:
        return [_check_row(row) for row in batch.to_pylist()]
    except (ValueError, OverflowError):  # a value Python cannot hold (a date past 9999, a huge duration)
        return [_parquet_row(batch.slice(i, 1)) for i in range(batch.num_rows)]


def _parquet_row(one: Any) -> dict[str, Any] | DataError:
    row = {}
    for name, column in zip(one.schema.names, one.columns, strict=True):
        try:
            row[name] = column.to_pylist()[0]
        except (ValueError, OverflowError) as exc:
            return DataError(WRONG_TYPE, f"'{name}' holds a {column.type} value Python cannot represent ({exc})",
                             field=name)
    return _check_row(row)


_READERS: dict[str, Callable[[Path, str], Iterator[RowItem]]] = {
    ".jsonl": _read_jsonl,
    ".json": _read_json,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}


def _read_file(path: Path, name: str) -> Iterator[RowItem]:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise DataError(BAD_FILE, f"unsupported file type {path.suffix!r} (expected {supported})", file=name)
    return reader(path, name)


def _folder_files(folder: Path) -> list[Path]:
    def visible(path: Path) -> bool:
        return not any(part.startswith(".") for part in path.relative_to(folder).parts)

    found = [
        p for p in folder.rglob("*") if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file() and visible(p)
    ]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def _local_files(source: str) -> Iterator[tuple[str, Iterator[RowItem]]]:
    """Yield (display name, rows) for a local file or every supported file under a folder."""
    path = Path(source)
    if path.is_dir():
        files = _folder_files(path)
        if not files:
            raise DataError(
                BAD_FILE, f"folder has no {', '.join(SUPPORTED_SUFFIXES)} files: {source}", file=source
            )
        for file in files:
            name = file.relative_to(path).as_posix()
            yield name, _read_file(file, name)
    elif path.is_file():
        yield source, _read_file(path, source)
    else:
        raise DataError(BAD_FILE, f"no such file or folder: {source}", file=source)


def read_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(row_index, row)`` from a local file or folder; row_index is 0-based per file.

    Raises DataError (located by file and row) at the first unreadable row.
    """
    for name, rows in _local_files(os.fspath(path)):
        for index, row in rows:
            if isinstance(row, DataError):
                raise row.locate(name, index)
            yield index, row


def load_hub_rows(
    dataset_id: str, subset: str | None = None, split: str = "train"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Stream ``(row_index, row)`` from a Hugging Face Hub data set (0-based row index)."""
    import datasets

    stream = datasets.load_dataset(dataset_id, name=subset, split=split, streaming=True)
    yield from enumerate(stream)


def _hub_dataset_id(source: str) -> str | None:
    """Return the hub id for ``hf://owner/name`` or a bare ``owner/name`` that is not a path."""
    if source.startswith("hf://"):
        return source.removeprefix("hf://").removeprefix("datasets/")
    if Path(source).exists() or Path(source).suffix.lower() in SUPPORTED_SUFFIXES:
        return None
    return source if _HUB_ID.fullmatch(source) else None


def _s3_files(source: str, cache_dir: str | os.PathLike[str] | None) -> Iterator[tuple[str, Iterator[RowItem]]]:
    """Download an s3:// object or every supported object under a prefix; read the local copies."""
    from alignment import s3io

    for name, local in s3io.fetch(source, cache_dir):
        yield name, _read_file(local, name)


def _open_source(
    source: str, subset: str | None, split: str, cache_dir: str | os.PathLike[str] | None = None
) -> Iterator[tuple[str, Iterator[RowItem]]]:
    if source.startswith("s3://"):
        yield from _s3_files(source, cache_dir)
        return
    hub_id = _hub_dataset_id(source)
    if hub_id is None:
        yield from _local_files(source)
        return
    name = f"hf://{hub_id}" + (f"[{subset}]" if subset else "") + f":{split}"
    yield name, ((index, _check_row(row)) for index, row in load_hub_rows(hub_id, subset, split))


# ---------------------------------------------------------------------------- field parsing


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


# ---------------------------------------------------------------------------- formats


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
    """Detect a row's format among one family (preference or SFT)."""
    if formats == SFT_FORMATS:
        return _detect_sft(row)
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


# ---------------------------------------------------------------------------- loading


def _record_key(record: Mapping[str, Any]) -> bytes:
    """Hash of a record's normalised text (lowercase, collapsed whitespace)."""
    fields = ("prompt", "chosen", "rejected") if "prompt" in record else ("messages",)
    payload = json.dumps([_normalised_messages(record[f]) for f in fields], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=16).digest()


@dataclass
class _LoadState:
    """Records kept, the drop report, strict-mode errors and the de-duplication index."""

    policy: str
    report: DropReport = field(default_factory=DropReport)
    errors: list[DataError] = field(default_factory=list)
    error_count: int = 0
    seen: dict[bytes, tuple[str, int]] = field(default_factory=dict)

    def reject(self, error: DataError) -> None:
        """Count a dropped row, or keep it as a strict-mode error."""
        if error.reason in FILTER_REASONS or self.policy == "drop":
            self.report.add(error)
            return
        self.error_count += 1
        if len(self.errors) < MAX_STRICT_ERRORS:
            self.errors.append(error)

    def keep(self, record: Record, name: str, index: int) -> Record:
        """Return the record with its provenance unless its text was seen before."""
        first = self.seen.setdefault(_record_key(record), (name, index))
        if first != (name, index):
            raise DataError(DUPLICATE, f"duplicate of {first[0]} row {first[1]}")
        self.report.rows_kept += 1
        return {**record, "source": name, "row_index": index}

    def finish(self) -> None:
        """Raise the strict-mode errors, if any."""
        if self.error_count:
            raise DataValidationError(self.errors, self.error_count)


def _load_file(
    name: str,
    rows: Iterator[RowItem],
    fmt: str,
    formats: Sequence[str],
    parse: Callable[[Mapping[str, Any], str], Record],
    state: _LoadState,
    max_rows: int | None = None,
) -> Iterator[Record]:
    file_fmt = None if fmt == AUTO else fmt
    for index, row in rows:
        if max_rows is not None and state.report.rows_read >= max_rows:
            break
        state.report.rows_read += 1
        try:
            if isinstance(row, DataError):
                raise row
            row_fmt = file_fmt or _detect_in_family(row, formats)
            parsed = parse(row, row_fmt)
            if file_fmt is None:  # the first usable row fixes the file's format; a broken one does not
                state.report.formats[name] = file_fmt = row_fmt
            record = state.keep(parsed, name, index)
        except DataError as error:
            state.reject(error.locate(name, index))
            continue
        yield record
    if fmt != AUTO:
        state.report.formats[name] = fmt


def _check_options(fmt: str, policy: str, formats: Sequence[str]) -> None:
    if policy not in ("strict", "drop"):
        raise ValueError(f"policy must be 'strict' or 'drop', not {policy!r}")
    if fmt != AUTO and fmt not in formats:
        raise ValueError(f"unknown format {fmt!r}; expected 'auto' or one of {', '.join(formats)}")


def _iter_load(
    source: str,
    fmt: str,
    policy: str,
    formats: Sequence[str],
    parse: Callable[[Mapping[str, Any], str], Record],
    subset: str | None,
    split: str,
    cache_dir: str | os.PathLike[str] | None,
    report: DropReport | None,
    max_rows: int | None = None,
) -> Iterator[Record]:
    _check_options(fmt, policy, formats)
    if max_rows is not None and (isinstance(max_rows, bool) or max_rows < 1):
        raise ValueError(f"max_rows must be a positive integer, not {max_rows!r}")
    state = _LoadState(policy, report if report is not None else DropReport())
    for name, rows in _open_source(os.fspath(source), subset, split, cache_dir):
        if max_rows is not None and state.report.rows_read >= max_rows:
            break
        yield from _load_file(name, rows, fmt, formats, parse, state, max_rows)
    state.finish()


def _preference_parser(min_score_gap: float | None) -> Callable[[Mapping[str, Any], str], Record]:
    if min_score_gap is not None and (isinstance(min_score_gap, bool) or math.isnan(float(min_score_gap))):
        raise ValueError(f"min_score_gap must be a number, not {min_score_gap!r}")

    def parse(row: Mapping[str, Any], row_fmt: str) -> Record:
        return canonicalize_preference(row, row_fmt, min_score_gap=min_score_gap)

    return parse


def iter_preferences(
    source: str,
    *,
    fmt: str = AUTO,
    policy: Policy = "strict",
    min_score_gap: float | None = None,
    subset: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike[str] | None = None,
    report: DropReport | None = None,
    max_rows: int | None = None,
) -> Iterator[Record]:
    """Stream canonical preference records; counts and drops go into ``report`` as rows are read.

    Same rules as :func:`load_preferences`; in strict mode the DataValidationError is raised after
    the last row (so it lists the first 10 failures and the total). ``max_rows`` stops reading
    after that many rows (over all files of the source).
    """
    parse = _preference_parser(min_score_gap)
    return _iter_load(source, fmt, policy, PREFERENCE_FORMATS, parse, subset, split, cache_dir, report, max_rows)


def iter_sft(
    source: str,
    *,
    fmt: str = AUTO,
    policy: Policy = "strict",
    subset: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike[str] | None = None,
    report: DropReport | None = None,
    max_rows: int | None = None,
) -> Iterator[Record]:
    """Stream canonical SFT records; see :func:`iter_preferences`. Preference rows (any format)
    are read as their prompt followed by the chosen response."""
    return _iter_load(source, fmt, policy, SFT_FORMATS, canonicalize_sft, subset, split, cache_dir, report, max_rows)


def load_preferences(
    source: str,
    *,
    fmt: str = AUTO,
    policy: Policy = "strict",
    min_score_gap: float | None = None,
    subset: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike[str] | None = None,
    max_rows: int | None = None,
) -> tuple[list[Record], DropReport]:
    """Load preference pairs from a file, folder, hub data set or s3:// URI as canonical records.

    ``fmt`` is detected per file from its first usable row unless given. ``policy="strict"``
    raises DataValidationError listing the first 10 bad rows (0-based row numbers) and the
    total; ``"drop"`` drops and counts them. Duplicates and rows below ``min_score_gap`` are
    always dropped and counted, never errors.
    """
    report = DropReport()
    records = list(
        iter_preferences(
            source, fmt=fmt, policy=policy, min_score_gap=min_score_gap, subset=subset, split=split,
            cache_dir=cache_dir, report=report, max_rows=max_rows,
        )
    )
    return records, report


def load_sft(
    source: str,
    *,
    fmt: str = AUTO,
    policy: Policy = "strict",
    subset: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike[str] | None = None,
    max_rows: int | None = None,
) -> tuple[list[Record], DropReport]:
    """Load SFT conversations (``messages``, ``prompt``/``completion`` or preference rows) as canonical records.

    Policies, row numbering and de-duplication as in :func:`load_preferences`.
    """
    report = DropReport()
    records = list(
        iter_sft(source, fmt=fmt, policy=policy, subset=subset, split=split, cache_dir=cache_dir, report=report,
                 max_rows=max_rows)
    )
    return records, report


# ---------------------------------------------------------------------------- split, hash, write


def _prompt_of(record: Mapping[str, Any]) -> list[Message]:
    if "prompt" in record:
        return record["prompt"]
    messages = record["messages"]
    cut = len(messages)
    while cut and messages[cut - 1]["role"] == "assistant":
        cut -= 1
    return messages[:cut]


def _prompt_text(record: Mapping[str, Any]) -> str:
    return "\n".join(f"{role}: {content}" for role, content in _normalised_messages(_prompt_of(record)))


def _hash_fraction(text: str) -> float:
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest(), 16) / 2**256


def split_by_hash(
    records: Iterable[Record],
    heldout_fraction: float,
    seed_salt: str = "",
) -> tuple[list[Record], list[Record]]:
    """Split into (train, heldout) by a hash of the normalised prompt text plus ``seed_salt``.

    Every pair of one prompt lands on the same side, and a record keeps its side when other
    records are added or removed.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be within [0, 1], not {heldout_fraction!r}")
    train: list[Record] = []
    heldout: list[Record] = []
    for record in records:
        side = heldout if is_heldout(record, heldout_fraction, seed_salt) else train
        side.append(record)
    return train, heldout


def is_heldout(record: Mapping[str, Any], heldout_fraction: float, seed_salt: str = "") -> bool:
    """The side :func:`split_by_hash` puts one record on (True: held out), for streaming splits."""
    return _hash_fraction(_prompt_text(record) + seed_salt) < heldout_fraction


def _jsonl_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def fingerprint(records: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 hex digest of the records as canonical JSON lines (equals write_jsonl's file hash)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(_jsonl_line(record).encode("utf-8"))
    return digest.hexdigest()


def write_jsonl(records: Iterable[Mapping[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write canonical JSON lines atomically (temporary file in the same folder, then rename)."""
    with JsonlWriter(path) as writer:
        for record in records:
            writer.write(record)


class JsonlWriter:
    """Stream canonical JSON lines to a temporary file; on a clean exit fsync and rename it into place.

    ``count`` and ``fingerprint`` (SHA-256 of the bytes, equal to :func:`fingerprint`) are kept as
    lines are written. An exception inside the ``with`` block removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.count = 0
        self._digest = hashlib.sha256()
        self._temporary: str | None = None
        self._stream: io.BufferedWriter | None = None

    def __enter__(self) -> JsonlWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, self._temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        self._stream = os.fdopen(handle, "wb", buffering=1 << 20)
        return self

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record as a canonical JSON line."""
        assert self._stream is not None, "JsonlWriter used outside its with-block"
        line = _jsonl_line(record).encode("utf-8")
        self._digest.update(line)
        self._stream.write(line)
        self.count += 1

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex digest of what was written so far."""
        return self._digest.hexdigest()

    def __exit__(self, exc_type: Any, exc: Any, traceback: Any) -> None:
        assert self._stream is not None and self._temporary is not None
        try:
            if exc_type is None:
                self._stream.flush()
                os.fsync(self._stream.fileno())
            self._stream.close()
            if exc_type is None:
                os.chmod(self._temporary, 0o644)
                os.replace(self._temporary, self.path)
        finally:
            if os.path.exists(self._temporary):
                os.unlink(self._temporary)
