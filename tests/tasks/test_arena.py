"""Arena votes flowing back: the export to S3 as a preference dataset the pipeline's loader reads
(`data.train_path`), logged as an MLflow dataset input; `human.*` tags on the versions; the human gate."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from mlflow import MlflowClient

from alignment.data import iter_unpaired, load_preferences
from arena.store import Store, open_store, sqlite_url
from tasks.arena import export_votes, human_gates, tag_versions
from tasks.datasets import describe_inputs
from tests.s3fixture import S3Server

PROMPT = [{"role": "user", "content": "What sound does a cow make?"}]


def vote(store: Store, choice: str, left: str = "m/2", right: str = "m/1", answers=("moo", "quack"),
         annotator: str = "ann", prompt=PROMPT) -> str:
    cid = store.create_comparison(annotator=annotator, model_a=left, model_b=right, left_model=left,
                                  right_model=right, prompt=prompt, prompt_source="heldout",
                                  settings={"max_new_tokens": 8, "do_sample": False})
    store.complete_comparison(cid, *answers)
    store.record_vote(cid, choice, annotator=annotator, note="n" if choice == "left" else None)
    return cid


def test_export_writes_pairs_counts_ties_and_loads_as_training_data(s3_env: S3Server, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "arena.db")
    store = open_store(url)
    left = vote(store, "left")
    right = vote(store, "right", answers=("The cow says moo.", "Sorry, I do not know."))
    vote(store, "tie")
    both_bad = vote(store, "both_bad")
    store.record_rating(right, "left", "good", annotator="ann")  # single-answer ratings
    store.record_rating(both_bad, "right", "good", annotator="ann")  # says more of "quack" than its "both bad" vote
    vote(store, "left", answers=("same", "same"))
    twins = vote(store, "both_bad", answers=("Moo.", "Moo."))  # one text on both sides, one side rated
    store.record_rating(twins, "right", "good", annotator="ann")
    store.create_comparison(annotator="ann", model_a="m/2", model_b="m/1", left_model="m/2", right_model="m/1",
                            prompt=PROMPT, prompt_source="typed", settings={})  # never voted: not exported
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = export_votes(url, bucket=s3_env.bucket, tracking_uri=tracking, stamp=datetime(2026, 12, 1, tzinfo=UTC))
    assert out.uri == f"s3://{s3_env.bucket}/arena/exports/20261201T000000000000Z/train.jsonl"
    assert out.counts == {"votes": 6, "pairs": 2, "ties": 1, "both_bad": 2, "identical": 1, "unpaired": 4}
    # the "both bad" vote's answers as undesirable examples but the one rated on its own, then the ratings,
    # loadable as data.unpaired_path (strict)
    assert out.unpaired_uri == f"s3://{s3_env.bucket}/arena/exports/20261201T000000000000Z/unpaired.jsonl"
    unpaired = list(iter_unpaired(out.unpaired_uri))
    assert [(u["completion"][0]["content"], u["label"]) for u in unpaired] == [
        ("moo", False), ("The cow says moo.", True), ("quack", True), ("Moo.", True)]  # "Moo." once, as rated
    assert unpaired[0]["prompt"] == PROMPT
    raw = [json.loads(line) for line in s3_env.client().get_object(
        Bucket=s3_env.bucket, Key=out.unpaired_uri.split("/", 3)[3])["Body"].read().splitlines()]
    assert [(r["arena_comparison_id"], r.get("arena_rating"), r["arena_model"]) for r in raw] == [
        (both_bad, None, "m/2"), (right, "good", "m/2"), (both_bad, "good", "m/1"), (twins, "good", "m/1")]
    for uri in (out.uri, out.latest_uri):  # strict: every row valid, provenance columns ignored
        rows, report = load_preferences(uri)
        assert len(rows) == 2
    rows, _ = load_preferences(out.uri)
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "moo"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "quack"}]
    assert rows[1]["chosen"][0]["content"] == "Sorry, I do not know."  # right won: the right answer is chosen
    body = s3_env.client().get_object(Bucket=s3_env.bucket, Key=out.uri.split("/", 3)[3])["Body"].read()
    first = json.loads(body.splitlines()[0])
    assert first["arena_comparison_id"] == left and first["arena_chosen_model"] == "m/2"
    assert first["arena_annotator"] == "ann" and json.loads(first["arena_sampling"])["max_new_tokens"] == 8
    [logged] = describe_inputs(MlflowClient(tracking), out.run_id)
    assert logged["name"] == "arena-votes" and logged["tags"]["alignflow.sha256"] == out.sha256


def test_human_tags_and_gate(tmp_path: Path) -> None:
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    client.create_registered_model("m")
    (tmp_path / "model").mkdir()
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path / "model"))
    url = sqlite_url(tmp_path / "arena.db")
    store = open_store(url)
    for i in range(6):
        vote(store, "left", prompt=[{"role": "user", "content": f"q{i}"}])  # m/2 beats m/1
    vote(store, "tie")
    vote(store, "right", left="m/2", right="m/2/reference")
    tags = tag_versions(url, tracking)
    assert set(tags) == {"m/1", "m/2"}  # the reference is not a registered version
    t = client.get_model_version("m", "2").tags
    assert t["human.vs.1.wins"] == "6" and t["human.vs.1.ties"] == "1" and t["human.vs.1.n"] == "7"
    assert t["human.vs.2-reference.losses"] == "1"
    assert t["human.n"] == "8" and float(t["human.win_rate"]) == (6 + 0.5) / 8
    assert 0 < float(t["human.ci_low"]) < float(t["human.win_rate"]) < float(t["human.ci_high"]) <= 1
    assert human_gates(tracking, "m", "2", min_win_rate=None, min_votes=5) == []
    votes_gate, rate_gate = human_gates(tracking, "m", "2", min_win_rate=0.6, min_votes=5, opponent="1")
    assert votes_gate.passed and rate_gate.passed and abs(rate_gate.value - 6.5 / 7) < 1e-4  # tags keep 4 decimals
    _, strict = human_gates(tracking, "m", "2", min_win_rate=0.6, min_votes=20, opponent="1")
    assert not strict.passed  # too few votes: no pass
    _, lower = human_gates(tracking, "m", "1", min_win_rate=0.5, min_votes=1, opponent="2")
    assert not lower.passed


def test_promote_to_champion_checks_the_human_gate_when_configured(tmp_path: Path) -> None:
    """Version 2 has 7 votes against champion version 1 (6 wins, 1 tie: 6.5 / 7 = 0.93). With
    promotion.min_human_win_rate 0.6 and min_human_votes 5 promoting it passes; with 20 votes needed it is
    refused, naming the gate; with the gate unset nothing is checked."""
    import pytest

    from alignment.config import PromotionConfig
    from flows.cli import check_human_gate
    from tasks.promotion import PromotionError

    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking)
    client.create_registered_model("m")
    (tmp_path / "model").mkdir()
    for _ in range(2):
        client.create_model_version("m", source=str(tmp_path / "model"))
    client.set_registered_model_alias("m", "champion", "1")
    url = sqlite_url(tmp_path / "arena.db")
    store = open_store(url)
    for i in range(6):
        vote(store, "left", prompt=[{"role": "user", "content": f"q{i}"}])
    vote(store, "tie")
    tag_versions(url, tracking)
    check_human_gate(tracking, "m", "2", PromotionConfig(min_human_win_rate=0.6, min_human_votes=5))
    check_human_gate(tracking, "m", "2", PromotionConfig())  # gate off
    with pytest.raises(PromotionError, match=r"human gate against champion 1: human_votes = 7 \(needs 20\)"):
        check_human_gate(tracking, "m", "2", PromotionConfig(min_human_win_rate=0.6, min_human_votes=20))
