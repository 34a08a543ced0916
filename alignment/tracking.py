"""The small logging protocol stages report through, so they run (and are tested) without MLflow."""

from __future__ import annotations

from typing import Protocol


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
