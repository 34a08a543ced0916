"""The local stack for real: SeaweedFS, the MLflow server with proxied S3 artifacts, the Prefect server and
both workers, on loopback ports chosen for this test. The CLI runs the pipeline against it in a subprocess,
as a user would; then everything the run wrote is scanned for planted secrets."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from flows.stack import Ports, Stack, free_ports, group_alive, s3_client, stop_group
from tests.integration.stackutil import SMALL, consecutive_free_base, deploy

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PLANTED = "hf_PLANTEDsecretTOKEN0123456789abcdef"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    prefect, mlflow_port, s3, arena = free_ports(4)
    st = Stack(tmp_path_factory.mktemp("stack"), Ports(prefect=prefect, mlflow=mlflow_port, s3=s3,
                                                      weed_base=consecutive_free_base(), arena=arena))
    try:
        st.up(timeout=180, echo=lambda _: None)
        yield st
    finally:
        st.down(wipe=False, echo=lambda _: None)


@pytest.fixture(scope="module")
def run_summary(stack: Stack, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run")
    env = {**os.environ, "HF_TOKEN": PLANTED, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # The CLI must find the stack from --stack-dir alone: none of the stack's variables may come from the
    # test process (use_local_stack only fills unset ones, so a leftover S3 endpoint would win; issue #16).
    for key in stack.client_env():
        env.pop(key, None)
    cmd = [str(Path(sys.executable).parent / "alignflow"), "run", "--config", "configs/quickstart.yaml",
           "--stack-dir", str(stack.dir), "--set", f"run.output_dir={out}", *sum((["--set", s] for s in SMALL), [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "cli-output.txt").write_text(proc.stdout + proc.stderr)
    assert proc.stdout.strip().splitlines()[-1] == f"summary: {out / 'summary.json'}"
    summary = json.loads((out / "summary.json").read_text())
    summary["_out"] = str(out)
    return summary


def test_status_is_healthy(stack: Stack) -> None:
    assert all(info["healthy"] for info in stack.status().values())
    assert (stack.dir / "credentials.json").stat().st_mode & 0o777 == 0o600


def test_run_tracked_by_the_server_with_artifacts_in_s3(stack: Stack, run_summary: dict) -> None:
    assert run_summary["tracking_uri"] == stack.urls["mlflow"], (
        f"the run tracked into {run_summary['tracking_uri']}, not the test stack's MLflow {stack.urls['mlflow']}")
    s3 = stack.urls["s3"]
    keys = [o["Key"] for o in s3_client(stack.client_env()).list_objects_v2(Bucket="mlflow", MaxKeys=1000)
            .get("Contents", [])]
    model_id = run_summary["registered_model"]["model_uri"].split("/")[-1]
    for suffix in (f"models/{model_id}/artifacts/model/model.safetensors", "plots/curves.png", "data/report.json"):
        assert any(k.endswith(suffix) for k in keys), (
            f"no object ending in {suffix} in bucket mlflow of the test stack's S3 {s3} ({len(keys)} keys there)")
    results = s3_client(stack.client_env()).list_objects_v2(Bucket="alignflow", Prefix="prefect-results/")
    cached = {o["Key"].rsplit("/", 1)[1].split("-")[0] for o in results.get("Contents", [])}
    # the stage cache is persisted in S3: in the test stack's, not in whatever S3 the test process knew of
    assert {"data", "base", "sft", "dpo"} <= cached, (
        f"expected the cached results of the data, base, sft and dpo stages under s3://alignflow/prefect-results/ "
        f"in the test stack's S3 {s3}; found stage prefixes {sorted(cached)}. The run's results went to another "
        f"store (was an S3 endpoint or bucket inherited from the environment?); CLI output: "
        f"{Path(run_summary['_out'], 'cli-output.txt')}")


def test_wrong_s3_keys_are_refused(stack: Stack) -> None:
    env = {**stack.client_env(), "AWS_SECRET_ACCESS_KEY": "wrong"}
    with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
        s3_client(env).list_objects_v2(Bucket="mlflow")


def test_no_secret_reaches_mlflow_prefect_or_files(stack: Stack, run_summary: dict, tmp_path: Path) -> None:
    secrets = [PLANTED, stack.credentials()["secret_key"]]
    client = MlflowClient(stack.urls["mlflow"])
    texts: list[str] = [json.dumps(run_summary)]
    runs = client.search_runs([run_summary["experiment_id"]], max_results=100)
    for run in runs:
        texts.append(json.dumps(run.data.params) + json.dumps(run.data.tags))
    dest = tmp_path / "artifacts"
    for run in runs:
        client.download_artifacts(run.info.run_id, "", str(dest / run.info.run_id))
    for version in client.search_model_versions(f"name='{run_summary['registered_model']['name']}'"):
        texts.append(json.dumps(version.tags))
    for path in [*dest.rglob("*"), *Path(run_summary["_out"]).rglob("*")]:
        if path.is_file() and path.stat().st_size < 5_000_000:
            texts.append(path.read_bytes().decode("utf-8", errors="replace"))
    texts += prefect_logs_and_artifacts(stack)
    for secret in secrets:
        leaks = [t[:200] for t in texts if secret in t]
        assert not leaks, f"secret found in {len(leaks)} places"


def prefect_logs_and_artifacts(stack: Stack) -> list[str]:
    import urllib.request

    out = []
    for path in ("/logs/filter", "/artifacts/filter", "/flow_runs/filter", "/block_documents/filter"):
        req = urllib.request.Request(stack.urls["prefect_api"] + path, data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read().decode()
        assert body.strip() not in ("", "[]") or path != "/logs/filter"
        out.append(body)
    return out


TRIGGER = """
import sys, time
from prefect import get_client
from prefect.client.schemas.filters import DeploymentFilter
from prefect.states import StateType
with get_client(sync_client=True) as client:
    dep = client.read_deployment_by_name("alignment-pipeline/scheduled")
    assert dep.schedules and dep.work_pool_name == "cpu", dep
    params = dict(dep.parameters)
    params["config"]["run"]["output_dir"] = sys.argv[1]          # one field changed, as in the UI form
    run = client.create_flow_run_from_deployment(dep.id, parameters=params)
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        state = client.read_flow_run(run.id).state
        if state.is_final():
            break
        time.sleep(2)
    print(state.type.value)
"""


def test_deployed_pipeline_runs_on_the_worker(stack: Stack, tmp_path: Path) -> None:
    env = {**os.environ, **stack.client_env()}
    small = sum((["--set", s] for s in SMALL), [])
    alignflow = str(Path(sys.executable).parent / "alignflow")
    deployed = subprocess.run([alignflow, "deploy", "--config", "configs/quickstart.yaml", "--stack-dir",
                               str(stack.dir), "--cron", "0 3 * * *", *small], capture_output=True, text=True,
                              env=env, timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    out = tmp_path / "from-ui"
    run = subprocess.run([sys.executable, "-c", TRIGGER, str(out)], capture_output=True, text=True, env=env,
                         timeout=480)
    assert run.stdout.strip().splitlines()[-1] == "COMPLETED", run.stdout[-2000:] + run.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["registered_model"]["version"]


def test_training_runs_on_the_gpu_pool_through_s3(stack: Stack, tmp_path: Path) -> None:
    """With training.pool=gpu, SFT and DPO run as `alignment-training/gpu` flow runs on the gpu worker;
    inputs and the trained models travel through S3; a second run reuses the results stored in S3."""
    env = {**os.environ, **stack.client_env()}
    cmd = [str(Path(sys.executable).parent / "alignflow"), "run", "--config", "configs/quickstart.yaml",
           "--stack-dir", str(stack.dir), "--set", f"run.output_dir={tmp_path}", "--set", "training.pool=gpu",
           *sum((["--set", s] for s in SMALL), [])]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "sft: running on work pool 'gpu'" in first.stdout + first.stderr
    keys = [o["Key"] for o in s3_client(stack.client_env()).list_objects_v2(
        Bucket="alignflow", Prefix="stages/", MaxKeys=1000)["Contents"]]
    for stage in ("sft", "dpo"):
        assert any(k.startswith(f"stages/{stage}-") and k.endswith("/model/model.safetensors") for k in keys)
        assert any(k.startswith(f"stages/{stage}-") and k.endswith("/result.json") for k in keys)
    worker_log = (stack.dir / "logs" / "worker-gpu.log").read_text()
    assert "alignment-training" in worker_log
    summary = json.loads((tmp_path / "summary.json").read_text())
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = json.loads((tmp_path / "summary.json").read_text())
    tags = MlflowClient(stack.urls["mlflow"]).get_run(second["stage_runs"]["sft"]).data.tags
    assert tags["alignflow.cached"] == "true" and tags["alignflow.reused_run_id"] == summary["stage_runs"]["sft"]
    assert second["metrics"]["sft/final_loss"] == summary["metrics"]["sft/final_loss"]


def alignflow_run(stack: Stack, out: Path, *extra: str) -> list[str]:
    return [str(Path(sys.executable).parent / "alignflow"), "run", "--config", "configs/quickstart.yaml",
            "--stack-dir", str(stack.dir), "--set", f"run.output_dir={out}",
            *sum((["--set", s] for s in [*SMALL, *extra]), [])]


LONG_DPO = ["dpo.optim.max_steps=300", "dpo.optim.save_every=20"]  # 15 checkpoints to be killed at


@pytest.fixture(scope="module")
def long_dpo_reference(stack: Stack, tmp_path_factory) -> dict:
    """An uninterrupted run with the longer DPO that the kill tests interrupt: the result they must reach."""
    out = tmp_path_factory.mktemp("long-dpo")
    env = {**os.environ, **stack.client_env()}
    ref = subprocess.run(alignflow_run(stack, out, *LONG_DPO, "promotion.model_name=it-ref"),
                         capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-2000:]
    return json.loads((out / "summary.json").read_text())


def assert_same_result(reference: dict, summary: dict, client: MlflowClient, model_name: str) -> None:
    for name, value in reference["metrics"].items():
        assert summary["metrics"][name] == pytest.approx(value, abs=1e-4), name
    assert len(client.search_model_versions(f"name='{model_name}'")) == 1


def test_killed_training_resumes_to_the_same_result(stack: Stack, tmp_path: Path, long_dpo_reference: dict) -> None:
    """kill -9 of the whole run in the middle of DPO, after a random number of checkpoints; the re-run resumes
    from the last checkpoint and ends with the metrics of an uninterrupted run, with exactly one registered
    version."""
    env = {**os.environ, **stack.client_env()}
    out = tmp_path / "killed"
    cmd = alignflow_run(stack, out, *LONG_DPO, "promotion.model_name=it-resume")
    log = (tmp_path / "killed.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    kill_at = 20 * random.randint(1, 10)  # a random checkpoint of the 15 (every 20 of 300 steps)
    print(f"killing the run once DPO has saved step {kill_at}")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any(out.glob(f"dpo-*/checkpoints/step-{kill_at:07d}/trainer_state.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before DPO saved step {kill_at}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists()
    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    again = json.loads((out / "summary.json").read_text())
    client = MlflowClient(stack.urls["mlflow"])
    assert client.get_run(again["stage_runs"]["dpo"]).data.metrics["resumed_from_step"] >= kill_at
    assert_same_result(long_dpo_reference, again, client, "it-resume")


def training_processes(worker_pgid: int) -> list[psutil.Process]:
    """The flow-run processes (`python -m prefect.engine`) a process worker started, and their children."""
    worker = psutil.Process(worker_pgid)
    return [p for p in worker.children(recursive=True) if "prefect.engine" in " ".join(p.cmdline())]


def published_dpo_steps(s3) -> list[str]:
    """Steps of the complete DPO checkpoints in S3 (every stage key; each test's DPO has its own)."""
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="alignflow", Prefix="stages/dpo-")
            for o in page.get("Contents", [])]
    return [k.split("/checkpoints/step-")[1][:7] for k in keys if "/checkpoints/step-" in k and k.endswith("/_MANIFEST.json")]


def test_killed_worker_resumes_from_s3_checkpoints_elsewhere(stack: Stack, tmp_path: Path,
                                                              long_dpo_reference: dict) -> None:
    """DPO on the gpu pool; kill -9 of the worker's training process once a random checkpoint is in S3, and
    the worker's local checkpoints deleted (a machine lost with its disk). The pipeline fails; its re-run
    starts DPO on the pool again, which restores the newest checkpoint from S3, resumes there and reaches the
    uninterrupted run's metrics, with one registered version."""
    deploy(stack)  # alignment-training/gpu, as `alignflow deploy` registers it
    env = {**os.environ, **stack.client_env()}
    out = tmp_path / "pool"
    cmd = alignflow_run(stack, out, *LONG_DPO, "training.pool=gpu", "promotion.model_name=it-pool-resume")
    s3 = s3_client(stack.client_env())
    kill_at = 20 * random.randint(2, 8)
    print(f"killing the worker's training process once a DPO checkpoint at step >= {kill_at} is in S3")
    log_path = tmp_path / "pool.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline, published = time.monotonic() + 400, 0
        while time.monotonic() < deadline and proc.poll() is None and published < kill_at:
            # The mirror uploads the newest checkpoint when it looks, so some steps never reach S3: wait for
            # any at or past the kill point.
            published = max([int(p) for p in published_dpo_steps(s3)] or [0])
            time.sleep(0.1)
        assert published >= kill_at, f"no DPO checkpoint >= {kill_at} reached S3:\n" + log_path.read_text()[-3000:]
        victims = training_processes(stack.read_state()["services"]["worker-gpu"]["pgid"])
        assert victims, "no training process under the gpu worker"
        for victim in victims:
            victim.kill()  # SIGKILL
        code = proc.wait(timeout=300)
    assert code != 0 and not (out / "summary.json").exists()  # the pipeline saw its training crash
    for local in out.glob("dpo-*/checkpoints"):
        shutil.rmtree(local)  # the lost machine's disk

    resumed = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    again = json.loads((out / "summary.json").read_text())
    client = MlflowClient(stack.urls["mlflow"])
    assert client.get_run(again["stage_runs"]["dpo"]).data.metrics["resumed_from_step"] >= published
    assert "restored from s3://alignflow/stages/dpo-" in (stack.dir / "logs" / "worker-gpu.log").read_text()
    assert_same_result(long_dpo_reference, again, client, "it-pool-resume")


@pytest.mark.parametrize("service", ["mlflow", "s3"])
def test_service_outage_mid_run_is_ridden_out(stack: Stack, tmp_path: Path, service: str) -> None:
    """The MLflow server or the S3 store is stopped in the middle of DPO and started again 15 s later: the
    clients' retries with backoff carry the run through, it completes with its artifacts and exactly one
    registered version."""
    env = {**os.environ, **stack.client_env()}
    out = tmp_path / "outage"
    name = f"it-outage-{service}"
    cmd = alignflow_run(stack, out, "dpo.optim.max_steps=200", "dpo.optim.save_every=20",
                        f"promotion.model_name={name}")
    log_path = tmp_path / "outage.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if any(out.glob("dpo-*/checkpoints/step-0000020/trainer_state.json")):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before DPO's first checkpoint"
        assert stop_group(stack.read_state()["services"][service]["pgid"])
        time.sleep(15)
        stack.up(echo=lambda _: None)  # starts what is down, as `alignflow stack up` does
        code = proc.wait(timeout=600)
    output = log_path.read_text()
    assert code == 0, output[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(stack.urls["mlflow"])
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    assert summary["registered_model"]["version"] == "1"
    assert {f.path for f in client.list_artifacts(summary["parent_run_id"], "report")} == {"report/report.html"}
    assert client.get_run(summary["stage_runs"]["dpo"]).info.status == "FINISHED"


NODES = ["training.pool=nodes", "training.num_nodes=2", "training.num_processes=1", "training.sharding=fsdp2",
         "training.node_timeout_s=60", "dpo.optim.max_steps=60", "dpo.optim.save_every=10"]


def start_node_workers(stack: Stack, logs: Path) -> list[subprocess.Popen]:
    """Two process workers of the `nodes` pool, one flow run at a time each (a node each), their address the
    loopback one; the first creates the pool."""
    env = {**os.environ, **stack.client_env(), "PREFECT_HOME": str(stack.dir / "prefect"),
           "ALIGNFLOW_NODE_ADDRESS": "127.0.0.1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = str(Path(sys.executable).parent / "prefect")
    workers = []
    for name in ("node-a", "node-b"):
        with (logs / f"worker-{name}.log").open("w") as log:
            workers.append(subprocess.Popen([prefect, "worker", "start", "--pool", "nodes", "--type", "process",
                                             "--name", name, "--limit", "1"], stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True))
        deadline = time.monotonic() + 90
        while not stack.worker_online("nodes") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stack.worker_online("nodes"), (logs / f"worker-{name}.log").read_text()[-2000:]
    deployed = subprocess.run([sys.executable, "-c", "from flows.deploy import deploy_training; "
                               "print(deploy_training(pool='nodes'))"], capture_output=True, text=True, env=env,
                              timeout=120)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    return workers


def test_two_nodes_through_prefect_lose_one_and_retry_to_the_same_result(stack: Stack, tmp_path: Path) -> None:
    """SFT and DPO on 2 nodes x 1 process (FSDP2), each node a flow run of alignment-training/nodes taken by
    its own worker; node 1's training processes are killed (SIGKILL) once DPO wrote a checkpoint: the stage's
    attempt fails naming node 1, the other node stops, the retry resumes from the sharded checkpoint, and the
    run ends with the metrics of the same training in 2 processes of one machine, with one registered
    version."""
    env = {**os.environ, **stack.client_env()}
    reference_out = tmp_path / "two-processes"
    ref = subprocess.run(alignflow_run(stack, reference_out, *[o for o in NODES if not o.startswith(
        ("training.pool", "training.num_nodes"))], "training.num_processes=2", "promotion.model_name=it-two-procs"),
        capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stdout[-3000:] + ref.stderr[-3000:]
    reference = json.loads((reference_out / "summary.json").read_text())

    workers = start_node_workers(stack, tmp_path)
    out = tmp_path / "nodes"
    try:
        log_path = tmp_path / "nodes.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(alignflow_run(stack, out, *NODES, "promotion.model_name=it-nodes"), stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
            kill_at = 10 * random.randint(2, 4)
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and proc.poll() is None:
                if any(out.glob(f"dpo-*/checkpoints/step-{kill_at:07d}")):
                    break
                time.sleep(0.1)
            assert proc.poll() is None, f"the run ended before DPO saved step {kill_at}:\n" + log_path.read_text()[-3000:]
            victims = [p for p in psutil.process_iter(["cmdline"])
                       if any("launch/node-1/spec.json" in part for part in (p.info["cmdline"] or []))]
            assert victims, "no training process of node 1"
            for victim in victims:
                victim.kill()
            code = proc.wait(timeout=500)
        text = log_path.read_text()
        assert code == 0, text[-4000:]
        assert "dpo on 2 nodes failed: node 1 (flow run" in text, text[-4000:]
        assert "on node 1 of 2 failed" in text and "retrying the stage on 2 new flow runs" in text
    finally:
        for worker in workers:
            stop_group(worker.pid)
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(stack.urls["mlflow"])
    assert client.get_run(summary["stage_runs"]["dpo"]).data.metrics["resumed_from_step"] >= kill_at
    assert_same_result(reference, summary, client, "it-nodes")
    assert (out / next(out.glob("dpo-*")).name / "launch" / "node-1" / "spec.json").is_file()


def test_down_stops_every_process_group_and_keeps_data(stack: Stack, run_summary: dict) -> None:
    """Runs last in this module: `down` ends every process group it started; data stays without --wipe."""
    groups = [info["pgid"] for info in stack.read_state()["services"].values()]
    assert len(groups) == 6, f"expected 6 process groups (s3, mlflow, prefect, 2 workers, arena), got {stack.read_state()['services'].keys()}"
    stack.down(echo=lambda _: None)
    alive = [subprocess.run(["ps", "-o", "pid,stat,args", "-g", str(g)], capture_output=True, text=True).stdout
             for g in groups if group_alive(g)]
    assert not alive, alive
    assert (stack.dir / "mlflow" / "mlflow.db").is_file() and (stack.dir / "s3").is_dir()
    assert not stack.running()
