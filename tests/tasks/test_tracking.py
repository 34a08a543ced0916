"""Stage runs off the critical path (tasks/tracking.py + tasks/background.py): opening a stage's MLflow run
and logging to it never waits on the tracking server, yet everything lands, in order, with the time the
stage really started."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from mlflow import MlflowClient

from tasks.background import background_tracking, submit
from tasks.tracking import RunContext, StageRun, stage_run


def test_stage_run_opens_without_waiting_and_keeps_its_start_time(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("tracking-test", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id).info.run_id
    ctx = RunContext(tracking_uri=uri, experiment_id=experiment_id, experiment_name="tracking-test",
                     parent_run_id=parent, output_dir=str(tmp_path))
    busy = threading.Event()
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with background_tracking():
        submit(busy.wait)  # the tracking thread is busy (a model upload, say)
        started = int(time.time() * 1000)
        with stage_run(ctx, "sft", {"sft.lr": 0.1}) as run:
            run.set_tags({"alignflow.note": "yes"})
            run.log_metrics({"loss": 1.5}, step=1)
            run.log_artifact(artifact, "notes")
            assert isinstance(run, StageRun) and not run._created.done()  # nothing waited on the server
            time.sleep(0.2)  # the stage works meanwhile
        busy.set()
        run_id = run.run_id
    got = client.get_run(run_id)
    assert started <= got.info.start_time < started + 150  # when the stage started, not when it was sent
    assert got.info.status == "FINISHED" and got.info.end_time >= started + 200
    assert got.data.tags["mlflow.parentRunId"] == parent and got.data.tags["alignflow.stage"] == "sft"
    assert got.data.params == {"sft.lr": "0.1"} and got.data.tags["alignflow.note"] == "yes"
    assert got.data.metrics == {"loss": 1.5}
    assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/note.txt"]


def test_outside_a_pipeline_run_a_stage_run_is_created_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("tracking-test", artifact_location=(tmp_path / "artifacts").as_uri())
    ctx = RunContext(tracking_uri=uri, experiment_id=experiment_id, experiment_name="tracking-test",
                     parent_run_id=client.create_run(experiment_id).info.run_id, output_dir=str(tmp_path))
    run = StageRun(ctx, "evaluate")
    assert run._created.done() and client.get_run(run.run_id).info.run_name == "evaluate"
    run.logger.close()
