"""The arena announces each recorded vote as a Prefect event (the two versions and which won) and each rating
(the rated version and the rating), nothing a person typed or who they are; a failing emitter never loses a vote, and without a Prefect API nothing is sent."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict

import pytest
from fastapi.testclient import TestClient

from arena.app import ArenaSettings, create_app
from arena.events import AlignflowEvent, arena_id, emit_to_prefect
from arena.store import Store
from tests.arena.conftest import FakeBackend, fake_streamer

PROMPT = "What sound does a cow make? my secret is hunter2"
NOTE = "left one is nicer (sent from alice@example.org)"


def client_for(store: Store, emit, backend: FakeBackend | None = None, **settings) -> TestClient:  # noqa: ANN001
    backend = backend or FakeBackend()
    return TestClient(create_app(store, backend, ArenaSettings(**settings), streamer=fake_streamer(backend),
                                 rng=random.Random(0), emit=emit))


def shown(client: TestClient, annotator: str = "alice", a: str = "m/2", b: str = "m/2/reference") -> str:
    with client.stream("POST", "/api/comparisons", json={"model_a": a, "model_b": b, "prompt": PROMPT,
                                                         "annotator": annotator}) as r:
        assert r.status_code == 200
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["event"] == "done"
    return events[0]["comparison_id"]


def test_a_vote_is_announced_with_the_versions_and_the_winner_only(store: Store) -> None:
    sent: list[AlignflowEvent] = []
    client = client_for(store, sent.append, arena_id="test-arena")
    cid = shown(client)
    comp = store.comparison(cid)
    r = client.post("/api/votes", json={"comparison_id": cid, "choice": "left", "annotator": "alice", "note": NOTE})
    assert r.status_code == 200 and r.json()["status"] == "recorded"
    assert len(sent) == 1
    ev = sent[0]
    assert ev.event == "alignflow.arena.vote"
    assert ev.resource["prefect.resource.id"] == "alignflow.arena.test-arena"
    assert [(x["prefect.resource.id"], x["prefect.resource.role"]) for x in ev.related] == [
        ("alignflow.model.m.2", "model-a"), ("alignflow.model.m.2.reference", "model-b")]
    assert ev.related[1]["alignflow.model.reference"] == "true"
    winner = comp["left_model"]
    assert ev.payload == {"choice": "a" if winner == "m/2" else "b", "winner": winner}
    text = json.dumps(asdict(ev), default=str)
    for private in ("cow", "hunter2", "alice", "example.org", "moo", "quack", "nicer"):
        assert private not in text, private


def test_a_rating_is_announced_with_the_rated_version_and_the_rating_only(store: Store) -> None:
    sent: list[AlignflowEvent] = []
    client = client_for(store, sent.append, arena_id="test-arena")
    cid = shown(client)
    rated = store.comparison(cid)["right_model"]
    body = {"comparison_id": cid, "side": "right", "rating": "bad", "annotator": "alice", "submission_id": "r"}
    for _ in range(2):  # the second is a duplicate: not announced again
        assert client.post("/api/ratings", json=body).status_code == 200
    [ev] = sent
    assert ev.event == "alignflow.arena.rating" and ev.payload == {"rating": "bad"}
    assert ev.resource["prefect.resource.id"] == "alignflow.arena.test-arena"
    assert [(x["prefect.resource.id"], x["prefect.resource.role"]) for x in ev.related] == [
        ("alignflow.model." + rated.replace("/", "."), "rated")]
    text = json.dumps(asdict(ev), default=str)
    for private in ("cow", "hunter2", "alice", "moo", "quack"):
        assert private not in text, private


def test_ties_name_no_winner_and_a_duplicate_is_not_announced_twice(store: Store) -> None:
    sent: list[AlignflowEvent] = []
    client = client_for(store, sent.append)
    cid = shown(client)
    for _ in range(2):
        assert client.post("/api/votes", json={"comparison_id": cid, "choice": "tie", "annotator": "alice",
                                               "submission_id": "s1"}).status_code == 200
    assert [e.payload for e in sent] == [{"choice": "tie", "winner": None}]
    # without an arena id the database URL names the arena, hashed (it can hold a password)
    assert sent[0].resource["prefect.resource.id"] == "alignflow.arena." + arena_id(
        store.engine.url.render_as_string(hide_password=True))


def test_a_failing_emitter_never_breaks_a_vote(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_ev: AlignflowEvent) -> None:
        raise ConnectionError("Prefect is down")

    client = client_for(store, broken)
    cid = shown(client)
    with caplog.at_level(logging.WARNING, logger="alignflow.events"):
        r = client.post("/api/votes", json={"comparison_id": cid, "choice": "right", "annotator": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "recorded"
    assert [v["comparison_id"] for v in store.decided()] == [cid]
    assert "alignflow.arena.vote" in caplog.text and "Prefect is down" in caplog.text


def test_without_a_prefect_api_nothing_is_sent(monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    import prefect.events
    from prefect.settings import PREFECT_API_URL, temporary_settings

    def must_not_run(**_kw: object) -> None:
        raise AssertionError("emit_event called without an API (it would start a temporary server)")

    monkeypatch.setattr(prefect.events, "emit_event", must_not_run)
    with temporary_settings(restore_defaults={PREFECT_API_URL}), caplog.at_level(logging.DEBUG, "alignflow.events"):
        emit_to_prefect(AlignflowEvent("alignflow.arena.vote", {"prefect.resource.id": "alignflow.arena.x"}))
    assert "not sent" in caplog.text


def test_the_arena_id_hides_the_database_password() -> None:
    assert arena_id("postgresql://arena:s3cret@db/arena") == arena_id("postgresql://arena:other@db/arena")
    assert arena_id("sqlite:////a/arena.db") != arena_id("sqlite:////b/arena.db")
