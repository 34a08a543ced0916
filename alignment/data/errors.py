"""The vocabulary every data module shares: record types, reason codes, DataError and DropReport."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

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

MAX_STRICT_ERRORS = 10
MAX_EXAMPLES = 3


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



def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__
