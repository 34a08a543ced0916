"""Held-out split by prompt hash, record fingerprints and atomic canonical JSON Lines output."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from alignment.data.errors import Message, Record
from alignment.data.fields import _normalised_messages


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


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a canonical JSON Lines file this package wrote (no validation: use the loaders for
    users' files)."""
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
