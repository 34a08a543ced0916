"""How a stage runs on this machine: its device, its runtime plan (alignment/kernels/runtime_plan.py) and the
allocator scope it trains in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch

from alignment.config import PipelineConfig
from alignment.kernels.host_memory import large_blocks_mapped
from alignment.kernels.runtime_plan import RuntimePlan, plan_for


@contextmanager
def training_scope(cfg: PipelineConfig, stage: Literal["sft", "preference"]) -> Iterator[None]:
    """A training stage runs, from before it loads a model, under its runtime plan's mmap threshold
    (training.cpu_mmap_threshold_mib: so the reference pass's and the load's freed memory does not sit in the heap
    for the training steps to fragment; CPU only, alignment/kernels/host_memory.py). The plan's module settings are
    applied to each model the stage sets up (`stage_plan`, alignment/kernels/runtime_plan.py), not process-wide."""
    device = stage_device()
    with large_blocks_mapped(stage_plan(cfg, stage, device).mmap_threshold_mib, device):
        yield


def stage_device() -> torch.device:
    """Where a training stage trains in this process (as accelerate picks it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage_plan(cfg: PipelineConfig, stage: Literal["sft", "preference"],
               device: torch.device | str | None = None) -> RuntimePlan:
    """The runtime plan of a stage's models on `device` (the stage's own by default; a model's for a pass that
    runs it where it was loaded, such as the reference pass)."""
    return plan_for(cfg.training, stage_device() if device is None else device, stage)


def model_device(model: torch.nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")
