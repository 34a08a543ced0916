"""What a Kubernetes cluster needs for a multi-node training stage (`alignflow deploy --write-k8s DIR`).

A stage with `training.num_nodes` = N runs as N flow runs of `alignment-training/<pool>` (tasks/nodes.py); on a
Kubernetes work pool the Prefect worker turns each flow run into one `batch/v1` Job, so a node is one Job
(one pod holding all of its machine's GPUs) and its rank travels as the flow run's parameter. Chosen over a
JobSet or a Kubeflow Trainer TrainJob: those start every node from one object, which needs another
controller in the cluster and would take the ranks, retries and cancellation away from Prefect, where the
rest of the pipeline is watched and retried; with one Job per flow run the UI shows each node's run and log,
the pipeline cancels the others when one fails, and a retry is a new set of flow runs.

What the template adds to the single-GPU one (infra/k8s/gpu-work-pool-base-job-template.json):
- `ALIGNFLOW_NODE_ADDRESS` from the pod's IP (downward API): the head node publishes `IP:port` as its
  rendezvous endpoint, and the other pods connect to it over the pod network;
- the run folder: a ReadWriteMany PersistentVolumeClaim mounted at `shared_mount_path` on every node, where
  `run.output_dir` must point (sharded checkpoints are written there by every process; the head's rank 0
  writes the model);
- `parallelism`/`completions` on the Job's spec, where the batch/v1 schema has them;
- one GPU count per node (`gpu_count`, default 8), each node pod on a machine of its own.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GPU_TEMPLATE = ROOT / "infra" / "k8s" / "gpu-work-pool-base-job-template.json"
TEMPLATE_NAME = "training-nodes-work-pool-base-job-template.json"
CLAIM_NAME = "shared-runs-pvc.json"
NODE_LABEL = "alignflow.io/training-node"


def fix_job_spec(template: dict[str, Any]) -> dict[str, Any]:
    """Move `parallelism`/`completions` from the pod spec (Prefect's default template puts them there; the
    batch/v1 schema does not know them) to the Job spec."""
    job = template["job_configuration"]["job_manifest"]["spec"]
    pod = job["template"]["spec"]
    for key in ("parallelism", "completions"):
        job[key] = pod.pop(key, 1)
    return template


def training_nodes_template(base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base job template of a Kubernetes work pool whose flow runs are the nodes of a training stage."""
    template = fix_job_spec(copy.deepcopy(base or json.loads(GPU_TEMPLATE.read_text())))
    variables = template["variables"]["properties"]
    variables["gpu_count"]["default"] = 8
    variables["shared_claim"] = {
        "title": "Shared run folder claim", "type": "string", "default": "alignflow-runs",
        "description": "A ReadWriteMany PersistentVolumeClaim mounted on every node (run.output_dir goes there)."}
    variables["shared_mount_path"] = {
        "title": "Shared run folder path", "type": "string", "default": "/shared",
        "description": "Where the claim is mounted in every node's container."}
    job = template["job_configuration"]["job_manifest"]
    pod_template = job["spec"]["template"]
    pod_template["metadata"] = {"labels": {NODE_LABEL: "true"}}
    pod = pod_template["spec"]
    container = pod["containers"][0]
    # Prefect's Kubernetes worker puts the work pool's and the deployment's `env` before this list
    container["env"] = [{"name": "ALIGNFLOW_NODE_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    container["volumeMounts"].append({"name": "runs", "mountPath": "{{ shared_mount_path }}"})
    pod["volumes"].append({"name": "runs", "persistentVolumeClaim": {"claimName": "{{ shared_claim }}"}})
    # a node is a whole machine: never two node pods on one host
    pod["affinity"] = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {NODE_LABEL: "true"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    return template


def shared_runs_claim(name: str = "alignflow-runs", namespace: str = "alignflow", size: str = "500Gi",
                      storage_class: str | None = None) -> dict[str, Any]:
    """The ReadWriteMany claim every node mounts (an NFS, CephFS, EFS, Filestore... storage class)."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": size}}}
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def write_cluster_files(out: Path, *, storage_class: str | None = None, size: str = "500Gi") -> list[Path]:
    """Write the work-pool template and the shared claim into `out`; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    files = {TEMPLATE_NAME: training_nodes_template(),
             CLAIM_NAME: shared_runs_claim(size=size, storage_class=storage_class)}
    written = []
    for name, document in files.items():
        (out / name).write_text(json.dumps(document, indent=2) + "\n")
        written.append(out / name)
    return written
