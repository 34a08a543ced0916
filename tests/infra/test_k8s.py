"""The Kubernetes `gpu` work-pool base job template is a valid Prefect 3 template that asks for GPUs.

Rendering follows prefect.utilities.templating.apply_values (re-implemented here: importing prefect costs
~1.5 s): a value that is exactly one "{{ var }}" becomes the variable's value, keeping its type, and the
key is dropped when the variable is unset; placeholders inside longer strings are replaced as text
(an unset one by "").
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "k8s" / "gpu-work-pool-base-job-template.json"


@pytest.fixture(scope="module")
def template() -> dict:
    return json.loads(TEMPLATE.read_text())


PLACEHOLDER = re.compile(r"{{\s*([\w.-]+)\s*}}")
_UNSET = object()


def find_placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def apply_values(template: Any, values: dict) -> Any:
    if isinstance(template, dict):
        out = {k: apply_values(v, values) for k, v in template.items()}
        return {k: v for k, v in out.items() if v is not _UNSET}
    if isinstance(template, list):
        return [v for v in (apply_values(item, values) for item in template) if v is not _UNSET]
    if isinstance(template, str):
        m = PLACEHOLDER.fullmatch(template)
        if m:
            return values.get(m.group(1), _UNSET)
        return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else "", template)
    return template


def defaults(variables: dict) -> dict:
    """As prefect.workers.base.BaseJobConfiguration._get_base_config_defaults: unset/None are left out."""
    return {k: v["default"] for k, v in variables["properties"].items() if v.get("default") is not None}


def render(template: dict, **values) -> dict:
    """As BaseJobConfiguration.from_template_and_values (without block/variable resolution)."""
    return apply_values(copy.deepcopy(template["job_configuration"]), {**defaults(template["variables"]), **values})


def test_shape(template: dict) -> None:
    assert set(template) == {"job_configuration", "variables"}
    assert set(template["job_configuration"]) >= {
        "command", "env", "labels", "name", "namespace", "job_manifest", "cluster_config",
        "job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output",
    }
    props = template["variables"]["properties"]
    assert {"image", "namespace", "gpu_count", "env", "node_selector", "service_account_name"} <= set(props)
    assert props["gpu_count"]["type"] == "integer" and props["gpu_count"]["default"] == 1
    assert "default" not in props["node_selector"]


def test_every_placeholder_is_a_declared_variable(template: dict) -> None:
    # the check the Prefect server applies on `work-pool create` (validate_base_job_template)
    used = {name for value in template["job_configuration"].values() for name in find_placeholders(json.dumps(value))}
    assert used <= set(template["variables"]["properties"])
    assert {"image", "gpu_count", "node_selector"} <= used


def test_variables_schema_is_valid_and_defaults_conform(template: dict) -> None:
    schema = template["variables"]
    jsonschema.validators.validator_for(schema).check_schema(schema)
    jsonschema.validate(defaults(schema), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gpu_count": "two"}, schema)


def test_rendered_manifest_requests_gpus(template: dict) -> None:
    config = render(template)
    manifest = config["job_manifest"]
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    pod = manifest["spec"]["template"]["spec"]
    # one pod per flow run; where the batch/v1 schema has these (Prefect's default template puts the first two
    # in the pod spec, where Kubernetes ignores them)
    assert (manifest["spec"]["parallelism"], manifest["spec"]["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"
    assert container["image"] == template["variables"]["properties"]["image"]["default"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nodeSelector" not in pod, "an unset node_selector is left out, not rendered empty"
    assert "{{" not in json.dumps(config), "a placeholder with a default was not replaced"
    assert config["namespace"] == manifest["metadata"]["namespace"] == "alignflow"
    assert config["stream_output"] is True and config["pod_watch_timeout_seconds"] == 900


def test_deployment_overrides(template: dict) -> None:
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    config = render(template, gpu_count=8, node_selector=selector, image="registry.example.com/alignflow:1")
    pod = config["job_manifest"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert pod["nodeSelector"] == selector
    assert pod["containers"][0]["image"] == "registry.example.com/alignflow:1"


def test_readme_has_the_create_command() -> None:
    readme = (ROOT / "infra" / "k8s" / "README.md").read_text()
    assert ("prefect work-pool create gpu --type kubernetes "
            "--base-job-template infra/k8s/gpu-work-pool-base-job-template.json") in readme


# ---- multi-node training stages (flows/k8s.py, `alignflow deploy --write-k8s DIR`) ----------------------------

K8S_VERSION = "1.33.0"  # the manifests are checked against this Kubernetes version's schemas (kubernetes-validate)


def test_the_gpu_template_renders_a_valid_job(template: dict) -> None:
    import kubernetes_validate

    job = render(template, name="run-1", labels={"prefect.io/flow-run-id": "1"},
                 command=["prefect", "flow-run", "execute"], env=[{"name": "A", "value": "1"}])["job_manifest"]
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    job["spec"]["template"]["spec"]["parallelism"] = 1  # where Prefect's default template has it
    with pytest.raises(kubernetes_validate.ValidationError, match="parallelism"):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)


def test_write_k8s_writes_valid_manifests_for_training_nodes(tmp_path: Path) -> None:
    import subprocess
    import sys

    import kubernetes_validate

    out = tmp_path / "k8s"
    alignflow = str(Path(sys.executable).parent / "alignflow")
    proc = subprocess.run([alignflow, "deploy", "--write-k8s", str(out), "--k8s-storage-class", "nfs-client"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nodes = json.loads((out / "training-nodes-work-pool-base-job-template.json").read_text())
    claim = json.loads((out / "shared-runs-pvc.json").read_text())
    kubernetes_validate.validate(claim, K8S_VERSION, strict=True)
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "nfs-client"
    schema = nodes["variables"]
    jsonschema.validators.validator_for(schema).check_schema(schema)
    used = {name for value in nodes["job_configuration"].values() for name in find_placeholders(json.dumps(value))}
    assert used <= set(schema["properties"])
    for rank in range(2):  # one Job per node: the flow run of node `rank`
        config = render(nodes, name=f"train-node-{rank}", labels={"prefect.io/flow-run-id": str(rank)},
                        command=["prefect", "flow-run", "execute"], env=[{"name": "PREFECT_API_URL", "value": "http://p"}])
        job = config["job_manifest"]
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        pod = job["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
        address = [e for e in container["env"] if e["name"] == "ALIGNFLOW_NODE_ADDRESS"]
        assert address == [{"name": "ALIGNFLOW_NODE_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
        assert {"name": "runs", "mountPath": "/shared"} in container["volumeMounts"]
        assert {"name": "runs", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in pod["volumes"]
        anti = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert anti["topologyKey"] == "kubernetes.io/hostname"
        assert "{{" not in json.dumps(config)
    broken = copy.deepcopy(job)
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = {"count": 8}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
