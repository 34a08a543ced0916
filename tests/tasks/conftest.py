"""Fixtures for the task-layer tests: the S3 server wired into the environment, and a pipeline run context
on a SQLite MLflow store (artifacts kept under the test's folder)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.tracking import RunContext
from tests.s3fixture import S3Server


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """The session's S3 server as this process's S3 (endpoint, keys, bucket), with a fresh download cache."""
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALIGNFLOW_S3_BUCKET", s3_server.bucket)
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))
    return s3_server


@pytest.fixture
def run_context(tmp_path: Path) -> RunContext:
    """A pipeline's parent run in a SQLite MLflow store under tmp_path, as a stage sees it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("tasks-test", artifact_location=(tmp_path / "artifacts").as_uri())
    return RunContext(tracking_uri=uri, experiment_id=experiment_id, experiment_name="tasks-test",
                      parent_run_id=client.create_run(experiment_id).info.run_id, output_dir=str(tmp_path))
