"""Prefect tasks of the evaluation side: held-out metrics and contamination, lm-eval benchmarks of policy and
reference, the judged comparison, and the run's HTML report. Each binds an evaluation/ function to its MLflow
child run; the logic lives in evaluation/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from alignment import stages
from alignment.config import PipelineConfig
from alignment.records import ModelRef, PreparedData, TrainOutput
from evaluation.benchmarks import benchmark_deltas, benchmark_metrics, main_metrics, task_metrics
from evaluation.plots import plot_benchmark_deltas, plot_length_view, plot_verdicts
from evaluation.report import render_pipeline_report, write_report
from evaluation.stages import (
    Comparison,
    benchmark_model,
    compare_with_reference,
    contamination_report,
    heldout_preference_metrics,
)
from tasks.background import submit
from tasks.stages import flatten
from tasks.summary import write_json_atomic
from tasks.timing import compute
from tasks.tracking import RunContext, stage_run

TABLE_COLUMNS = ("prompt", "reference", "policy", "verdict")


class Heldout(BaseModel):
    metrics: dict[str, float]  # eval/...: implicit reward accuracy and margins of policy vs reference
    contamination: dict[str, float]  # eval set -> share of items sharing an n-gram with training prompts


class Benchmarks(BaseModel):
    policy: dict[str, Any]  # lm-eval results, JSON-safe (evaluation.benchmarks.run_benchmarks)
    reference: dict[str, Any]
    main: dict[str, dict[str, float]]  # task -> {policy, reference, delta} of its main metric

    def summary(self) -> dict[str, Any]:
        """Per-task metrics of both models and the main-metric deltas (the run summary's `benchmarks`)."""
        return {"policy": task_metrics(self.policy), "reference": task_metrics(self.reference), "main": self.main}

    def pairs(self) -> dict[str, tuple[float, float]]:
        return {task: (m["policy"], m["reference"]) for task, m in self.main.items()}


@task(name="evaluate-heldout", cache_policy=NO_CACHE)
def evaluate_task(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef, reference: ModelRef,
                  ctx: RunContext) -> Heldout:
    with stage_run(ctx, "evaluate", {"dpo.beta": cfg.dpo.beta, "eval.contamination_ngram":
                                     cfg.eval.contamination_ngram}) as run:
        with compute("evaluate"):
            metrics = heldout_preference_metrics(cfg, prepared, policy, reference)
            shares = contamination_report(cfg, prepared)
        run.log_metrics(metrics)
        run.log_metrics({f"contamination/{name}": share for name, share in shares.items()})
    return Heldout(metrics=metrics, contamination=shares)


def cached_benchmark(cfg: PipelineConfig, ref: ModelRef, ctx: RunContext) -> dict[str, Any]:
    """lm-eval results of one model, kept per (model fingerprint, benchmark settings): the reference (the SFT
    model) is benchmarked once for every method and beta trained from it."""
    key = stages.stage_key("benchmarks", ref.fingerprint, cfg.eval.benchmarks.model_dump(), cfg.run.seed)
    path = Path(ctx.output_dir) / "benchmarks" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    with compute("benchmarks"):
        results = benchmark_model(cfg, ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, results)
    return results


@task(name="headline-benchmarks", cache_policy=NO_CACHE, log_prints=False)  # log_prints: see benchmarks_task
def headline_benchmarks(cfg: PipelineConfig, models: list[ModelRef], ctx: RunContext) -> list[dict[str, float]]:
    """Each model's headline value per benchmark task (cached_benchmark: a model already benchmarked, or about to
    be by benchmarks_task, costs nothing twice)."""
    return [main_metrics(cached_benchmark(cfg, model, ctx)) for model in models]


# log_prints off: dill (under datasets, in lm-eval) finds a function's globals by capturing what dis.dis
# prints; Prefect's print-to-log patch would steal that output (and flood the log with bytecode).
@task(name="benchmarks", cache_policy=NO_CACHE, log_prints=False)
def benchmarks_task(cfg: PipelineConfig, policy: ModelRef, reference: ModelRef, ctx: RunContext) -> Benchmarks:
    """lm-eval on policy and reference: lm_eval/<task>/<metric> (policy), lm_eval_reference/... and
    lm_eval_delta/... (policy - reference), both results JSONs and a delta plot as artifacts."""
    with stage_run(ctx, "benchmarks", flatten("eval.benchmarks", cfg.eval.benchmarks.model_dump())) as run:
        results = {"policy": cached_benchmark(cfg, policy, ctx), "reference": cached_benchmark(cfg, reference, ctx)}
        flat = {role: benchmark_metrics(r) for role, r in results.items()}
        run.log_metrics(flat["policy"])
        run.log_metrics({k.replace("lm_eval/", "lm_eval_reference/", 1): v for k, v in flat["reference"].items()})
        run.log_metrics(benchmark_deltas(flat["policy"], flat["reference"]))
        heads = {role: main_metrics(r) for role, r in results.items()}
        main = {task: {"policy": heads["policy"][task], "reference": heads["reference"][task],
                       "delta": heads["policy"][task] - heads["reference"][task]}
                for task in heads["policy"] if task in heads["reference"]}
        out = Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id
        out.mkdir(parents=True, exist_ok=True)
        for role, r in results.items():
            (out / f"lm_eval_{role}.json").write_text(json.dumps(r, indent=1))
            run.log_artifact(out / f"lm_eval_{role}.json", "lm_eval")
        with compute("benchmarks"):
            png = plot_benchmark_deltas(heads["policy"], heads["reference"], out / "benchmark_deltas.png")
        if png:
            run.log_artifact(png, "plots")
    return Benchmarks(policy=results["policy"], reference=results["reference"], main=main)


@task(name="compare-with-reference", cache_policy=NO_CACHE)
def compare_task(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef, reference: ModelRef,
                 ctx: RunContext) -> Comparison:
    with stage_run(ctx, "compare", flatten("eval", cfg.eval.model_dump(exclude={"benchmarks"}))) as run:
        with compute("compare"):
            result = compare_with_reference(cfg, prepared, policy, reference)
        run.log_metrics(result.metrics)
        out = Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "side_by_side.json").write_text(json.dumps(result.table, indent=1))
        run.log_artifact(out / "side_by_side.json", "comparison")
        table = {k: [r[k] for r in result.table] for k in TABLE_COLUMNS}
        run.submit(lambda run_id: run.client.log_table(run_id, data=table,
                                                       artifact_file="comparison/side_by_side_table.json"))
        with compute("compare"):
            verdicts_png = plot_verdicts(result.metrics, out / "verdicts.png")
            lc = plot_length_view(length_view(result.metrics), out / "length_view.png")
        run.log_artifact(verdicts_png, "plots")
        if lc:
            run.log_artifact(lc, "plots")
        create_table_artifact(table=[{k: r[k] for k in TABLE_COLUMNS} for r in result.table], key="side-by-side",
                              description=verdict_line(result.metrics))
    return result


def quality_summary(metrics: dict[str, float]) -> dict[str, Any] | None:
    """The comparison's quality/... metrics and KL estimate for the run summary and report: {"policy": {...},
    "reference": {...}, "length_ratio", "kl", and the gains}; None when there are none."""
    out: dict[str, Any] = {"policy": {}, "reference": {}}
    for key, value in metrics.items():
        if key.startswith(("quality/policy/", "quality/reference/")):
            _, role, name = key.split("/", 2)
            out[role][name] = value
        elif key.startswith("quality/"):
            out[key.removeprefix("quality/")] = value
    if "compare/kl" in metrics:
        out["kl"] = metrics["compare/kl"]
    return out if out["policy"] or out["reference"] else None


def length_view(metrics: dict[str, float]) -> dict[str, float]:
    """The length-controlled part of the comparison metrics, without the compare/ prefix."""
    return {k.removeprefix("compare/"): v for k, v in metrics.items()
            if k.startswith(("compare/length/", "compare/lc_"))}


def verdict_line(m: dict[str, float]) -> str:
    errors = int(m.get("compare/errors", 0))
    return (f"Policy vs reference on held-out prompts: win rate {m['compare/win_rate']:.3f} "
            f"(95% CI {m['compare/win_rate_ci_low']:.3f}-{m['compare/win_rate_ci_high']:.3f}); "
            f"{int(m['compare/wins'])} wins / {int(m['compare/ties'])} ties / {int(m['compare/losses'])} losses"
            + (f", {errors} pairs the judge could not decide (retried, then counted)" if errors else ""))


def report_images(ctx: RunContext, trained: dict[str, TrainOutput]) -> dict[str, Path]:
    """The PNGs the stages wrote for this run, titled, in pipeline order (a stage trained on a remote pool
    keeps its plots in MLflow only)."""
    images: dict[str, Path] = {}
    for stage, out in trained.items():
        folder = Path(out.model.path).parent
        for title, name in ((f"{stage.upper()} training", "curves.png"),
                            (f"{stage.upper()} implicit rewards", "reward_margins.png")):
            if (folder / name).is_file():
                images[title] = folder / name
    run_dir = Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id
    for title, name in (("Win / tie / loss", "verdicts.png"), ("Length-controlled view", "length_view.png"),
                        ("Benchmarks: policy vs reference", "benchmark_deltas.png"),
                        ("On-policy rounds: compliance, capability, distance", "rounds.png")):
        if (run_dir / name).is_file():
            images[title] = run_dir / name
    return images


def publish_report(cfg: PipelineConfig, ctx: RunContext, summary_path: Path, prepared: PreparedData,
                   trained: dict[str, TrainOutput]) -> Path:
    """Render the run's self-contained HTML report, log it to the parent MLflow run and link it from a
    Prefect markdown artifact."""
    summary = json.loads(summary_path.read_text())
    table_path = Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id / "side_by_side.json"
    side = json.loads(table_path.read_text()) if table_path.is_file() else None
    with compute("report"):
        html = render_pipeline_report(summary, config=cfg.model_dump(mode="json"), data_report=prepared.report,
                                      images=report_images(ctx, trained), side_by_side=side)
        path = write_report(html, Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id / "report.html")
    submit(MlflowClient(ctx.tracking_uri).log_artifact, ctx.parent_run_id, str(path), "report")
    link = report_link(ctx)
    create_markdown_artifact(markdown=f"## alignflow report\n\n[Open the HTML report]({link}) "
                                      f"(MLflow run `{ctx.parent_run_id}`, artifact `report/report.html`).",
                             key="pipeline-report", description="Self-contained HTML report of the run")
    return path


def report_link(ctx: RunContext) -> str:
    """Where a person opens the report: the MLflow UI's artifact view when tracking goes to a server."""
    if ctx.tracking_uri.startswith(("http://", "https://")):
        return (f"{ctx.tracking_uri.rstrip('/')}/#/experiments/{ctx.experiment_id}/runs/{ctx.parent_run_id}"
                f"/artifacts/report/report.html")
    return (Path(ctx.output_dir) / "evaluation" / ctx.parent_run_id / "report.html").as_uri()
