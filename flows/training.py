"""The training stages as their own flow, deployed on a training work pool (`alignment-training/<pool>`).

The pipeline calls it through `run_deployment` when `training.pool` is set, passing only small records
whose paths are s3:// URIs and the MLflow run context; the flow materialises its inputs, runs the stage
exactly as in process (same cache, same MLflow child run), publishes the trained model to S3 and writes
its result record to S3, where the pipeline reads it back.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from alignment.config import PipelineConfig
from alignment.records import ModelRef, PreparedData, TrainOutput
from alignment.runtime import setup_runtime
from storage.folders import materialize, put_json
from tasks.stages import publish_stage_output, train_preference, train_sft
from tasks.tracking import RunContext


@flow(name="alignment-training", log_prints=True)
def training_stage(stage: Literal["sft", "preference"], config: PipelineConfig, prepared: dict[str, Any],
                   base: dict[str, Any], sft: dict[str, Any] | None, ctx: dict[str, Any], result_uri: str) -> str:
    setup_runtime(config.run.seed, config.run.torch_threads)
    # Here the stage runs in process; its checkpoints go to S3 unless the config turned that off, so a
    # re-run on another worker resumes where this one stopped (tasks/checkpoints.py).
    on_pool = {"pool": None, "s3_checkpoints": config.training.s3_checkpoints is not False}
    local_cfg = config.model_copy(update={"training": config.training.model_copy(update=on_pool)})
    data = PreparedData.model_validate(prepared)
    data = data.model_copy(update={"dir": materialize(data.dir)})
    base_ref = localize(ModelRef.model_validate(base))
    sft_out = TrainOutput.model_validate(sft) if sft else None
    if sft_out is not None:
        sft_out = sft_out.model_copy(update={"model": localize(sft_out.model)})
    run_ctx = RunContext.model_validate(ctx)
    if stage == "sft":
        result = train_sft(local_cfg, data, base_ref, run_ctx, full=True)
    else:
        result = train_preference(local_cfg, data, base_ref, sft_out, run_ctx, full=True)
    put_json(result_uri, publish_stage_output(result).model_dump(mode="json"))
    return result_uri


def localize(ref: ModelRef) -> ModelRef:
    """A model record whose path is usable here: s3:// folders are downloaded, hub ids stay as they are."""
    return ref.model_copy(update={"path": materialize(ref.path)})
