"""Fixtures for the task-layer tests: a pipeline run context on a SQLite MLflow store (artifacts kept under
the test's folder). `s3_env` (the S3 server wired into the environment) is in tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from tasks.tracking import RunContext


@pytest.fixture
def run_context(tmp_path: Path) -> RunContext:
    """A pipeline's parent run in a SQLite MLflow store under tmp_path, as a stage sees it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("tasks-test", artifact_location=(tmp_path / "artifacts").as_uri())
    return RunContext(tracking_uri=uri, experiment_id=experiment_id, experiment_name="tasks-test",
                      parent_run_id=client.create_run(experiment_id).info.run_id, output_dir=str(tmp_path))
