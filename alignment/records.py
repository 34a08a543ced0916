"""The small records stages hand each other: paths and fingerprints, never large objects, so a stage can run
in another process (alignment/worker.py) or on another machine (tasks/stages.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ProgressCallback = Callable[[int, int, dict[str, float]], None]  # (step, total steps, latest metrics)


class PreparedData(BaseModel):
    dir: str  # holds sft.jsonl, train.jsonl, heldout.jsonl (canonical records) and report.json
    fingerprint: str
    counts: dict[str, int]
    report: dict[str, Any]

    def path(self, split: str) -> Path:
        return Path(self.dir) / f"{split}.jsonl"


class ModelRef(BaseModel):
    path: str  # hub id or local directory
    fingerprint: str
    source: dict[str, str] | None = None  # a converted GGUF file's record (alignment/models/source.py)


class TrainOutput(BaseModel):
    model: ModelRef
    method: str
    steps: int
    resumed_from_step: int
    final_metrics: dict[str, float]
    seconds: float
    tokens: int
    runtime: dict[str, str] = {}  # the stage's runtime plan as MLflow params (alignment/kernels/runtime_plan.py)
    reference: ModelRef | None = None  # the model a method with a reference (DPO, KTO) was held to
