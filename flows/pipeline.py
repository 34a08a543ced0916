"""The alignment pipeline as a Prefect flow: it only sequences the stage tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow

from alignment.config import PipelineConfig
from alignment.runtime import setup_runtime
from tasks.registry import register_task
from tasks.stages import build_base, compare_task, evaluate_task, prepare, train_preference, train_sft
from tasks.summary import publish_summary, write_summary
from tasks.tracking import finish_run, stage_run_ids, start_pipeline_run


@flow(name="alignment-pipeline", log_prints=True)
def alignment_pipeline(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Prepare data -> SFT -> DPO or ORPO -> held-out evaluation -> comparison with the reference ->
    registration. Returns the summary (also written to <output_dir>/summary.json)."""
    setup_runtime(config.run.seed, config.run.torch_threads)
    ctx = start_pipeline_run(config)
    ok = False
    try:
        prepared = prepare(config, ctx)
        base = build_base(config, prepared, ctx)
        sft = train_sft(config, prepared, base, ctx) if config.sft.enabled else None
        policy = train_preference(config, prepared, base, sft, ctx)
        reference = sft.model if sft else base
        heldout = evaluate_task(config, prepared, policy.model, reference, ctx)
        comparison = compare_task(config, prepared, policy.model, reference, ctx)
        trained = {"sft": sft, config.preference.method: policy} if sft else {config.preference.method: policy}
        final_losses = {name: out.final_metrics.get("loss", float("nan")) for name, out in trained.items()}
        registration = register_task(config, policy, comparison.metrics, final_losses, ctx)
        path = write_summary(ctx, stage_run_ids(ctx), trained, {**heldout, **comparison.metrics}, registration,
                             config.preference.method)
        publish_summary(path)
        ok = True
        return {"summary_path": str(path), "parent_run_id": ctx.parent_run_id,
                "registered_version": registration.version, "aliases": registration.aliases}
    finally:
        finish_run(ctx, ctx.parent_run_id, ok)
