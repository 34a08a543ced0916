"""Deployments of the pipeline on the local (or any) Prefect server.

`alignflow deploy` registers `alignment-pipeline/scheduled` on the `cpu` work pool with a cron schedule and
the whole `PipelineConfig` as its parameter (the Prefect UI renders it as a form). The flow's code is read
from this checkout (`from_source` with a local path), so a process worker on the same machine runs it.

It also registers `feedback-round/arena-votes` (flows/feedback.py) with a trigger: an automation that runs it
once `votes` `alignflow.arena.vote` events from any arena arrived within `window` seconds (a reactive event
trigger: it fires as soon as it has counted `votes`, then ignores votes until its window ends and counts
afresh — at most one round per window; the votes it ignored are still exported by the next round). The automation is listed in the UI under Automations
(`feedback-round/arena-votes__automation_1`), where its threshold and window can be edited; `alignflow deploy`
recreates it from its options. The deployment runs one round at a time (concurrency limit 1, collision strategy
CANCEL_NEW): a trigger firing while a round runs is cancelled rather than queued, because the running round
already exports every vote decided up to its start and the next N votes start the next round; queued rounds
would pile up behind a slow training run and each train on nearly the same votes.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect import flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events import DeploymentEventTrigger

from arena.events import ARENA_PREFIX, VOTE

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = "flows/pipeline.py:alignment_pipeline"
TRAINING_ENTRYPOINT = "flows/training.py:training_stage"
FEEDBACK_ENTRYPOINT = "flows/feedback.py:feedback_round"
FEEDBACK_NAME = "arena-votes"
ONE_ROUND_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW)


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


def feedback_trigger(votes: int, window: float) -> DeploymentEventTrigger:
    """Fire after `votes` arena vote events within `window` seconds (the deployment's default parameters)."""
    return DeploymentEventTrigger(
        name=f"feedback-round/{FEEDBACK_NAME}: {votes} arena votes",
        description=f"Start a feedback round once {votes} arena votes arrived within {window:g} s.",
        expect={VOTE}, match={"prefect.resource.id": f"{ARENA_PREFIX}*"},
        threshold=votes, within=timedelta(seconds=window))


def deploy_feedback(*, pool: str = "cpu", votes: int = 20, window: float = 3600, parameters: dict | None = None,
                    paused: bool = False) -> str:
    """`feedback-round/arena-votes` on `pool`, triggered by arena votes (see the module's docstring); with
    `paused`, the trigger's automation is created disabled."""
    trigger = feedback_trigger(votes, window)
    trigger.enabled = not paused
    remote = flow.from_source(source=str(ROOT), entrypoint=FEEDBACK_ENTRYPOINT)
    deployment_id = remote.deploy(
        name=FEEDBACK_NAME, work_pool_name=pool, triggers=[trigger], concurrency_limit=ONE_ROUND_AT_A_TIME,
        parameters=parameters or {}, build=False, push=False, print_next_steps=False, tags=["alignflow"],
        description="arena votes -> preference pairs -> train the champion -> every gate -> registry")
    return str(deployment_id)
