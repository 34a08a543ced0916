"""The small logging protocol stages report through, so they run (and are tested) without MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol


class MetricsLogger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...


class InMemoryLogger:
    """Keeps every logged metric; tests read curves back from it."""

    def __init__(self) -> None:
        self.records: list[tuple[int | None, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))

    def curve(self, name: str) -> list[tuple[int | None, float]]:
        return [(step, m[name]) for step, m in self.records if name in m]


class NullLogger:
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        return None


class JsonlMetricsLogger:
    """Appends one JSON line per call to a file, flushed at once, so another process can tail it.

    Lines: `{"kind": "metrics", "step": s, "metrics": {...}}` from `log_metrics`, and
    `{"kind": "progress", "step": s, "total": t}` from `log_progress` (an `on_log` callback). The parent of a
    multi-process training run forwards them to its own logger (alignment/training/distributed.py)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self._append({"kind": "metrics", "step": step, "metrics": {k: float(v) for k, v in metrics.items()}})

    def log_progress(self, step: int, total: int, metrics: dict[str, float] | None = None) -> None:
        self._append({"kind": "progress", "step": step, "total": total})

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"  # a reader leaves a partly written last line for its next read
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()


def read_new_records(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete JSONL records appended to `path` after byte `offset`, and the offset after the last one read
    (a line still being written is left for the next call)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return records, offset + end
