"""The run's machine-readable summary (JSON), written last."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alignment.records import TrainOutput
from tasks.registry import Registration
from tasks.tracking import RunContext

HEADLINE = ("compare/win_rate", "compare/win_rate_ci_low", "compare/win_rate_ci_high", "compare/wins",
            "compare/ties", "compare/losses", "compare/errors", "compare/lc_win_rate",
            "compare/policy_mean_score", "compare/reference_mean_score", "eval/rewards/accuracies",
            "eval/rewards/margins", "quality/passed_and_answered_rate_gain", "quality/correct_rate_gain",
            "quality/length_ratio", "compare/kl")


def write_summary(ctx: RunContext, stage_runs: dict[str, str], trained: dict[str, TrainOutput],
                  eval_metrics: dict[str, float], registration: Registration, method: str,
                  evaluation: dict[str, Any] | None = None) -> Path:
    """`evaluation` adds the evaluation's structured results: benchmarks (lm-eval results of policy and
    reference and each task's main-metric delta), contamination per eval set, the length-controlled view and
    the judge."""
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
        "train_seconds": {stage: out.seconds for stage, out in trained.items()},  # wall time, not a result
        "registered_model": {"name": registration.name, "version": registration.version,
                             "aliases": registration.aliases, "model_uri": registration.model_uri,
                             "champion": registration.champion},
        "output_dir": ctx.output_dir,
        **(evaluation or {}),
    }
    path = Path(ctx.summary_dir or ctx.output_dir) / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary)
    return path


def add_to_summary(path: Path, values: dict[str, Any]) -> None:
    """Add keys to a written summary (atomically, like write_summary)."""
    write_json_atomic(path, {**json.loads(path.read_text()), **values})


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a per-process temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def run_link(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """A link to the run in the MLflow UI when tracking goes to a server; the bare id otherwise."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"[{run_id[:8]}]({tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id})"
    return f"`{run_id}`"


def summary_markdown(summary: dict[str, Any]) -> str:
    uri, exp = summary["tracking_uri"], summary["experiment_id"]
    reg = summary["registered_model"]
    lines = [f"## alignflow pipeline ({summary['method']})", "",
             f"MLflow parent run: {run_link(uri, exp, summary['parent_run_id'])} (tracking `{uri}`)", "",
             "| stage | MLflow run |", "|---|---|"]
    lines += [f"| {stage} | {run_link(uri, exp, rid)} |" for stage, rid in summary["stage_runs"].items()]
    lines += ["", "| metric | value |", "|---|---|"]
    for name, value in summary["metrics"].items():
        lines.append(f"| {name} | {value:.4g} |" if isinstance(value, float) else f"| {name} | {value} |")
    lines += ["", "| gate | value | threshold | passed |", "|---|---|---|---|"]
    lines += [f"| {g['name']} | {g['value']:.4g} | {g['threshold']:.4g} | {'yes' if g['passed'] else 'no'} |"
              for g in summary["gates"]]
    lines += ["", f"Registered **{reg['name']}** version {reg['version']}, aliases: {', '.join(reg['aliases']) or '—'}"]
    return "\n".join(lines)


def publish_summary(path: Path) -> None:
    """The run's summary as a Prefect markdown artifact (links to the MLflow runs, headline metrics, gates)."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(markdown=summary_markdown(json.loads(path.read_text())), key="pipeline-summary",
                             description="alignflow run summary")
