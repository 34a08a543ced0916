"""The alignment pipeline as a Prefect flow: it only sequences the stage tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow

from alignment.config import PipelineConfig
from alignment.runtime import setup_runtime
from tasks.evaluation import benchmarks_task, compare_task, evaluate_task, length_view, publish_report
from tasks.locks import output_dir_lock
from tasks.registry import promotion_gates, register_task
from tasks.stages import build_base, prepare, train_preference, train_sft
from tasks.summary import add_to_summary, publish_summary, write_summary
from tasks.tracking import finish_run, stage_run_ids, start_pipeline_run


@flow(name="alignment-pipeline", log_prints=True)
def alignment_pipeline(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Prepare data -> SFT -> DPO or ORPO -> held-out evaluation -> comparison with the reference ->
    registration. Returns the summary (also written to <output_dir>/summary.json)."""
    setup_runtime(config.run.seed, config.run.torch_threads)
    with output_dir_lock(config.run.output_dir):
        return run_pipeline(config)


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    ctx = start_pipeline_run(config)
    ok = False
    try:
        prepared = prepare(config, ctx)
        base = build_base(config, prepared, ctx)
        sft = train_sft(config, prepared, base, ctx) if config.sft.enabled else None
        policy = train_preference(config, prepared, base, sft, ctx)
        reference = sft.model if sft else base
        heldout = evaluate_task(config, prepared, policy.model, reference, ctx)
        bench = benchmarks_task(config, policy.model, reference, ctx) if config.eval.benchmarks.enabled else None
        comparison = compare_task(config, prepared, policy.model, reference, ctx)
        trained = {"sft": sft, config.preference.method: policy} if sft else {config.preference.method: policy}
        final_losses = {name: out.final_metrics.get("loss", float("nan")) for name, out in trained.items()}
        gates = promotion_gates(config, comparison.metrics, heldout.metrics, final_losses,
                                bench.pairs() if bench else None, heldout.contamination)
        registration = register_task(config, policy, gates, ctx)
        evaluation = {
            "benchmarks": bench.summary() if bench else None,
            "contamination": heldout.contamination,
            "length_control": length_view(comparison.metrics),
            "judge": {"kind": config.eval.judge.kind, "errors": comparison.metrics.get("compare/errors", 0.0)},
        }
        path = write_summary(ctx, stage_run_ids(ctx), trained, {**heldout.metrics, **comparison.metrics},
                             registration, config.preference.method, evaluation)
        report = publish_report(config, ctx, path, prepared, trained)
        add_to_summary(path, {"report": str(report)})
        publish_summary(path)
        ok = True
        return {"summary_path": str(path), "report_path": str(report), "parent_run_id": ctx.parent_run_id,
                "registered_version": registration.version, "aliases": registration.aliases}
    finally:
        finish_run(ctx, ctx.parent_run_id, ok)
