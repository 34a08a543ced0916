"""The run's machine-readable summary (JSON), written last."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alignment.stages import TrainOutput
from tasks.registry import Registration
from tasks.tracking import RunContext

HEADLINE = ("compare/win_rate", "compare/win_rate_ci_low", "compare/win_rate_ci_high",
            "compare/policy_mean_score", "compare/reference_mean_score", "eval/rewards/accuracies",
            "eval/rewards/margins")


def write_summary(ctx: RunContext, stage_runs: dict[str, str], trained: dict[str, TrainOutput],
                  eval_metrics: dict[str, float], registration: Registration, method: str) -> Path:
    metrics: dict[str, Any] = {k: eval_metrics[k] for k in HEADLINE if k in eval_metrics}
    for stage, out in trained.items():
        metrics[f"{stage}/final_loss"] = out.final_metrics.get("loss")
        metrics[f"{stage}/steps"] = out.steps
    summary = {
        "tracking_uri": ctx.tracking_uri,
        "experiment": ctx.experiment_name,
        "experiment_id": ctx.experiment_id,
        "parent_run_id": ctx.parent_run_id,
        "stage_runs": stage_runs,
        "method": method,
        "metrics": metrics,
        "gates": registration.gates,
        "registered_model": {"name": registration.name, "version": registration.version,
                             "aliases": registration.aliases, "model_uri": registration.model_uri},
        "output_dir": ctx.output_dir,
    }
    path = Path(ctx.output_dir) / "summary.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)
    return path
