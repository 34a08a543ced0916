"""Where a pipeline run's wall time goes: the stages' own work versus orchestration and tracking.

`compute` wraps each call into alignment/ and evaluation/ (data preparation, model building, training,
evaluation, benchmarks, plots, the report); everything else in the flow — Prefect task runs and caching,
MLflow runs, params, artifact uploads, the registry, Prefect artifacts — is overhead. Work that a compute call
hands back to orchestration while it runs (the training progress reports to the Prefect API) is timed with
`orchestration` and subtracted, so the figure cannot hide an HTTP call on the hot path.

The run's `Timing` lives in a context variable set by the flow; with none set (a task called on its own, the
remote training flow) the timers do nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass
class Timing:
    started: float = field(default_factory=time.perf_counter)
    compute: dict[str, float] = field(default_factory=dict)  # stage -> seconds of its own work
    inside: float = 0.0  # orchestration done from inside compute calls (subtracted from compute)
    steps: dict[str, float] = field(default_factory=dict)  # flow step -> wall seconds (compute + overhead)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.compute[stage] = self.compute.get(stage, 0.0) + seconds

    def add_inside(self, seconds: float) -> None:
        with self._lock:
            self.inside += seconds

    def add_step(self, name: str, seconds: float) -> None:
        with self._lock:
            self.steps[name] = self.steps.get(name, 0.0) + seconds

    def summary(self) -> dict[str, float | dict[str, float]]:
        """wall_s (so far), compute_s, overhead_s = wall - compute, overhead_fraction = overhead / wall."""
        wall = time.perf_counter() - self.started
        compute = max(0.0, sum(self.compute.values()) - self.inside)
        overhead = max(0.0, wall - compute)
        return {"wall_s": wall, "compute_s": compute, "overhead_s": overhead,
                "overhead_fraction": overhead / wall if wall > 0 else 0.0,
                "orchestration_inside_compute_s": self.inside,
                "compute_by_stage_s": dict(self.compute), "wall_by_step_s": dict(self.steps)}


_current: ContextVar[Timing | None] = ContextVar("alignflow_timing", default=None)


@contextmanager
def timed_run() -> Iterator[Timing]:
    """Time one pipeline run: the flow's body runs inside this."""
    timing = Timing()
    token = _current.set(timing)
    try:
        yield timing
    finally:
        _current.reset(token)


def current() -> Timing | None:
    return _current.get()


@contextmanager
def compute(stage: str) -> Iterator[None]:
    """A stage's own work (a call into alignment/ or evaluation/)."""
    timing = _current.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if timing is not None:
            timing.add(stage, time.perf_counter() - started)


@contextmanager
def step(name: str) -> Iterator[None]:
    """One step of the flow (a task call, with its tracking), for the per-step wall times."""
    timing = _current.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if timing is not None:
            timing.add_step(name, time.perf_counter() - started)


@contextmanager
def orchestration() -> Iterator[None]:
    """Orchestration or tracking done from inside a `compute` block (e.g. a progress report)."""
    timing = _current.get()
    started = time.perf_counter()
    try:
        yield
    finally:
        if timing is not None:
            timing.add_inside(time.perf_counter() - started)
