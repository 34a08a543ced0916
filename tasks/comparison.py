"""The method comparison's rows, its choice of the best variant, and its report in MLflow and Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from alignment.config import PipelineConfig
from evaluation.plots import plot_method_comparison
from evaluation.report import render_comparison_report, write_report
from tasks.tracking import ensure_experiment, resolve_tracking

ROW_COLUMNS = ("variant", "method", "win_rate", "win_rate_ci_low", "win_rate_ci_high", "reward_accuracy",
               "lc_win_rate", "gates_passed", "train_seconds", "parent_run_id", "best")


class Variant(BaseModel):
    name: str
    config: PipelineConfig


def variant_row(variant: Variant, summary: dict[str, Any]) -> dict[str, Any]:
    """One report row from a variant's run summary."""
    m, method = summary["metrics"], variant.config.preference.method
    bench = summary.get("benchmarks") or {}
    params = {"beta": variant.config.dpo.beta} if method == "dpo" else {"lam": variant.config.orpo.lam}
    params["lr"] = getattr(variant.config, method).optim.learning_rate
    return {
        "variant": variant.name, "method": method, "params": params,
        "win_rate": m.get("compare/win_rate"), "win_rate_ci_low": m.get("compare/win_rate_ci_low"),
        "win_rate_ci_high": m.get("compare/win_rate_ci_high"), "reward_accuracy": m.get("eval/rewards/accuracies"),
        "lc_win_rate": m.get("compare/lc_win_rate"),
        "benchmarks": {task: v["policy"] for task, v in (bench.get("main") or {}).items()},
        "gates_passed": all(g["passed"] for g in summary["gates"]),
        "gates_failed": [g["name"] for g in summary["gates"] if not g["passed"]],
        "train_seconds": summary.get("train_seconds", {}).get(method), "parent_run_id": summary["parent_run_id"],
        "report": summary.get("report"), "best": False,
    }


def best_variant(rows: list[dict[str, Any]]) -> str | None:
    """The variant to promote: one that passes every gate before one that doesn't, then the highest lower
    bound of the win rate's interval (the conservative estimate), then the highest win rate."""
    if not rows:
        return None
    best = max(rows, key=lambda r: (r["gates_passed"], r["win_rate_ci_low"] or 0.0, r["win_rate"] or 0.0))
    return best["variant"]


def publish_comparison(config: PipelineConfig, rows: list[dict[str, Any]], best: str | None) -> Path:
    """The comparison as its own MLflow run (table, plot, HTML report; tags naming every variant's run), the
    report on disk under <output_dir>/compare/<run id>/, and a Prefect markdown artifact with the table."""
    uri, artifacts = resolve_tracking(config)
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, config.tracking.experiment, artifacts)
    run = client.create_run(exp_id, run_name="compare-methods", tags={
        "alignflow.stage": "compare-methods", "alignflow.best_variant": str(best),
        **{f"alignflow.variant.{r['variant']}": r["parent_run_id"] for r in rows}})
    run_id = run.info.run_id
    ok = False
    try:
        out = Path(config.run.output_dir).resolve() / "compare" / run_id
        out.mkdir(parents=True, exist_ok=True)
        plot = plot_method_comparison(rows, out / "methods.png")
        title = f"alignflow: {' vs '.join(r['variant'] for r in rows)}"
        html = render_comparison_report(rows, title=title, images={"Win rate and reward accuracy": plot} if plot
                                        else None, tracking_uri=uri, experiment_id=exp_id)
        report = write_report(html, out / "report.html")
        (out / "rows.json").write_text(json.dumps(rows, indent=1))
        client.log_artifact(run_id, str(report), "report")
        if plot:
            client.log_artifact(run_id, str(plot), "plots")
        client.log_table(run_id, data={k: [str(r[k]) for r in rows] for k in ROW_COLUMNS},
                         artifact_file="comparison/variants.json")
        for r in rows:
            for key in ("win_rate", "win_rate_ci_low", "reward_accuracy", "lc_win_rate"):
                if isinstance(r[key], int | float):
                    client.log_metric(run_id, f"{r['variant']}/{key}", float(r[key]))
        create_markdown_artifact(markdown=comparison_markdown(rows, best, report), key="method-comparison",
                                 description="DPO vs ORPO comparison")
        ok = True
        return report
    finally:
        client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


def comparison_markdown(rows: list[dict[str, Any]], best: str | None, report: Path) -> str:
    lines = [f"Best variant: **{best}** (gates first, then the win rate's lower 95 % bound). Report: `{report}`",
             "", "| variant | win rate | 95% CI | reward acc. | gates |", "|---|---|---|---|---|"]
    for r in rows:
        fmt = lambda v: f"{v:.3f}" if isinstance(v, int | float) else "—"  # noqa: E731
        gates = "pass" if r["gates_passed"] else "fail: " + ", ".join(r["gates_failed"])
        lines.append(f"| {r['variant']}{' ★' if r['best'] else ''} | {fmt(r['win_rate'])} | "
                     f"{fmt(r['win_rate_ci_low'])}–{fmt(r['win_rate_ci_high'])} | {fmt(r['reward_accuracy'])} | "
                     f"{gates} |")
    return "\n".join(lines)
