"""Loading with drop accounting: stream a source's rows through detection and parsing, de-duplicate, count
what is dropped (or raise the first strict-mode errors)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alignment.data.errors import (
    DUPLICATE,
    FILTER_REASONS,
    MAX_STRICT_ERRORS,
    DataError,
    DataValidationError,
    DropReport,
    Policy,
    Record,
    RowItem,
)
from alignment.data.fields import _normalised_messages
from alignment.data.formats import (
    AUTO,
    PREFERENCE_FORMATS,
    SFT_FORMATS,
    UNPAIRED_FORMATS,
    _check_options,
    _detect_in_family,
    canonicalize_preference,
    canonicalize_sft,
    canonicalize_unpaired,
)
from alignment.data.readers import _open_source


def _record_key(record: Mapping[str, Any]) -> bytes:
    """Hash of a record's normalised text (lowercase, collapsed whitespace), and an unpaired example's label."""
    if "completion" in record:
        fields: tuple[str, ...] = ("prompt", "completion")
    else:
        fields = ("prompt", "chosen", "rejected") if "prompt" in record else ("messages",)
    payload = json.dumps([*(_normalised_messages(record[f]) for f in fields), record.get("label")],
                         ensure_ascii=False)
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


def iter_unpaired(
    source: str,
    *,
    policy: Policy = "strict",
    subset: str | None = None,
    split: str = "train",
    cache_dir: str | os.PathLike[str] | None = None,
    report: DropReport | None = None,
    max_rows: int | None = None,
) -> Iterator[Record]:
    """Stream canonical unpaired examples (`prompt`, `completion`, `label`: KTO's data; arena votes that judged
    both answers bad); see :func:`iter_preferences`."""
    return _iter_load(source, AUTO, policy, UNPAIRED_FORMATS, canonicalize_unpaired, subset, split, cache_dir,
                      report, max_rows)


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
