"""Prefect tasks: thin wrappers binding each stage function to its MLflow child run and output folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE

from alignment import stages
from alignment.config import PipelineConfig
from alignment.stages import ModelRef, PreparedData, TrainOutput
from evaluation.plots import plot_curves, plot_verdicts
from evaluation.stages import Comparison, compare_with_reference, heldout_preference_metrics
from tasks.tracking import RunContext, stage_run

TRAIN_CURVES = ["loss", "rewards/margins", "rewards/accuracies", "learning_rate", "grad_norm", "nll_loss"]


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"prefix.optim.lr": 1}, for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(f"{prefix}.{key}", value))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


def stage_dir(ctx: RunContext, name: str, *key_parts: Any) -> Path:
    """Stage output folder keyed by content: a re-run with the same inputs resumes in the same folder, a
    changed config or input never resumes someone else's checkpoints."""
    return Path(ctx.output_dir) / f"{name}-{stages.stage_key(*key_parts)}"


@task(name="prepare-data", cache_policy=NO_CACHE)
def prepare_data_task(cfg: PipelineConfig, ctx: RunContext) -> PreparedData:
    with stage_run(ctx, "prepare_data", flatten("data", cfg.data.model_dump())) as run:
        prepared = stages.prepare_data(cfg, stage_dir(ctx, "data", cfg.data.model_dump(), cfg.run.seed))
        run.log_metrics({f"rows/{k}": float(v) for k, v in prepared.counts.items()})
        dropped = {f"dropped/{split}": float(r["rows_dropped"]) for split, r in prepared.report["drops"].items()}
        run.log_metrics(dropped)
        run.set_tags({"alignflow.data_fingerprint": prepared.fingerprint})
        run.log_artifact(Path(prepared.dir) / "report.json", "data")
        for split in ("train", "heldout"):
            run.log_artifact(prepared.path(split), "data")
    return prepared


@task(name="build-base-model", cache_policy=NO_CACHE)
def build_model_task(cfg: PipelineConfig, prepared: PreparedData, ctx: RunContext) -> ModelRef:
    with stage_run(ctx, "base_model", flatten("model", cfg.model.model_dump())) as run:
        base = stages.build_base_model(cfg, prepared, stage_dir(ctx, "base", cfg.model.model_dump(),
                                                                 prepared.fingerprint, cfg.run.seed))
        run.set_tags({"alignflow.model_path": base.path, "alignflow.model_fingerprint": base.fingerprint})
    return base


def progress_reporter(title: str) -> Any:
    """A Prefect progress artifact updated as training logs (created lazily on the first report), and a log
    line at every tenth of the run."""
    state: dict[str, Any] = {"next_pct": 10.0}
    logger = get_run_logger()

    def report(step: int, total: int, metrics: dict[str, float]) -> None:
        pct = 100.0 * step / max(1, total)
        if "id" not in state:
            state["id"] = create_progress_artifact(progress=pct, description=title)
        else:
            update_progress_artifact(artifact_id=state["id"], progress=pct)
        if pct >= state["next_pct"] or step == total:
            logger.info("%s: step %d/%d loss %.4f (%.0f tokens/s)", title, step, total, metrics.get("loss", float("nan")),
                        metrics.get("tokens_per_sec", 0.0))
            state["next_pct"] = pct + 10.0

    return report


def log_training(run: Any, out: TrainOutput, name: str) -> None:
    run.log_metrics({"train_seconds": out.seconds, "train_tokens": float(out.tokens),
                     "resumed_from_step": float(out.resumed_from_step)})
    run.set_tags({"alignflow.model_fingerprint": out.model.fingerprint})
    png = plot_curves(run.logger.records, TRAIN_CURVES, f"{name} training", Path(out.model.path).parent / "curves.png")
    if png:
        run.log_artifact(png, "plots")


@task(name="sft", cache_policy=NO_CACHE)
def sft_task(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, ctx: RunContext) -> TrainOutput:
    params = flatten("sft", cfg.sft.model_dump())
    with stage_run(ctx, "sft", params) as run:
        out_dir = stage_dir(ctx, "sft", cfg.sft.model_dump(), cfg.training.model_dump(), cfg.data.max_prompt_tokens,
                            cfg.data.max_response_tokens, prepared.fingerprint, base.fingerprint, cfg.run.seed)
        out = stages.run_sft(cfg, prepared, base, out_dir, run.logger, progress_reporter("SFT training"))
        log_training(run, out, "SFT")
    return out


@task(name="preference", cache_policy=NO_CACHE)
def preference_task(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                    ctx: RunContext) -> TrainOutput:
    method = cfg.preference.method
    section = getattr(cfg, method)
    params = flatten(method, section.model_dump())
    with stage_run(ctx, method, params) as run:
        inputs = [prepared.fingerprint, base.fingerprint, sft.model.fingerprint if sft else None]
        out_dir = stage_dir(ctx, method, section.model_dump(), cfg.training.model_dump(), cfg.data.max_prompt_tokens,
                            cfg.data.max_response_tokens, inputs, cfg.run.seed)
        out = stages.run_preference(cfg, prepared, base, sft, out_dir, run.logger,
                                    progress_reporter(f"{method.upper()} training"))
        log_training(run, out, method.upper())
    return out


@task(name="evaluate-heldout", cache_policy=NO_CACHE)
def evaluate_task(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef, reference: ModelRef,
                  ctx: RunContext) -> dict[str, float]:
    with stage_run(ctx, "evaluate", {"dpo.beta": cfg.dpo.beta}) as run:
        metrics = heldout_preference_metrics(cfg, prepared, policy, reference)
        run.log_metrics(metrics)
    return metrics


@task(name="compare-with-reference", cache_policy=NO_CACHE)
def compare_task(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef, reference: ModelRef,
                 ctx: RunContext) -> Comparison:
    with stage_run(ctx, "compare", flatten("eval", cfg.eval.model_dump())) as run:
        result = compare_with_reference(cfg, prepared, policy, reference)
        run.log_metrics(result.metrics)
        out = Path(ctx.output_dir) / "compare"
        out.mkdir(parents=True, exist_ok=True)
        (out / "side_by_side.json").write_text(json.dumps(result.table, indent=1))
        run.log_artifact(out / "side_by_side.json", "comparison")
        MlflowClient(ctx.tracking_uri).log_table(
            run.run_id, data={k: [r[k] for r in result.table] for k in ("prompt", "reference", "policy", "verdict")},
            artifact_file="comparison/side_by_side_table.json")
        run.log_artifact(plot_verdicts(result.metrics, out / "verdicts.png"), "plots")
        create_markdown_artifact(markdown=side_by_side_markdown(result), key="side-by-side",
                                 description="Policy vs reference on held-out prompts")
    return result


def side_by_side_markdown(result: Comparison, limit: int = 20) -> str:
    m = result.metrics
    lines = [f"**win rate** {m['compare/win_rate']:.3f} "
             f"(95% CI {m['compare/win_rate_ci_low']:.3f}–{m['compare/win_rate_ci_high']:.3f}), "
             f"{int(m['compare/wins'])} wins / {int(m['compare/ties'])} ties / {int(m['compare/losses'])} losses",
             "", "| prompt | reference | policy | verdict |", "|---|---|---|---|"]
    for row in result.table[:limit]:
        cells = [row[k].replace("|", "\\|").replace("\n", " ") for k in ("prompt", "reference", "policy", "verdict")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
