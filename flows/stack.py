"""The local service stack, on loopback: SeaweedFS (S3), an MLflow tracking server with proxied S3 artifacts,
a Prefect server, process workers for the `cpu` and `gpu` work pools, and the arena (people compare registered
models blind; votes in `<stack dir>/arena/arena.db`).

`alignflow stack up | down | status | logs | env`. All state lives in one stack directory (default
`.alignflow/stack`, or $ALIGNFLOW_STACK_DIR): data, logs, generated S3 credentials (mode 600) and
`stack.json` (ports and the process group of every service started). `up` is idempotent and waits for
health; `down` stops only the process groups it recorded and keeps data unless `--wipe`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
BUCKETS = ("mlflow", "alignflow")
POOLS = ("cpu", "gpu")
WEED_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "metricsPort", "s3.port.iceberg",
    "s3.port.lance",
)


class StackError(RuntimeError):
    """A service of the stack did not start or is not healthy; the message names it and its log."""


@dataclass
class Ports:
    prefect: int = 4200
    mlflow: int = 5000
    s3: int = 8333
    weed_base: int = 18400  # SeaweedFS's internal ports: weed_base .. weed_base + 12
    arena: int = 8765

    def weed_internal(self) -> dict[str, int]:
        return {flag: self.weed_base + i for i, flag in enumerate(WEED_PORT_FLAGS)}


@dataclass
class Stack:
    dir: Path
    ports: Ports = field(default_factory=Ports)

    # ---- locations and settings ------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Stack:
        """The stack in `directory` with the ports it was started with (defaults if never started)."""
        d = Path(directory or os.environ.get("ALIGNFLOW_STACK_DIR", ".alignflow/stack")).resolve()
        state = d / "stack.json"
        ports = Ports(**json.loads(state.read_text())["ports"]) if state.is_file() else Ports()
        return cls(d, ports)

    @property
    def urls(self) -> dict[str, str]:
        return {"prefect": f"http://{HOST}:{self.ports.prefect}", "prefect_api": f"http://{HOST}:{self.ports.prefect}/api",
                "mlflow": f"http://{HOST}:{self.ports.mlflow}", "s3": f"http://{HOST}:{self.ports.s3}",
                "arena": f"http://{HOST}:{self.ports.arena}"}

    def credentials(self) -> dict[str, str]:
        """S3 keys generated on first use, kept in the stack directory with mode 600."""
        path = self.dir / "credentials.json"
        if not path.is_file():
            self.dir.mkdir(parents=True, exist_ok=True)
            creds = {"access_key": "AF" + secrets.token_hex(9).upper(), "secret_key": secrets.token_urlsafe(30)}
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(creds, fh)
        return json.loads(path.read_text())

    def client_env(self) -> dict[str, str]:
        """Environment for clients of the stack (the CLI, workers, tests). Contains the S3 secret: never log it."""
        creds = self.credentials()
        return {
            "PREFECT_API_URL": self.urls["prefect_api"],
            "MLFLOW_TRACKING_URI": self.urls["mlflow"],
            "MLFLOW_S3_ENDPOINT_URL": self.urls["s3"],
            "AWS_ENDPOINT_URL_S3": self.urls["s3"],
            "AWS_ACCESS_KEY_ID": creds["access_key"],
            "AWS_SECRET_ACCESS_KEY": creds["secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "ALIGNFLOW_S3_BUCKET": "alignflow",
        }

    # ---- services --------------------------------------------------------------------------------------

    def services(self) -> list[Service]:
        bin_dir = Path(sys.executable).parent
        creds = self.credentials()
        s3_config = self.dir / "s3-identities.json"
        weed = [str(bin_dir / "weed"), "mini", f"-dir={self.dir / 's3'}", f"-ip={HOST}", f"-ip.bind={HOST}",
                f"-s3.config={s3_config}", f"-bucket={','.join(BUCKETS)}", f"-s3.port={self.ports.s3}",
                *[f"-{flag}={port}" for flag, port in self.ports.weed_internal().items()]]
        mlflow = [str(bin_dir / "mlflow"), "server", "--host", HOST, "--port", str(self.ports.mlflow),
                  "--backend-store-uri", f"sqlite:///{self.dir / 'mlflow' / 'mlflow.db'}",
                  "--artifacts-destination", "s3://mlflow/artifacts", "--workers", "1"]
        prefect = [str(bin_dir / "prefect"), "server", "start", "--host", HOST, "--port", str(self.ports.prefect),
                   "--analytics-off"]
        # AWS_RETRY_MODE/AWS_MAX_ATTEMPTS: the MLflow server's own S3 client retries with backoff too, so an S3
        # restart under a running pipeline delays artifact uploads instead of failing them.
        env = {**self.client_env(), "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "10",
               "PREFECT_HOME": str(self.dir / "prefect"),
               "PREFECT_UI_API_URL": self.urls["prefect_api"], "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        server_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
        services = [
            Service("s3", weed, env, self.s3_healthy, prepare=lambda: write_s3_identities(s3_config, creds)),
            Service("mlflow", mlflow, env, lambda: http_ok(self.urls["mlflow"] + "/health"),
                    prepare=lambda: (self.dir / "mlflow").mkdir(parents=True, exist_ok=True)),
            Service("prefect", prefect, server_env, lambda: http_ok(self.urls["prefect_api"] + "/health")),
        ]
        for pool in POOLS:
            cmd = [str(bin_dir / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
                   "--name", f"alignflow-{pool}"]
            services.append(Service(f"worker-{pool}", cmd, env, lambda p=pool: self.worker_online(p)))
        arena = [str(bin_dir / "alignflow"), "arena", "serve", "--host", HOST, "--port", str(self.ports.arena),
                 "--db", f"sqlite:///{self.dir / 'arena' / 'arena.db'}", "--tracking-uri", self.urls["mlflow"],
                 "--threads", "1"]
        services.append(Service("arena", arena, {**env, "OMP_NUM_THREADS": "1"},
                                lambda: http_ok(self.urls["arena"] + "/health"),
                                prepare=lambda: (self.dir / "arena").mkdir(parents=True, exist_ok=True)))
        return services

    def running(self) -> bool:
        """True when this stack was started and its Prefect and MLflow servers answer."""
        return bool(self.read_state()["services"]) and http_ok(self.urls["mlflow"] + "/health") and http_ok(
            self.urls["prefect_api"] + "/health")

    def s3_healthy(self) -> bool:
        try:
            client = s3_client(self.client_env())
            return all(client.head_bucket(Bucket=b) is not None for b in BUCKETS)
        except Exception:
            return False

    def warm_buckets(self) -> None:
        """Write and delete a small object in each bucket: SeaweedFS allocates a bucket's volume on its first
        write (~0.2 s each, measured), which otherwise lands in the first pipeline run's critical path."""
        client = s3_client(self.client_env())
        for bucket in BUCKETS:
            client.put_object(Bucket=bucket, Key=".alignflow-warm-up", Body=b"ok")
            client.delete_object(Bucket=bucket, Key=".alignflow-warm-up")

    def worker_online(self, pool: str) -> bool:
        body = json.dumps({}).encode()
        url = f"{self.urls['prefect_api']}/work_pools/{pool}/workers/filter"
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=3) as resp:
                return any(w.get("status") == "ONLINE" for w in json.loads(resp.read()))
        except Exception:
            return False

    # ---- verbs -----------------------------------------------------------------------------------------

    def up(self, timeout: float = 180.0, echo: Callable[[str], None] = print) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = self.read_state()
        self.write_state(state)
        for svc in self.services():
            if svc.healthy():
                ours = state["services"].get(svc.name)
                if ours and group_alive(int(ours["pgid"])):
                    echo(f"{svc.name}: already up")
                    continue
                # something answers on this stack's port, but this stack did not start it (another stack's
                # service on a default port, say): running "beside" it would silently use the other one
                raise StackError(f"{svc.name}: {self.urls.get(svc.name, 'its port')} already answers, but not "
                                 f"from this stack ({self.dir}); choose other ports (alignflow stack up --help) or "
                                 f"stop the other stack")
            if svc.name in state["services"]:
                stop_group(state["services"][svc.name]["pgid"])
            check_port_free(svc, self)
            if svc.prepare:
                svc.prepare()
            state["services"][svc.name] = svc.start(self.dir / "logs")
            self.write_state(state)
            wait_healthy(svc, timeout, self.dir / "logs" / f"{svc.name}.log")
            if svc.name == "s3":
                self.warm_buckets()
            echo(f"{svc.name}: up")

    def down(self, wipe: bool = False, echo: Callable[[str], None] = print) -> None:
        state = self.read_state()
        for name, info in reversed(list(state["services"].items())):
            stopped = stop_group(info["pgid"])
            echo(f"{name}: {'stopped' if stopped else 'not running'}")
        state["services"] = {}
        self.write_state(state)
        if wipe:
            for sub in ("s3", "mlflow", "prefect", "arena", "logs"):
                shutil.rmtree(self.dir / sub, ignore_errors=True)
            echo(f"wiped data under {self.dir}")

    def status(self) -> dict[str, dict[str, object]]:
        urls = {"s3": self.urls["s3"], "mlflow": self.urls["mlflow"], "prefect": self.urls["prefect"],
                "arena": self.urls["arena"]}
        out = {}
        for svc in self.services():
            out[svc.name] = {"healthy": svc.healthy(), "url": urls.get(svc.name, f"pool {svc.name[7:]}")}
        return out

    def read_state(self) -> dict:
        path = self.dir / "stack.json"
        state = json.loads(path.read_text()) if path.is_file() else {}
        return {"ports": asdict(self.ports), "services": state.get("services", {})}

    def write_state(self, state: dict) -> None:
        tmp = self.dir / "stack.json.tmp"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.dir / "stack.json")


@dataclass
class Service:
    name: str
    cmd: list[str]
    env: dict[str, str]
    healthy: Callable[[], bool]
    prepare: Callable[[], object] | None = None

    def start(self, log_dir: Path) -> dict[str, object]:
        """Start in a new session (its own process group), output to logs/<name>.log."""
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **self.env}, start_new_session=True)
        log.close()
        return {"pid": proc.pid, "pgid": proc.pid, "cmd": self.cmd[:3]}


def write_s3_identities(path: Path, creds: dict[str, str]) -> None:
    ident = {"identities": [{"name": "alignflow", "credentials": [
        {"accessKey": creds["access_key"], "secretKey": creds["secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(ident, fh)


def s3_client(env: dict[str, str]):  # noqa: ANN201 - boto3 client type
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=env["MLFLOW_S3_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"],
                        config=Config(signature_version="s3v4", retries={"max_attempts": 2},
                                      connect_timeout=2, read_timeout=10))


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return 200 <= resp.status < 300
    except Exception:
        return False


def check_port_free(svc: Service, stack: Stack) -> None:
    ports = {"s3": [stack.ports.s3, *stack.ports.weed_internal().values()], "mlflow": [stack.ports.mlflow],
             "prefect": [stack.ports.prefect], "arena": [stack.ports.arena]}.get(svc.name, [])
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                raise StackError(f"{svc.name}: port {port} on {HOST} is taken by another program; choose other "
                                 f"ports (alignflow stack up --help) or stop that program")


def wait_healthy(svc: Service, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if svc.healthy():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-1500:] if log.is_file() else ""
    raise StackError(f"{svc.name} did not become healthy within {timeout:.0f}s; log {log}:\n{tail}")


def stop_group(pgid: int, grace: float = 10.0) -> bool:
    """SIGTERM the process group, then SIGKILL after `grace` seconds. False if it was not running."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pgid)
        if not group_alive(pgid):
            return True
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    time.sleep(0.2)
    reap(pgid)
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running. Exited members that nobody has reaped yet
    (zombies, whose parent is a container's init that does not reap) do not count."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after "(comm)": state ppid pgrp ...
            return True
    return False


def reap(pgid: int) -> None:
    """Collect exited members of the group if they are our children (a test process starts them itself)."""
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback (for tests and side-by-side stacks)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports
