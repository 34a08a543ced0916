"""The alignment pipeline as a Prefect flow: it only sequences the stage tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow

from alignment.config import PipelineConfig
from alignment.runtime import setup_runtime
from tasks.background import background_tracking, drain
from tasks.evaluation import (
    benchmarks_task,
    compare_task,
    evaluate_task,
    length_view,
    publish_report,
    quality_summary,
)
from tasks.locks import output_dir_lock
from tasks.registry import promotion_gates, register_task, start_policy_logging
from tasks.rounds import Round, heldout_score, iterate_rounds
from tasks.stages import build_base, onpolicy, prepare, train_preference, train_sft
from tasks.summary import add_to_summary, publish_summary, write_summary
from tasks.timing import step, timed_run
from tasks.tracking import finish_run, log_timing, stage_run_ids, start_pipeline_run


@flow(name="alignment-pipeline", log_prints=True)
def alignment_pipeline(config: PipelineConfig = PipelineConfig()) -> dict[str, Any]:  # noqa: B008
    """Prepare data -> SFT -> DPO or ORPO -> held-out evaluation -> comparison with the reference ->
    registration. Returns the summary (also written to <output_dir>/summary.json)."""
    setup_runtime(config.run.seed, config.run.torch_threads)
    with output_dir_lock(config.run.output_dir), timed_run(), background_tracking():
        return run_pipeline(config)


def run_pipeline(config: PipelineConfig) -> dict[str, Any]:
    with step("start"):
        ctx = start_pipeline_run(config)
    ok, pending, registration = False, None, None
    try:
        with step("prepare_data"):
            prepared = prepare(config, ctx)
        with step("base_model"):
            base = build_base(config, prepared, ctx)
        with step("sft"):
            sft = train_sft(config, prepared, base, ctx) if config.sft.enabled else None
        source, rounds = prepared, None
        if config.onpolicy.enabled:
            with step("onpolicy"):  # from here on, the data is the model's own answers, scored and paired
                prepared = onpolicy(config, prepared, base, sft, ctx)
        with step(config.preference.method):
            policy = train_preference(config, prepared, base, sft, ctx)
        if config.onpolicy.rounds > 1:  # later rounds sample from and train the previous round's policy
            first = Round(1, prepared, policy, start_score=heldout_score(prepared))
            kept, rounds = iterate_rounds(config, source, base, first, sft.model if sft else base, ctx)
            prepared, policy = kept.pairs, kept.policy
        with step("register"):  # the policy's model logging starts now, on the tracking thread
            pending = start_policy_logging(config, policy, ctx)
        reference = sft.model if sft else base
        with step("evaluate"):
            heldout = evaluate_task(config, prepared, policy.model, reference, ctx)
        with step("benchmarks"):
            bench = benchmarks_task(config, policy.model, reference, ctx) if config.eval.benchmarks.enabled else None
        with step("compare"):
            comparison = compare_task(config, prepared, policy.model, reference, ctx)
        trained = {"sft": sft, config.preference.method: policy} if sft else {config.preference.method: policy}
        final_losses = {name: out.final_metrics.get("loss", float("nan")) for name, out in trained.items()}
        gates = promotion_gates(config, comparison.metrics, heldout.metrics, final_losses,
                                bench.pairs() if bench else None, heldout.contamination)
        with step("register"):
            registration = register_task(config, policy, gates, ctx, pending, reference_model=reference.path)
        evaluation = {
            "benchmarks": bench.summary() if bench else None,
            "contamination": heldout.contamination,
            "length_control": length_view(comparison.metrics),
            "judge": {"kind": config.eval.judge.kind, "errors": comparison.metrics.get("compare/errors", 0.0)},
            "reference_model": reference.path,  # what the policy was compared with: loadable by from_pretrained
            "pass_rates": {k.removeprefix("compare/"): v for k, v in comparison.metrics.items()
                           if k.startswith("compare/pass_rate")} or None,
            "quality": quality_summary(comparison.metrics),
            "rounds": [r.row() for r in rounds] if rounds else None,
        }
        with step("summary"):
            path = write_summary(ctx, stage_run_ids(ctx), trained, {**heldout.metrics, **comparison.metrics},
                                 registration, config.preference.method, evaluation)
        with step("report"):
            report = publish_report(config, ctx, path, prepared, trained)
        with step("summary"):
            publish_summary(path)
            add_to_summary(path, {"report": str(report), "timing": log_timing(ctx)})
            drain()  # the report's upload and the last run ends: a failure fails the run
        ok = True
        return {"summary_path": str(path), "report_path": str(report), "parent_run_id": ctx.parent_run_id,
                "registered_version": registration.version, "aliases": registration.aliases}
    finally:
        if not ok:
            drain(raise_errors=False)  # let queued writes land; the error that stopped the run is the one raised
            if pending is not None and registration is None:  # the register run opened early, never reached
                finish_run(ctx, pending.run.run_id, False)
        finish_run(ctx, ctx.parent_run_id, ok)
