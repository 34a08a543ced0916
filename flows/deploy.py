"""Deployments of the pipeline on the local (or any) Prefect server.

`alignflow deploy` registers `alignment-pipeline/scheduled` on the `cpu` work pool with a cron schedule and
the whole `PipelineConfig` as its parameter (the Prefect UI renders it as a form). The flow's code is read
from this checkout (`from_source` with a local path), so a process worker on the same machine runs it.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/pipeline.py:alignment_pipeline"
TRAINING_ENTRYPOINT = "flows/training.py:training_stage"


def deploy_pipeline(*, pool: str = "cpu", cron: str = "0 3 * * *", paused: bool = False,
                    name: str = "scheduled", parameters: dict | None = None) -> str:
    """Create or update the pipeline deployment; returns its id. The schedule can be changed or paused later
    in the UI or with `prefect deployment schedule pause alignment-pipeline/scheduled`."""
    remote = flow.from_source(source=str(ROOT), entrypoint=ENTRYPOINT)
    deployment_id = remote.deploy(
        name=name, work_pool_name=pool, cron=cron,
        paused=paused, parameters=parameters or {}, build=False, push=False, print_next_steps=False,
        tags=["alignflow"], description="data -> SFT -> DPO/ORPO -> evaluation -> comparison -> registration",
    )
    return str(deployment_id)


def deploy_training(*, pool: str = "gpu") -> str:
    """The training stages' flow on a training pool: `alignment-training/<pool>`, started by the pipeline
    with run_deployment when `training.pool` names that pool (no schedule of its own)."""
    remote = flow.from_source(source=str(ROOT), entrypoint=TRAINING_ENTRYPOINT)
    deployment_id = remote.deploy(name=pool, work_pool_name=pool, build=False, push=False,
                                  print_next_steps=False, tags=["alignflow"],
                                  description="SFT / DPO / ORPO on a training work pool")
    return str(deployment_id)
