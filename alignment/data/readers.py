"""Readers: local files and folders (JSON Lines, JSON, CSV, parquet), Hugging Face Hub data sets and s3://
URIs, each yielding ``(row_index, row or DataError)`` per file."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from alignment.data.errors import (
    BAD_ENCODING,
    BAD_FILE,
    BAD_JSON,
    MISSING_FIELD,
    WRONG_TYPE,
    DataError,
    RowItem,
    _type_name,
)
from storage import s3

SUPPORTED_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
KNOWN_COLUMNS = ("prompt", "chosen", "rejected", "messages", "completion", "system")
PARQUET_BATCH_ROWS = 1024

_SURROGATE = re.compile("[\ud800-\udfff]")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_BOM = b"\xef\xbb\xbf"


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
    except UnicodeDecodeError as exc:  # pyarrow decodes column names and metadata without catching this
        raise DataError(BAD_FILE, f"cannot read parquet: its schema is not valid UTF-8 ({exc.reason} at byte "
                                  f"{exc.start})", file=name) from exc


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
    """Download an s3:// object or every supported object under a prefix; read the local copies. A storage
    failure is a ``bad_file`` DataError naming the URI."""
    try:
        fetched = s3.fetch(source, cache_dir, suffixes=SUPPORTED_SUFFIXES)
    except s3.StorageError as err:
        raise DataError(BAD_FILE, err.detail, file=err.file) from err
    for name, local in fetched:
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
