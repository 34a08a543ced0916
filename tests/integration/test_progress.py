"""Training progress reaches the Prefect API from the background thread that sends the updates (it runs in
the caller's context, where the harness's API address lives)."""

from __future__ import annotations

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client

from tasks.stages import _PROGRESS_UPDATES, progress_reporter

pytestmark = [pytest.mark.integration]


@task
def fake_training() -> str:
    report = progress_reporter("progress-test training")
    for step in range(1, 11):
        report(step, 10, {"loss": 1.0 / step})
    _PROGRESS_UPDATES.submit(lambda: None).result()  # the queued updates are sent
    return "done"


@flow
def progress_flow() -> str:
    return fake_training()


def test_progress_updates_reach_the_api(prefect_api) -> None:
    assert progress_flow() == "done"
    with get_client(sync_client=True) as client:
        ours = [a for a in client.read_artifacts(limit=50) if a.description == "progress-test training"]
    assert [a.data for a in ours] == [100]
