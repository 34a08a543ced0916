"""The arena's web app with a fake model backend: blind sides, streamed answers, votes, refusals (prompt too
long, unknown version, a model that fails to load, a vote for a comparison never shown, duplicates), markup
escaped, and basic auth where users are configured."""

from __future__ import annotations

import json
import random

import pytest
from fastapi.testclient import TestClient

from arena.app import ArenaSettings, create_app
from arena.generation import Sampling
from arena.store import Store
from tests.arena.conftest import FakeBackend, fake_streamer


def client_for(store: Store, backend: FakeBackend | None = None, **settings) -> tuple[TestClient, FakeBackend]:
    backend = backend or FakeBackend()
    app = create_app(store, backend, ArenaSettings(**settings), streamer=fake_streamer(backend), rng=random.Random(1))
    return TestClient(app), backend


def ask(client: TestClient, prompt: str = "What sound does a cow make?", **body) -> list[dict]:
    resp = client.post("/api/comparisons", json={"model_a": "m/2", "model_b": "m/2/reference", "prompt": prompt,
                                                  "annotator": "ann", **body})
    assert resp.status_code == 200, resp.text
    return [json.loads(line) for line in resp.text.splitlines()]


def test_page_answers_stream_side_by_side_and_a_vote_reveals_the_models(store: Store) -> None:
    client, _ = client_for(store)
    page = client.get("/")
    assert page.status_code == 200 and "Answer 1" in page.text and "max_new_tokens 64" in page.text
    events = ask(client)
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    deltas = [e for e in events if e["event"] == "delta"]
    assert {e["side"] for e in deltas} == {"left", "right"}
    done = events[-1]
    assert {done["left"], done["right"]} == {"The cow says moo.", "The cow says quack."}
    assert "m/2" not in json.dumps(events)  # blind: no version in what the page gets before the vote
    vote = client.post("/api/votes", json={"comparison_id": done["comparison_id"], "choice": "left",
                                           "annotator": "ann", "note": "n"})
    assert vote.status_code == 200 and vote.json()["status"] == "recorded"
    left_label = vote.json()["reveal"]["left"]["label"]
    [row] = store.decided()
    assert row["left_answer"] == done["left"] and row["settings"]["max_new_tokens"] == 64
    assert ("reference" in left_label) == (row["winner_model"] == "m/2/reference")
    stats = client.get("/api/stats").json()["pairs"]
    assert {(r["model"], r["wins"] + r["losses"]) for r in stats} == {("m/2", 1), ("m/2/reference", 1)}


def test_sides_are_shuffled(store: Store) -> None:
    client, _ = client_for(store)
    lefts = set()
    for _ in range(12):
        ask(client)
    lefts = {c["left_model"] for c in store.list_comparisons()}
    assert lefts == {"m/2", "m/2/reference"}


def test_bad_requests_are_refused_with_a_message_and_nothing_written(store: Store) -> None:
    backend = FakeBackend(broken={"m/9"})
    client, _ = client_for(store, backend, max_prompt_chars=40)
    cases = [
        ({"prompt": "x" * 41}, 400, "at most 40"),
        ({"prompt": "   "}, 400, "type a prompt"),
        ({"model_b": "m/7"}, 404, "not registered"),
        ({"model_b": "m/9"}, 502, "failed to load"),
        ({"model_b": "m/2"}, 400, "two different models"),
        ({"annotator": ""}, 400, "annotator name"),
        ({"model_b": "not-an-id"}, 404, "not a model id"),
    ]
    for change, status, message in cases:
        body = {"model_a": "m/2", "model_b": "m/2/reference", "prompt": "hi", "annotator": "ann", **change}
        resp = client.post("/api/comparisons", json=body)
        assert resp.status_code == status, (change, resp.text)
        assert message in resp.json()["error"], (change, resp.json())
    assert store.list_comparisons() == []
    for body, status, message in [
        ({"comparison_id": "never", "choice": "left"}, 404, "no comparison"),
    ]:
        resp = client.post("/api/votes", json={"annotator": "ann", **body})
        assert resp.status_code == status and message in resp.json()["error"]


def test_vote_never_shown_duplicate_and_other_annotator(store: Store) -> None:
    client, _ = client_for(store)
    pending = store.create_comparison(annotator="ann", model_a="m/2", model_b="m/1", left_model="m/1",
                                      right_model="m/2", prompt=[{"role": "user", "content": "q"}],
                                      prompt_source="typed", settings={})
    resp = client.post("/api/votes", json={"comparison_id": pending, "choice": "left", "annotator": "ann"})
    assert resp.status_code == 409 and "never shown" in resp.json()["error"]
    cid = ask(client)[-1]["comparison_id"]
    body = {"comparison_id": cid, "choice": "tie", "annotator": "ann", "submission_id": "s"}
    assert client.post("/api/votes", json=body).json()["status"] == "recorded"
    again = client.post("/api/votes", json=body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate" and "nothing changed" in again.json()["message"]
    other = client.post("/api/votes", json={**body, "choice": "left", "submission_id": "t"})
    assert other.status_code == 409 and "already has a vote" in other.json()["error"]
    thief = client.post("/api/votes", json={**body, "annotator": "mallory"})
    assert thief.status_code == 403 and "shown to ann" in thief.json()["error"]
    assert len(store.decided()) == 1


def test_rating_an_answer_over_http_refusals_and_duplicates(store: Store) -> None:
    client, _ = client_for(store)
    cid = ask(client)[-1]["comparison_id"]
    body = {"comparison_id": cid, "side": "left", "rating": "good", "annotator": "ann", "submission_id": "g"}
    first = client.post("/api/ratings", json=body)
    assert first.status_code == 200 and first.json()["status"] == "recorded"
    assert first.json()["rating"]["side"] == "left" and first.json()["rating"]["rating"] == "good"
    assert client.post("/api/ratings", json=body).json()["status"] == "duplicate"
    other = client.post("/api/ratings", json={**body, "rating": "bad", "submission_id": "b"})
    assert other.status_code == 409 and "already rated good" in other.json()["error"]
    wrong = client.post("/api/ratings", json={**body, "side": "middle"})
    assert wrong.status_code == 400 and "side must be one of left, right" in wrong.json()["error"]
    thief = client.post("/api/ratings", json={**body, "side": "right", "annotator": "mallory"})
    assert thief.status_code == 403 and "rate answers on your own comparisons" in thief.json()["error"]
    assert client.get("/api/stats").json()["counts"]["ratings"] == 1
    assert 'data-rating="good"' in client.get("/").text  # the page's buttons


def test_markup_in_answers_and_prompts_stays_text(store: Store) -> None:
    planted = '<script>window.pwned=1</script><b>bold</b>'
    backend = FakeBackend(answers={"m/2": planted, "m/2/reference": "plain"})
    client, _ = client_for(store, backend)
    cid = ask(client, prompt=planted)[-1]["comparison_id"]
    client.post("/api/votes", json={"comparison_id": cid, "choice": "left", "annotator": "<i>ann</i>"})
    page = client.get("/").text
    assert "<script>window.pwned" not in page and "<i>ann</i>" not in page
    # the page writes answers with textContent only (never innerHTML)
    assert "innerHTML" not in page and "textContent" in page


def test_streaming_stops_when_the_answer_budget_is_spent(store: Store) -> None:
    client, _ = client_for(store, sampling=Sampling(max_new_tokens=2))
    done = ask(client)[-1]
    assert len(done["left"].split()) == 2 and len(done["right"].split()) == 2


def test_basic_auth_in_production_names_the_annotator(store: Store) -> None:
    client, _ = client_for(store, users={"alice": "s3cret"})
    assert client.get("/").status_code == 401
    assert client.get("/health").status_code == 200
    assert client.get("/", auth=("alice", "wrong")).status_code == 401
    page = client.get("/", auth=("alice", "s3cret"))
    assert page.status_code == 200 and "alice" in page.text and 'id="annotator"' not in page.text
    resp = client.post("/api/comparisons", auth=("alice", "s3cret"),
                       json={"model_a": "m/2", "model_b": "m/1", "prompt": "hi", "annotator": "bob"})
    cid = json.loads(resp.text.splitlines()[-1])["comparison_id"]
    vote = client.post("/api/votes", auth=("alice", "s3cret"),
                       json={"comparison_id": cid, "choice": "left", "annotator": "bob"})
    assert vote.status_code == 200
    assert store.decided()[0]["annotator"] == "alice"


@pytest.mark.parametrize("failing", ["left", "right"])
def test_a_model_failing_mid_answer_marks_the_comparison_failed(store: Store, failing: str) -> None:
    """The model shown on the `failing` side raises after its first word (whichever model the shuffle put
    there); the page gets an error naming that side, the comparison is failed with no answers, and no vote
    is taken."""
    backend = FakeBackend()
    inner = fake_streamer(backend)
    raised: list[str] = []

    def streamer(model, tok, messages, sampling, stop):  # noqa: ANN001, ANN202
        [comp] = store.list_comparisons()  # written before either side starts answering
        pieces = inner(model, tok, messages, sampling, stop)
        yield next(pieces)
        if model == comp[f"{failing}_model"]:
            raised.append(model)
            raise RuntimeError("CUDA out of memory")
        yield from pieces

    client = TestClient(create_app(store, backend, ArenaSettings(), streamer=streamer, rng=random.Random(1)))
    events = ask(client)
    assert events[-1] == {"event": "error",
                          "error": f"the {failing} model failed while answering: RuntimeError: CUDA out of memory"}
    assert not any(e["event"] == "done" for e in events)
    [comp] = store.list_comparisons()
    assert raised == [comp[f"{failing}_model"]]
    assert comp["status"] == "failed" and comp["left_answer"] is None and comp["right_answer"] is None
    resp = client.post("/api/votes", json={"comparison_id": comp["id"], "choice": "left", "annotator": "ann"})
    assert resp.status_code == 409
