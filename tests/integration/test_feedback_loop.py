"""Against a real Prefect server (the test harness): votes posted to the arena's HTTP API reach the server as
`alignflow.arena.vote` events (read back through /api/events/filter), and the `feedback-round` deployment's
automation, as `flows/deploy.py` registers it, creates a flow run once the threshold of votes arrived; when it
fires again while that round runs, the server cancels the second round as it would start.

Not run here: the flow run itself (no worker picks it up; tests/integration/test_pipeline.py and the unit tests
of flows/feedback.py cover the round's parts)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alignment.config import PipelineConfig
from arena.app import ArenaSettings, create_app
from arena.store import open_store, sqlite_url
from tests.arena.conftest import FakeBackend, fake_streamer

pytestmark = [pytest.mark.integration, pytest.mark.slow]
POOL = "feedback-test"
WINDOW_S = 20


def vote(client: TestClient, choice: str) -> str:
    with client.stream("POST", "/api/comparisons", json={"model_a": "m/2", "model_b": "m/1",
                                                         "prompt": "Private words: the cow?", "annotator": "ann"}) as r:
        assert r.status_code == 200
        comparison_id = None
        for line in r.iter_lines():
            if '"start"' in line:
                comparison_id = line.split('"comparison_id": "')[1].split('"')[0]
    r = client.post("/api/votes", json={"comparison_id": comparison_id, "choice": choice, "annotator": "ann"})
    assert r.status_code == 200 and r.json()["status"] == "recorded", r.text
    return comparison_id


def api_post(path: str, body: dict[str, Any]) -> Any:
    import httpx
    from prefect.settings import PREFECT_API_URL

    r = httpx.post(PREFECT_API_URL.value().rstrip("/") + path, json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def wait_for(what: str, fetch, ready, timeout: float = 90) -> Any:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        found = fetch()
        if ready(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {timeout} s; last: {found!r}")
        time.sleep(1.0)


def test_arena_votes_reach_prefect_and_the_trigger_starts_a_feedback_round(prefect_api, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.events.worker import EventsWorker

    from flows.deploy import deploy_feedback

    with get_client(sync_client=True) as pc:
        try:
            pc.create_work_pool(WorkPoolCreate(name=POOL, type="process"))
        except Exception:  # noqa: BLE001 - already there from an earlier test in this session
            pass
    db = sqlite_url(tmp_path / "arena.db")
    config = PipelineConfig.model_validate({"run": {"output_dir": str(tmp_path / "runs")}})
    # a short window: a reactive trigger fires as soon as it has 3 votes, then ignores votes for the rest of its
    # window (Prefect's buckets), and the second half of this test needs it to fire again
    deployment_id = deploy_feedback(pool=POOL, votes=3, window=WINDOW_S,
                                    parameters={"config": config.model_dump(mode="json"), "arena_db": db})

    backend = FakeBackend()
    client = TestClient(create_app(open_store(db), backend, ArenaSettings(arena_id="itest"),
                                   streamer=fake_streamer(backend), rng=random.Random(1)))  # the default emitter
    ids = [vote(client, c) for c in ("left", "right", "tie")]
    EventsWorker.drain_all(timeout=30, at_exit=False)

    body = {"filter": {"event": {"name": ["alignflow.arena.vote"]},
                       "resource": {"id": ["alignflow.arena.itest"]}}, "limit": 50}
    events = wait_for("3 vote events", lambda: api_post("/events/filter", body)["events"], lambda e: len(e) >= 3)
    assert len(events) == 3
    for ev in events:
        related = {r["prefect.resource.role"]: r["prefect.resource.id"] for r in ev["related"]}
        assert related == {"model-a": "alignflow.model.m.2", "model-b": "alignflow.model.m.1"}
        assert set(ev["payload"]) == {"choice", "winner"}
        assert "cow" not in str(ev) and "ann" not in str(ev["payload"])
    assert sorted(e["payload"]["choice"] for e in events)[-1] == "tie"
    assert len(set(ids)) == 3

    runs = wait_for("a flow run of feedback-round/arena-votes started by its automation",
                    lambda: api_post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}}}),
                    lambda r: len(r) >= 1)
    assert len(runs) == 1
    assert runs[0]["parameters"]["arena_db"] == db  # the deployment's parameters
    automations = api_post("/automations/filter", {})
    (mine,) = [a for a in automations if a["name"].startswith("feedback-round/arena-votes")]
    assert mine["trigger"]["threshold"] == 3 and mine["trigger"]["expect"] == ["alignflow.arena.vote"]

    # the trigger fires again while the first round runs: the second round is cancelled when it would start
    # (the deployment's concurrency limit of 1, CANCEL_NEW, enforced by the server when a run goes Pending)
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Cancelled, Pending, Running

    time.sleep(WINDOW_S + 1)  # the first window is over: the trigger counts again
    for c in ("left", "left", "right"):
        vote(client, c)
    EventsWorker.drain_all(timeout=30, at_exit=False)
    runs = wait_for("a second flow run started by the automation",
                    lambda: api_post("/flow_runs/filter", {"deployments": {"id": {"any_": [deployment_id]}},
                                                           "sort": "EXPECTED_START_TIME_ASC"}),
                    lambda r: len(r) >= 2)
    first, second = sorted(runs, key=lambda r: r["created"])[:2]
    with get_client(sync_client=True) as pc:
        assert pc.set_flow_run_state(first["id"], Pending()).status == SetStateStatus.ACCEPT
        assert pc.set_flow_run_state(first["id"], Running()).status == SetStateStatus.ACCEPT
        refused = pc.set_flow_run_state(second["id"], Pending())
        assert refused.status == SetStateStatus.REJECT and refused.state.type == StateType.CANCELLED, refused
        assert "concurrency limit" in (refused.state.message or ""), refused.state
        pc.set_flow_run_state(first["id"], Cancelled(), force=True)  # frees the slot


def test_a_feedback_round_trains_the_champion_on_the_votes_and_keeps_the_human_gate(prefect_api,
                                                                                      tmp_path: Path) -> None:
    """The round in process: 30 votes -> pairs (held-out split from them) -> the registered champion trained
    -> gates -> a new version; with the human gate on, `champion` stays on the version it trained from."""
    from mlflow import MlflowClient

    from alignment.config import load_config
    from alignment.instruct import quicktask
    from flows.feedback import feedback_round
    from tests.arena.registry_util import register_tiny
    from tests.integration.test_pipeline import NO_QUALITY_GATES, SMALL

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert register_tiny(uri, tmp_path / "registry", "fb-round", seed=1, champion=True) == "1"
    store = open_store(sqlite_url(tmp_path / "arena.db"))
    # the quickstart task's questions (what the arena offers as held-out prompts of a quickstart champion): the
    # preset's judge, a program, only knows those
    for i, p in enumerate(quicktask.all_prompts()[:30]):
        cid = store.create_comparison(annotator="ann", model_a="fb-round/1", model_b="fb-round/1/reference",
                                      left_model="fb-round/1", right_model="fb-round/1/reference",
                                      prompt=[{"role": "user", "content": p.text}], prompt_source="heldout",
                                      settings={})
        store.complete_comparison(cid, quicktask.good_answer(p), "Sorry, I do not know.")
        store.record_vote(cid, "left" if i % 5 else "tie", annotator="ann")
    cfg = load_config("configs/quickstart.yaml", [
        *SMALL, *NO_QUALITY_GATES, "eval.benchmarks.enabled=false", f"run.output_dir={tmp_path / 'runs'}",
        "promotion.max_degeneration_increase=null", "promotion.min_length_ratio=null", "promotion.max_kl=null",
        "promotion.max_contamination=null",  # every automated gate passes: only the human gate holds it back
        f"tracking.uri={uri}", "promotion.model_name=fb-round", "promotion.min_human_win_rate=0.5",
        "data.heldout_fraction=0.2"])
    result = feedback_round(cfg, arena_db=sqlite_url(tmp_path / "arena.db"), min_pairs=8)

    assert result["votes"]["pairs"] == 24 and result["votes"]["ties"] == 6
    assert result["trained_from"]["version"] == "1" and result["registered_version"] == "2"
    summary = json.loads(Path(result["summary_path"]).read_text())
    assert summary["reference_model"] == result["trained_from"]["path"]  # compared with the champion itself
    human = result["human_gate"]
    assert result["aliases"] == ["candidate", "champion"]  # the pipeline's gates alone made it champion ...
    assert human["passed"] is False and human["champion_restored_to"] == "1"  # ... the human gate did not
    client = MlflowClient(uri)
    assert str(client.get_model_version_by_alias("fb-round", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("fb-round", "candidate").version) == "2"
    tags = client.get_model_version("fb-round", "2").tags
    assert tags["gate.human_votes.passed"] == "false" and tags["gates.passed"] == "false"
