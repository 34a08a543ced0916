"""The loop closing itself, without a server: the feedback deployment's trigger and concurrency, what
`alignflow deploy` passes it, the round's config, the pipeline's registration and promotion events, and the
arena's default pairing following a new champion without a restart."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from alignment.config import PipelineConfig
from arena.events import AlignflowEvent
from evaluation.gates import GateResult
from flows import cli, deploy
from flows.feedback import Champion, VotePairs, round_config, skip_reason, split_counts


class RecordingRemote:
    calls: list[dict[str, Any]] = []

    def deploy(self, **kwargs: Any) -> str:
        self.calls.append(kwargs)
        return "00000000-0000-0000-0000-000000000001"


@pytest.fixture
def remote(monkeypatch: pytest.MonkeyPatch) -> RecordingRemote:
    RecordingRemote.calls = []
    sources: list[str] = []
    monkeypatch.setattr(deploy.flow, "from_source", lambda source, entrypoint: sources.append(entrypoint)
                        or RecordingRemote())
    RecordingRemote.sources = sources
    return RecordingRemote()


def test_the_feedback_deployment_fires_after_n_votes_and_runs_one_round_at_a_time(remote: RecordingRemote) -> None:
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy
    from prefect.events import DeploymentEventTrigger

    deploy.deploy_feedback(pool="cpu", votes=5, window=600, parameters={"min_pairs": 3})
    (call,) = remote.calls
    assert remote.sources == ["flows/feedback.py:feedback_round"]
    assert call["name"] == "arena-votes" and call["work_pool_name"] == "cpu"
    (trigger,) = call["triggers"]
    assert isinstance(trigger, DeploymentEventTrigger)
    assert trigger.expect == {"alignflow.arena.vote"} and trigger.posture == "Reactive"
    assert trigger.threshold == 5 and trigger.within == timedelta(seconds=600) and trigger.enabled
    assert trigger.match.model_dump() == {"prefect.resource.id": "alignflow.arena.*"}
    assert call["concurrency_limit"].limit == 1
    assert call["concurrency_limit"].collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    assert call["parameters"] == {"min_pairs": 3}
    # what Prefect stores: the automation the deployment owns, running the deployment with its parameters
    trigger.set_deployment_id("00000000-0000-0000-0000-000000000001")
    automation = trigger.as_automation()
    assert automation.trigger.threshold == 5 and automation.actions[0].type == "run-deployment"


def test_alignflow_deploy_registers_the_feedback_round_with_its_options(
        remote: RecordingRemote, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(deploy, "deploy_pipeline", lambda **kw: "p")
    monkeypatch.setattr(deploy, "deploy_training", lambda **kw: "t")
    assert cli.main(["deploy", "--stack-dir", str(tmp_path / "stack"), "--feedback-votes", "7",
                     "--feedback-window", "900", "--feedback-pool", "gpu", "--set", "promotion.model_name=fb"]) == 0
    (call,) = remote.calls
    assert call["work_pool_name"] == "gpu" and call["triggers"][0].threshold == 7
    assert call["triggers"][0].within == timedelta(seconds=900)
    params = call["parameters"]
    assert params["config"]["promotion"]["model_name"] == "fb" and params["min_pairs"] == 8
    assert params["arena_db"] == f"sqlite:///{(tmp_path / 'stack' / 'arena' / 'arena.db').resolve()}"
    assert "feedback-round/arena-votes" in capsys.readouterr().out

    RecordingRemote.calls.clear()
    assert cli.main(["deploy", "--stack-dir", str(tmp_path / "stack"), "--feedback-votes", "0"]) == 0
    assert remote.calls == []  # 0: no feedback round
    assert cli.main(["deploy", "--stack-dir", str(tmp_path), "--arena-db", "postgresql://a:pw@db/arena"]) == 0
    assert remote.calls[0]["parameters"]["arena_db"] is None  # a password never becomes a parameter
    assert "pw" not in json.dumps(remote.calls[0]["parameters"])


def pairs(n: int, heldout: int = 1) -> VotePairs:
    return VotePairs(uri="s3://alignflow/arena/exports/v1/train.jsonl", train=n - heldout, heldout=heldout,
                     counts={"votes": n + 2, "pairs": n, "ties": 1, "both_bad": 1, "identical": 0})


def test_the_round_trains_the_champion_on_the_votes_with_held_out_pairs_split_from_them(tmp_path: Path) -> None:
    base = PipelineConfig.model_validate({"run": {"output_dir": str(tmp_path / "runs")},
                                          "promotion": {"model_name": "fb"}})
    cfg = round_config(base, pairs(20), Champion(name="fb", version="3", path="/m/champion"),
                       tmp_path / "round", "http://127.0.0.1:5000")
    assert cfg.data.source == "files" and cfg.data.train_path == "s3://alignflow/arena/exports/v1/train.jsonl"
    assert cfg.data.heldout_path is None and cfg.data.heldout_fraction == base.data.heldout_fraction
    assert cfg.model.name_or_path == "/m/champion" and not cfg.sft.enabled and not cfg.onpolicy.enabled
    assert cfg.tracking.uri == "http://127.0.0.1:5000" and cfg.run.output_dir == str(tmp_path / "round" / "pipeline")
    assert cfg.promotion == base.promotion and cfg.dpo == base.dpo
    # "both bad" votes: undesirable examples for a KTO round; a DPO round has no use for them
    votes = pairs(20).model_copy(update={"unpaired_uri": "s3://alignflow/arena/exports/v1/unpaired.jsonl"})
    assert round_config(base, votes, Champion(name="fb", version="3", path="/m/champion"), tmp_path / "r",
                        "http://127.0.0.1:5000").data.unpaired_path is None
    kto = base.model_copy(update={"preference": base.preference.model_copy(update={"method": "kto"})})
    assert round_config(kto, votes, Champion(name="fb", version="3", path="/m/champion"), tmp_path / "r",
                        "http://127.0.0.1:5000").data.unpaired_path == votes.unpaired_uri


def test_a_round_without_enough_pairs_or_a_held_out_side_is_skipped() -> None:
    assert skip_reason(pairs(20), 8) is None
    assert "a round needs at least 8" in skip_reason(pairs(5), 8)
    assert "1 to train on and 0 held out" in skip_reason(VotePairs(uri="x", train=1, heldout=0,
                                                                   counts=pairs(1).counts), 1)
    rows = [{"prompt": [{"role": "user", "content": f"q{i}"}]} for i in range(200)]
    train, heldout = split_counts(rows, PipelineConfig())
    assert train + heldout == 200 and 5 < heldout < 40  # heldout_fraction 0.1, by prompt hash


def gate(name: str, value: float, threshold: float, passed: bool) -> dict[str, Any]:
    return GateResult(name, value, threshold, passed).to_dict()


def test_registration_announces_the_version_and_the_refused_gates() -> None:
    from tasks.registry import Registration, announce_registration

    sent: list[AlignflowEvent] = []
    reg = Registration(name="fb", version="4", aliases=["candidate"], model_uri="models:/m-1", champion=False,
                       gates=[gate("win_rate", 0.4, 0.6, False), gate("kl", float("nan"), 25.0, False),
                              gate("length_ratio", 0.9, 0.5, True)])
    announce_registration(reg, sent.append)
    assert [e.event for e in sent] == ["alignflow.model.registered", "alignflow.model.gate-refused"]
    assert all(e.resource["prefect.resource.id"] == "alignflow.model.fb.4" for e in sent)
    assert sent[0].payload == {"aliases": ["candidate"], "champion": False, "gates_passed": False}
    assert sent[1].payload == {"failed": [{"name": "win_rate", "value": 0.4, "threshold": 0.6},
                                          {"name": "kl", "value": None, "threshold": 25.0}]}
    json.dumps([e.payload for e in sent], allow_nan=False)  # JSON as Prefect sends it

    sent.clear()
    announce_registration(reg.model_copy(update={"version": None, "aliases": []}), sent.append)
    assert [(e.event, e.resource["prefect.resource.id"]) for e in sent] == [
        ("alignflow.model.gate-refused", "alignflow.model.fb")]  # registration off: only the verdict

    def broken(_ev: AlignflowEvent) -> None:
        raise OSError("no route")

    announce_registration(reg, broken)  # logged, never raised


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """Two versions of `fb`, each with a known reference (the arena pairs a champion with its reference)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model("fb")
    for i in (1, 2):
        (tmp_path / f"v{i}").mkdir()
        client.create_model_version("fb", source=(tmp_path / f"v{i}").as_uri(),
                                    tags={"alignflow.reference_model": str(tmp_path / f"ref{i}")})
    client.set_registered_model_alias("fb", "champion", "1")
    return uri


def test_a_promotion_is_announced_and_the_arena_pairs_the_new_champion_without_a_restart(
        registry: str, tmp_path: Path) -> None:
    from arena.app import create_app
    from arena.catalog import Catalog
    from arena.store import open_store, sqlite_url
    from tasks.promotion import promote

    app = create_app(open_store(sqlite_url(tmp_path / "arena.db")), Catalog(registry), emit=lambda ev: None)
    client = TestClient(app)
    assert client.get("/api/models").json()["default"] == ["fb/1", "fb/1/reference"]
    sent: list[AlignflowEvent] = []
    done = promote(registry, "fb", "2", reason="won the arena, said Bob", user="bob", emit=sent.append)
    assert done.changed
    (ev,) = sent
    assert ev.event == "alignflow.model.promoted" and ev.resource["prefect.resource.id"] == "alignflow.model.fb.2"
    assert ev.payload == {"alias": "champion", "previous_version": "1"}
    assert ev.related == [{"prefect.resource.id": "alignflow.model.fb.1", "alignflow.model.name": "fb",
                           "alignflow.model.version": "1", "prefect.resource.role": "previous"}]
    assert "bob" not in json.dumps(ev.payload).lower()
    # the same app, no restart: the registry's alias is read per request
    assert client.get("/api/models").json()["default"] == ["fb/2", "fb/2/reference"]
    assert promote(registry, "fb", "2", reason="again", emit=sent.append).changed is False
    assert len(sent) == 1  # nothing changed, nothing announced
