"""A training stage on several nodes: one flow run of `alignment-training/<pool>` per node, started and watched
by the pipeline, meeting at an endpoint the head node publishes in S3.

- The pipeline (`run_on_nodes`) starts `training.num_nodes` flow runs, each with its node rank and one
  rendezvous URI fresh for this attempt (a retry never reads an old endpoint), and waits for all of them. When
  one ends without completing, the others are cancelled and the stage fails with one message naming that node
  first; a re-run resumes from the newest checkpoint in the shared stage folder.
- The head node (rank 0, `publish_endpoint`) picks a free port on its address and writes `host:port` to the
  rendezvous URI; the other nodes (`wait_for_endpoint`) read it, waiting at most `training.node_timeout_s`.
- A node's address is `$ALIGNFLOW_NODE_ADDRESS` (on Kubernetes the pod's IP, from the downward API), else what
  its host name resolves to.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from alignment.config import NodePlacement, PipelineConfig
from launcher.processes import free_port
from storage import folders

ADDRESS_VARIABLE = "ALIGNFLOW_NODE_ADDRESS"
POLL_SECONDS = 1.0


def node_address() -> str:
    """This machine's address as the other nodes reach it."""
    return os.environ.get(ADDRESS_VARIABLE) or socket.gethostbyname(socket.gethostname())


def publish_endpoint(rendezvous_uri: str) -> NodePlacement:
    """On the head node: choose the rendezvous endpoint and publish it for the other nodes."""
    host = node_address()
    endpoint = f"{host}:{free_port(host)}"
    folders.put_json(rendezvous_uri, {"endpoint": endpoint})
    return NodePlacement(rank=0, endpoint=endpoint)


def wait_for_endpoint(rendezvous_uri: str, rank: int, timeout_s: float) -> NodePlacement:
    """On node `rank` > 0: the head's endpoint, once published; RuntimeError after `timeout_s` without it."""
    deadline = time.monotonic() + timeout_s
    while (found := folders.get_json(rendezvous_uri)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"node {rank}: the head node published no rendezvous endpoint at {rendezvous_uri} "
                               f"within training.node_timeout_s={timeout_s:g} s (did its flow run start?)")
        time.sleep(POLL_SECONDS)
    return NodePlacement(rank=rank, endpoint=found["endpoint"])


@dataclass
class NodeRun:
    rank: int
    flow_run: FlowRun

    def describe(self) -> str:
        state = self.flow_run.state
        message = f": {state.message}" if state and state.message else ""
        return f"node {self.rank} (flow run {self.flow_run.name}, {self.flow_run.id}) ended {state.type.value if state else 'without a state'}{message}"


def run_on_nodes(cfg: PipelineConfig, stage: str, deployment: str, parameters: dict[str, Any], key: str) -> None:
    """Run the stage on its nodes, again (`training.node_retries` times) after a failed attempt: each attempt
    resumes from the newest checkpoint in the shared stage folder. Raises the last attempt's error."""
    log = get_run_logger()
    for attempt in range(cfg.training.node_retries + 1):
        try:
            return run_attempt(cfg, stage, deployment, parameters, key)
        except NodeFailure as failure:
            if attempt == cfg.training.node_retries:
                raise
            log.warning("%s; retrying the stage on %d new flow runs (%d of %d)", failure, cfg.training.num_nodes,
                        attempt + 1, cfg.training.node_retries)


class NodeFailure(RuntimeError):
    """A node of a multi-node stage ended without completing."""


def run_attempt(cfg: PipelineConfig, stage: str, deployment: str, parameters: dict[str, Any], key: str) -> None:
    """Start one flow run of `deployment` per node and wait until every one has completed. When one ends
    otherwise, cancel the rest (waiting at most `training.node_timeout_s` more for them) and raise NodeFailure
    naming the first node that failed."""
    nodes = cfg.training.num_nodes
    rendezvous_uri = f"s3://{folders.bucket()}/stages/{stage}-{key}/rendezvous/{uuid4().hex}.json"
    runs = [NodeRun(rank, run_deployment(deployment, timeout=0, tags=["alignflow", f"node-{rank}"],
                                         parameters={**parameters, "node_rank": rank,
                                                     "rendezvous_uri": rendezvous_uri}))
            for rank in range(nodes)]
    log = get_run_logger()
    log.info("%s: %d nodes, flow runs %s, rendezvous at %s", stage, nodes,
             ", ".join(f"{r.rank}: {r.flow_run.name}" for r in runs), rendezvous_uri)
    failed: list[NodeRun] = []
    stop_by: float | None = None
    with get_client(sync_client=True) as client:
        pending = list(runs)
        try:
            while pending and (stop_by is None or time.monotonic() < stop_by):
                time.sleep(POLL_SECONDS)
                for run in list(pending):
                    run.flow_run = client.read_flow_run(run.flow_run.id)
                    if run.flow_run.state and run.flow_run.state.is_final():
                        pending.remove(run)
                        if not run.flow_run.state.is_completed():
                            failed.append(run)
                if failed and pending and stop_by is None:
                    log.error("%s: %s; stopping the other nodes", stage, failed[0].describe())
                    for run in pending:
                        cancel(client, run.flow_run.id)
                    stop_by = time.monotonic() + cfg.training.node_timeout_s
        except BaseException:  # the pipeline itself stopped (interrupted, cancelled): no node trains on alone
            for run in pending:
                cancel(client, run.flow_run.id)
            raise
    if failed:
        failed.sort(key=lambda run: run.flow_run.state.timestamp)  # the node that failed first is the cause
        stuck = "".join(f"; node {run.rank} ({run.flow_run.id}) did not stop in time" for run in pending)
        raise NodeFailure(f"{stage} on {nodes} nodes failed: {failed[0].describe()}"
                          + "".join(f"; then {run.describe()}" for run in failed[1:]) + stuck)


def cancel(client: Any, flow_run_id: UUID) -> None:
    """Ask the flow run's worker to stop it (it kills the run's processes); a run already ending is left."""
    client.set_flow_run_state(flow_run_id, Cancelling(message="another node of the stage failed"), force=True)
