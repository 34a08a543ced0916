"""Service preflight: before any training, check every service this run will use — the Prefect API, the
MLflow tracking server, S3 with its credentials — and the free disk space. A failure names the service,
its address and how to fix it, within a few seconds (each probe times out after PROBE_TIMEOUT)."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from alignment.config import PipelineConfig
from storage.s3 import ENDPOINT_VARIABLES
from tasks.tracking import resolve_tracking

PROBE_TIMEOUT = 3.0
MIN_FREE_BYTES = 1 << 30


class ServiceError(RuntimeError):
    """A service the run needs is missing, unreachable or refuses us; the message says which and the fix."""


def probe_http(url: str) -> str | None:
    """None when `url` answers 2xx; else a short reason."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as resp:
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        return str(getattr(err, "reason", err))


def check_prefect() -> None:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return  # no server configured: the flow starts a temporary one itself
    problem = probe_http(url.rstrip("/") + "/health")
    if problem:
        raise ServiceError(f"preflight: Prefect API at {url} is not reachable ({problem}). Fix: start it "
                           "(`alignflow stack up`), correct PREFECT_API_URL, or unset it to use a temporary "
                           "local server.")


def check_mlflow(cfg: PipelineConfig) -> None:
    uri, _ = resolve_tracking(cfg)
    if uri.startswith(("http://", "https://")):
        problem = probe_http(uri.rstrip("/") + "/health")
        if problem:
            raise ServiceError(f"preflight: MLflow tracking server at {uri} is not reachable ({problem}). "
                               "Fix: start it (`alignflow stack up`), or correct tracking.uri / "
                               "MLFLOW_TRACKING_URI.")
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not os.access(existing, os.W_OK):
            raise ServiceError(f"preflight: MLflow store {uri}: {existing} is not writable. Fix: choose "
                               "another run.output_dir or tracking.uri.")


def check_s3(cfg: PipelineConfig | None = None) -> None:
    """When this run has an S3 endpoint and bucket (the local stack or production): they answer and take our
    keys. Training on a work pool, or with training.s3_checkpoints, needs them."""
    endpoint = next((os.environ[v] for v in ENDPOINT_VARIABLES if os.environ.get(v)), None)
    bucket = os.environ.get("ALIGNFLOW_S3_BUCKET")
    if not endpoint or not bucket:
        needs = cfg is not None and (cfg.training.pool or cfg.training.s3_checkpoints)
        if needs:
            field = "training.pool" if cfg.training.pool else "training.s3_checkpoints"
            raise ServiceError(f"preflight: {field} needs S3 (stage inputs, results and checkpoints travel "
                               "through it), and this run has none. Fix: start the local stack (`alignflow stack "
                               "up`) or set AWS_ENDPOINT_URL_S3, ALIGNFLOW_S3_BUCKET and the AWS keys.")
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        config=Config(signature_version="s3v4", connect_timeout=PROBE_TIMEOUT, read_timeout=PROBE_TIMEOUT,
                      retries={"max_attempts": 1}))
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("403", "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            raise ServiceError(f"preflight: S3 at {endpoint} refused the credentials for bucket {bucket!r} "
                               f"({code}). Fix: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (for the local "
                               "stack: `alignflow stack env`).") from None
        raise ServiceError(f"preflight: S3 at {endpoint}: bucket {bucket!r} is not usable ({code}). Fix: "
                           "create it or set ALIGNFLOW_S3_BUCKET.") from None
    except BotoCoreError as err:
        raise ServiceError(f"preflight: S3 at {endpoint} is not reachable ({type(err).__name__}). Fix: start "
                           "it (`alignflow stack up`) or correct AWS_ENDPOINT_URL_S3.") from None


def check_disk(cfg: PipelineConfig, min_free: int = MIN_FREE_BYTES) -> None:
    out = Path(cfg.run.output_dir).resolve()
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < min_free:
        raise ServiceError(f"preflight: only {free / 2**30:.2f} GiB free under {existing} (run.output_dir); "
                           f"at least {min_free / 2**30:.1f} GiB are needed. Fix: free space or choose another "
                           "run.output_dir.")


def check_services(cfg: PipelineConfig) -> float:
    """Run every check; returns the seconds it took. Raises ServiceError on the first failure."""
    started = time.monotonic()
    check_disk(cfg)
    check_prefect()
    check_mlflow(cfg)
    check_s3(cfg)
    return time.monotonic() - started
