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


def test_stage_run_opens_without_waiting_and_keeps_its_start_time(run_context: RunContext, tmp_path: Path) -> None:
    ctx, parent = run_context, run_context.parent_run_id
    client = MlflowClient(ctx.tracking_uri)
    busy = threading.Event()
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    with background_tracking():
        submit(busy.wait)  # the tracking thread is busy (a model upload, say)
        started = int(time.time() * 1000)
        with stage_run(ctx, "sft", {"sft.lr": 0.1}) as run:
            opened = int(time.time() * 1000)
            run.set_tags({"alignflow.note": "yes"})
            run.log_metrics({"loss": 1.5}, step=1)
            run.log_artifact(artifact, "notes")
            assert isinstance(run, StageRun) and not run._created.done()  # nothing waited on the server
            time.sleep(0.2)  # the stage works meanwhile
        busy.set()
        run_id = run.run_id
    got = client.get_run(run_id)
    assert started <= got.info.start_time <= opened  # when the stage started, not when the tracker got to it
    assert got.info.status == "FINISHED" and got.info.end_time >= started + 200
    assert got.data.tags["mlflow.parentRunId"] == parent and got.data.tags["alignflow.stage"] == "sft"
    assert got.data.params == {"sft.lr": "0.1"} and got.data.tags["alignflow.note"] == "yes"
    assert got.data.metrics == {"loss": 1.5}
    assert [f.path for f in client.list_artifacts(run_id, "notes")] == ["notes/note.txt"]


def test_outside_a_pipeline_run_a_stage_run_is_created_at_once(run_context: RunContext) -> None:
    run = StageRun(run_context, "evaluate")
    assert run._created.done() and MlflowClient(run_context.tracking_uri).get_run(run.run_id).info.run_name == "evaluate"
    run.logger.close()
