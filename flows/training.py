"""The training stages as their own flow, deployed on a training work pool (`alignment-training/<pool>`).

The pipeline calls it through `run_deployment` when `training.pool` is set, passing only small records
whose paths are s3:// URIs and the MLflow run context; the flow materialises its inputs, runs the stage
exactly as in process (same cache, same MLflow child run), publishes the trained model to S3 and writes
its result record to S3, where the pipeline reads it back.

With `training.num_nodes` > 1 the pipeline starts one such flow run per node (tasks/nodes.py): the head
(node_rank 0) publishes its rendezvous endpoint and runs the stage as above, its processes joined by the
other nodes', which run only their processes (tasks/stages.py join_stage) in the shared stage folder.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from alignment.config import PipelineConfig
from alignment.records import ModelRef, PreparedData, TrainOutput
from alignment.runtime import setup_runtime
from storage.folders import materialize, put_json
from tasks.nodes import publish_endpoint, wait_for_endpoint
from tasks.stages import join_stage, publish_stage_output, train_preference, train_sft
from tasks.tracking import RunContext


@flow(name="alignment-training", log_prints=True)
def training_stage(stage: Literal["sft", "preference"], config: PipelineConfig, prepared: dict[str, Any],
                   base: dict[str, Any], sft: dict[str, Any] | None, ctx: dict[str, Any], result_uri: str,
                   node_rank: int = 0, rendezvous_uri: str | None = None) -> str:
    setup_runtime(config.run.seed, config.run.torch_threads)
    # Here the stage runs in process; its checkpoints go to S3 unless the config turned that off, so a
    # re-run on another worker resumes where this one stopped (tasks/checkpoints.py).
    on_pool: dict[str, Any] = {"pool": None, "s3_checkpoints": config.training.s3_checkpoints is not False}
    if config.training.num_nodes > 1:  # one node of several (tasks/nodes.py): the head publishes the endpoint
        if rendezvous_uri is None:
            raise ValueError(f"training.num_nodes={config.training.num_nodes}: a node's flow run needs "
                             "rendezvous_uri (the pipeline passes it)")
        on_pool["node"] = (publish_endpoint(rendezvous_uri) if node_rank == 0 else
                           wait_for_endpoint(rendezvous_uri, node_rank, config.training.node_timeout_s))
    local_cfg = config.model_copy(update={"training": config.training.model_copy(update=on_pool)})
    data = PreparedData.model_validate(prepared)
    data = data.model_copy(update={"dir": materialize(data.dir)})
    base_ref = localize(ModelRef.model_validate(base))
    sft_out = TrainOutput.model_validate(sft) if sft else None
    if sft_out is not None:
        sft_out = sft_out.model_copy(update={"model": localize(sft_out.model),
                                             "reference": sft_out.reference and localize(sft_out.reference)})
    run_ctx = RunContext.model_validate(ctx)
    if node_rank > 0:  # this node's processes only; the head records, caches and publishes the stage
        join_stage(local_cfg, stage, data, base_ref, sft_out, run_ctx)
        return result_uri
    if stage == "sft":
        result = train_sft(local_cfg, data, base_ref, run_ctx, full=True)
    else:
        result = train_preference(local_cfg, data, base_ref, sft_out, run_ctx, full=True)
    put_json(result_uri, publish_stage_output(result).model_dump(mode="json"))
    return result_uri


def localize(ref: ModelRef) -> ModelRef:
    """A model record whose path is usable here: s3:// folders are downloaded, hub ids stay as they are."""
    return ref.model_copy(update={"path": materialize(ref.path)})
