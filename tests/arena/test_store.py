"""The vote database: one vote per shown comparison, one rating per shown answer, refusals with clear messages,
concurrent voters, and a writer killed mid-comparison leaving nothing half-written."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from arena.store import (
    AlreadyRated,
    AlreadyVoted,
    ArenaError,
    NotShown,
    Store,
    UnknownComparison,
    open_store,
    sqlite_url,
)

PROMPT = [{"role": "user", "content": "What sound does a cow make?"}]


def shown(store: Store, annotator: str = "ann") -> str:
    cid = store.create_comparison(annotator=annotator, model_a="m/2", model_b="m/1", left_model="m/1",
                                  right_model="m/2", prompt=PROMPT, prompt_source="typed",
                                  settings={"max_new_tokens": 8})
    store.complete_comparison(cid, "Sorry.", "The cow says moo.")
    return cid


def test_vote_resolves_the_side_to_the_model(store: Store) -> None:
    cid = shown(store)
    out = store.record_vote(cid, "right", annotator="ann", note="  correct  ")
    assert not out.duplicate
    [row] = store.decided()
    assert (row["winner_model"], row["loser_model"], row["note"]) == ("m/2", "m/1", "correct")
    assert row["prompt"] == PROMPT and row["right_answer"] == "The cow says moo."


def test_refusals_name_the_problem_and_write_nothing(store: Store) -> None:
    with pytest.raises(UnknownComparison, match="no comparison 'nope'"):
        store.record_vote("nope", "left", annotator="ann")
    pending = store.create_comparison(annotator="ann", model_a="a/1", model_b="a/2", left_model="a/1",
                                      right_model="a/2", prompt=PROMPT, prompt_source="typed", settings={})
    with pytest.raises(NotShown, match="never shown in full"):
        store.record_vote(pending, "left", annotator="ann")
    cid = shown(store)
    with pytest.raises(ArenaError, match="vote must be one of"):
        store.record_vote(cid, "middle", annotator="ann")
    with pytest.raises(ArenaError, match="annotator name is needed"):
        store.record_vote(cid, "left", annotator="  ")
    with pytest.raises(ArenaError, match="at most 2000"):
        store.record_vote(cid, "left", annotator="ann", note="x" * 2001)
    assert store.decided() == []


def test_a_rating_is_one_answer_of_a_shown_comparison_resolved_to_its_model(store: Store) -> None:
    cid = shown(store)
    out = store.record_rating(cid, "left", "bad", annotator="ann", submission_id="r1")
    assert not out.duplicate and out.rating["model"] == "m/1"
    store.record_rating(cid, "right", "good", annotator="ann")
    store.record_vote(cid, "right", annotator="ann")  # a vote and ratings of the same comparison: independent
    assert [(r["side"], r["rating"], r["model"], r["answer"]) for r in store.rated()] == [
        ("left", "bad", "m/1", "Sorry."), ("right", "good", "m/2", "The cow says moo.")]
    assert store.rated()[0]["prompt"] == PROMPT
    assert store.record_rating(cid, "left", "bad", annotator="ann", submission_id="r1").duplicate
    with pytest.raises(AlreadyRated, match="left answer of comparison .* is already rated bad \\(by ann\\)"):
        store.record_rating(cid, "left", "good", annotator="ann")
    assert store.counts()["ratings"] == 2


def test_ratings_refused_with_the_problem_named_and_nothing_written(store: Store) -> None:
    with pytest.raises(UnknownComparison, match="nothing to rate"):
        store.record_rating("nope", "left", "good", annotator="ann")
    pending = store.create_comparison(annotator="ann", model_a="a/1", model_b="a/2", left_model="a/1",
                                      right_model="a/2", prompt=PROMPT, prompt_source="typed", settings={})
    with pytest.raises(NotShown, match="a rating needs the answer"):
        store.record_rating(pending, "left", "good", annotator="ann")
    cid = shown(store)
    with pytest.raises(ArenaError, match="side must be one of left, right; got 'middle'"):
        store.record_rating(cid, "middle", "good", annotator="ann")
    with pytest.raises(ArenaError, match="rating must be one of good, bad; got 'meh'"):
        store.record_rating(cid, "left", "meh", annotator="ann")
    assert store.rated() == []


def test_second_vote_is_refused_and_a_resubmission_is_a_duplicate(store: Store) -> None:
    cid = shown(store)
    store.record_vote(cid, "left", annotator="ann", submission_id="s1")
    again = store.record_vote(cid, "left", annotator="ann", submission_id="s1")
    assert again.duplicate
    with pytest.raises(AlreadyVoted, match="already has a vote \\(left, by ann\\)"):
        store.record_vote(cid, "right", annotator="ann", submission_id="s2")
    assert len(store.decided()) == 1


def test_concurrent_votes_on_one_comparison_keep_exactly_one(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "arena.db")
    store = open_store(url)
    cids = [shown(store) for _ in range(10)]
    results: list[str] = []
    barrier = threading.Barrier(8)

    def voter(i: int) -> None:
        own = open_store(url)  # each voter its own engine and connections, as two server workers would
        barrier.wait()
        for cid in cids:
            try:
                own.record_vote(cid, "left" if i % 2 else "right", annotator="ann", submission_id=f"{cid}:{i}")
                results.append("ok")
            except AlreadyVoted:
                results.append("refused")

    threads = [threading.Thread(target=voter, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decided = store.decided()
    assert sorted(v["comparison_id"] for v in decided) == sorted(cids)  # one vote each, none lost
    assert results.count("ok") + results.count("refused") == 80
    assert results.count("ok") >= 10  # the winners, plus identical resubmissions reported as duplicates


def _vote_forever(url: str, cids: list[str], started: multiprocessing.Event) -> None:
    store = open_store(url)
    started.set()
    for cid in cids:
        store.record_vote(cid, "left", annotator="ann")
        time.sleep(0.01)


def test_killed_writer_leaves_whole_votes_only(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "arena.db")
    store = open_store(url)
    cids = [shown(store) for _ in range(300)]
    started = multiprocessing.get_context("spawn").Event()
    proc = multiprocessing.get_context("spawn").Process(target=_vote_forever, args=(url, cids, started))
    proc.start()
    assert started.wait(60)
    time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    decided = open_store(url).decided()
    assert 0 < len(decided) < 300
    assert all(v["choice"] == "left" and v["winner_model"] == "m/1" for v in decided)
    # the comparisons not voted on can still be voted on
    rest = [c for c in cids if c not in {v["comparison_id"] for v in decided}]
    assert not open_store(url).record_vote(rest[0], "right", annotator="ann").duplicate
