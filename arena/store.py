"""The arena's database: comparisons shown to people and their votes (SQLAlchemy; SQLite by default, Postgres
in production).

A comparison is created when the page asks for answers (its versions, the shuffled side assignment, the prompt
and the sampling settings), and completed in one transaction once both answers are generated. A vote names a
comparison: it is refused for an unknown comparison or one whose answers were never completed, and a comparison
takes one vote only — the `votes.comparison_id` unique constraint decides races between two submissions, so a
second vote is refused (or, when it is the same submission sent twice, reported as a duplicate) and nothing is
half-written. A person may also rate either answer of a shown comparison on its own, good or bad (a single-answer
rating, one per answer, whatever the vote says): KTO learns from these (arena/export.py). SQLite runs in WAL mode, every write transaction starts with BEGIN IMMEDIATE and waits on a busy
timeout, so concurrent writers queue instead of failing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

CHOICES = ("left", "right", "tie", "both_bad")
SIDES = ("left", "right")
RATINGS = ("good", "bad")
GENERATING, COMPLETE, FAILED = "generating", "complete", "failed"
MAX_NOTE_CHARS = 2000
MAX_ANNOTATOR_CHARS = 64

metadata = MetaData()

comparisons = Table(
    "comparisons", metadata,
    Column("id", String(32), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("annotator", String(MAX_ANNOTATOR_CHARS), nullable=False),
    Column("model_a", String(300), nullable=False),  # as the person picked them (e.g. name/3 = champion)
    Column("model_b", String(300), nullable=False),
    Column("left_model", String(300), nullable=False),  # after the shuffle
    Column("right_model", String(300), nullable=False),
    Column("prompt", JSON, nullable=False),  # chat messages
    Column("prompt_source", String(16), nullable=False),  # typed | heldout
    Column("settings", JSON, nullable=False),  # sampling settings, the same for both sides
    Column("status", String(16), nullable=False),  # generating | complete | failed
    Column("left_answer", Text),
    Column("right_answer", Text),
    Column("error", Text),
    Column("completed_at", DateTime(timezone=True)),
)

votes = Table(
    "votes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("comparison_id", String(32), ForeignKey("comparisons.id"), nullable=False, unique=True),
    Column("choice", String(16), nullable=False),  # left | right | tie | both_bad
    Column("winner_model", String(300)),  # left/right resolved to the model; null for tie and both_bad
    Column("loser_model", String(300)),
    Column("annotator", String(MAX_ANNOTATOR_CHARS), nullable=False),
    Column("note", Text),
    Column("submission_id", String(64)),
    Column("voted_at", DateTime(timezone=True), nullable=False),
)


ratings = Table(
    "ratings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("comparison_id", String(32), ForeignKey("comparisons.id"), nullable=False),
    Column("side", String(8), nullable=False),  # left | right: the answer rated
    Column("rating", String(8), nullable=False),  # good | bad
    Column("model", String(300), nullable=False),  # the side resolved to the model that gave the answer
    Column("annotator", String(MAX_ANNOTATOR_CHARS), nullable=False),
    Column("submission_id", String(64)),
    Column("rated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("comparison_id", "side", name="one_rating_per_answer"),
)


class ArenaError(ValueError):
    """A request the arena refuses; `status` is the HTTP status the web app answers with."""

    status = 400


class UnknownComparison(ArenaError):
    status = 404


class NotShown(ArenaError):
    status = 409


class AlreadyVoted(ArenaError):
    status = 409


class AlreadyRated(ArenaError):
    status = 409


@dataclass(frozen=True)
class VoteOutcome:
    vote: dict[str, Any]
    duplicate: bool  # the same submission arrived again: nothing was written


@dataclass(frozen=True)
class RatingOutcome:
    rating: dict[str, Any]
    duplicate: bool  # the same rating arrived again: nothing was written


def now() -> datetime:
    return datetime.now(UTC)


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def open_store(url: str) -> Store:
    """The store at a SQLAlchemy URL (`sqlite:///abs/path.db`, `postgresql+psycopg2://…`); tables created."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_transactions(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    return Store(engine)


def _sqlite_transactions(engine: Engine) -> None:
    """WAL (readers never block the writer), a busy timeout, and BEGIN IMMEDIATE: a write transaction takes
    the write lock when it starts, so two voters queue instead of one failing on a lock upgrade (SQLAlchemy's
    documented pysqlite recipe: the driver's own transaction handling is turned off)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _row(mapping: Any) -> dict[str, Any]:
    out = dict(mapping)
    for key, value in out.items():
        if isinstance(value, datetime):
            out[key] = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat(timespec="seconds")
    return out


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ---- comparisons -----------------------------------------------------------------------------------

    def create_comparison(self, *, annotator: str, model_a: str, model_b: str, left_model: str, right_model: str,
                          prompt: list[dict[str, str]], prompt_source: str, settings: dict[str, Any]) -> str:
        check_annotator(annotator)
        comparison_id = uuid.uuid4().hex
        with self.engine.begin() as conn:
            conn.execute(insert(comparisons).values(
                id=comparison_id, created_at=now(), annotator=annotator, model_a=model_a, model_b=model_b,
                left_model=left_model, right_model=right_model, prompt=prompt, prompt_source=prompt_source,
                settings=settings, status=GENERATING))
        return comparison_id

    def complete_comparison(self, comparison_id: str, left_answer: str, right_answer: str) -> None:
        """Both answers and the status in one statement: a comparison is complete with both, or not at all."""
        with self.engine.begin() as conn:
            conn.execute(update(comparisons).where(comparisons.c.id == comparison_id,
                                                   comparisons.c.status == GENERATING)
                         .values(left_answer=left_answer, right_answer=right_answer, status=COMPLETE,
                                 completed_at=now()))

    def fail_comparison(self, comparison_id: str, error: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(comparisons).where(comparisons.c.id == comparison_id,
                                                   comparisons.c.status == GENERATING)
                         .values(status=FAILED, error=error[:2000], completed_at=now()))

    def comparison(self, comparison_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = conn.execute(select(comparisons).where(comparisons.c.id == comparison_id)).mappings().first()
        return _row(found) if found else None

    def list_comparisons(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(comparisons).order_by(comparisons.c.created_at)).mappings().all()
        return [_row(r) for r in rows]

    # ---- votes -----------------------------------------------------------------------------------------

    def record_vote(self, comparison_id: str, choice: str, *, annotator: str, note: str | None = None,
                    submission_id: str | None = None) -> VoteOutcome:
        """Record the vote on a shown comparison, in one transaction. Raises UnknownComparison, NotShown
        (answers never completed) or AlreadyVoted; the same submission (same submission id, or the same
        choice by the same annotator) arriving twice is a duplicate: reported, nothing written."""
        if choice not in CHOICES:
            raise ArenaError(f"vote must be one of {', '.join(CHOICES)}; got {choice!r}")
        check_annotator(annotator)
        note = (note or "").strip() or None
        if note and len(note) > MAX_NOTE_CHARS:
            raise ArenaError(f"the note is {len(note)} characters; at most {MAX_NOTE_CHARS}")
        try:
            with self.engine.begin() as conn:
                comp = conn.execute(select(comparisons).where(comparisons.c.id == comparison_id)).mappings().first()
                if comp is None:
                    raise UnknownComparison(f"no comparison {comparison_id!r}: nothing to vote on")
                existing = conn.execute(select(votes).where(votes.c.comparison_id == comparison_id)).mappings().first()
                if existing is not None:
                    return self._second_vote(existing, choice, annotator, submission_id)
                if comp["status"] != COMPLETE:
                    raise NotShown(f"comparison {comparison_id} was never shown in full (it is {comp['status']}): "
                                   "a vote needs both answers")
                winner, loser = {"left": (comp["left_model"], comp["right_model"]),
                                 "right": (comp["right_model"], comp["left_model"])}.get(choice, (None, None))
                conn.execute(insert(votes).values(
                    comparison_id=comparison_id, choice=choice, winner_model=winner, loser_model=loser,
                    annotator=annotator, note=note, submission_id=submission_id, voted_at=now()))
                vote = conn.execute(select(votes).where(votes.c.comparison_id == comparison_id)).mappings().one()
                return VoteOutcome(_row(vote), duplicate=False)
        except IntegrityError:  # another submission won the race for this comparison (Postgres without locks)
            with self.engine.connect() as conn:
                existing = conn.execute(select(votes).where(votes.c.comparison_id == comparison_id)).mappings().one()
            return self._second_vote(existing, choice, annotator, submission_id)

    @staticmethod
    def _second_vote(existing: Any, choice: str, annotator: str, submission_id: str | None) -> VoteOutcome:
        if resubmitted(existing, "choice", choice, annotator, submission_id):
            return VoteOutcome(_row(existing), duplicate=True)
        raise AlreadyVoted(f"comparison {existing['comparison_id']} already has a vote ({existing['choice']}, by "
                           f"{existing['annotator']}); a comparison takes one vote, nothing changed")

    # ---- single-answer ratings -------------------------------------------------------------------------

    def record_rating(self, comparison_id: str, side: str, rating: str, *, annotator: str,
                      submission_id: str | None = None) -> RatingOutcome:
        """Rate one answer of a shown comparison good or bad, in one transaction. Raises UnknownComparison,
        NotShown or AlreadyRated (the answer has another rating); the same rating arriving twice is a duplicate."""
        if side not in SIDES:
            raise ArenaError(f"side must be one of {', '.join(SIDES)}; got {side!r}")
        if rating not in RATINGS:
            raise ArenaError(f"rating must be one of {', '.join(RATINGS)}; got {rating!r}")
        check_annotator(annotator)
        try:
            with self.engine.begin() as conn:
                comp = conn.execute(select(comparisons).where(comparisons.c.id == comparison_id)).mappings().first()
                if comp is None:
                    raise UnknownComparison(f"no comparison {comparison_id!r}: nothing to rate")
                existing = self._rating(conn, comparison_id, side)
                if existing is not None:
                    return self._second_rating(existing, rating, annotator, submission_id)
                if comp["status"] != COMPLETE:
                    raise NotShown(f"comparison {comparison_id} was never shown in full (it is {comp['status']}): "
                                   "a rating needs the answer")
                conn.execute(insert(ratings).values(
                    comparison_id=comparison_id, side=side, rating=rating, model=comp[f"{side}_model"],
                    annotator=annotator, submission_id=submission_id, rated_at=now()))
                return RatingOutcome(_row(self._rating(conn, comparison_id, side)), duplicate=False)
        except IntegrityError:  # another submission rated this answer first (Postgres without locks)
            with self.engine.connect() as conn:
                existing = self._rating(conn, comparison_id, side)
            if existing is None:  # not the race on this answer: the error is another one
                raise
            return self._second_rating(existing, rating, annotator, submission_id)

    @staticmethod
    def _rating(conn: Any, comparison_id: str, side: str) -> Any:
        return conn.execute(select(ratings).where(ratings.c.comparison_id == comparison_id,
                                                  ratings.c.side == side)).mappings().first()

    @staticmethod
    def _second_rating(existing: Any, rating: str, annotator: str, submission_id: str | None) -> RatingOutcome:
        if resubmitted(existing, "rating", rating, annotator, submission_id):
            return RatingOutcome(_row(existing), duplicate=True)
        raise AlreadyRated(f"the {existing['side']} answer of comparison {existing['comparison_id']} is already rated "
                           f"{existing['rating']} (by {existing['annotator']}); an answer takes one rating, nothing "
                           "changed")

    def rated(self) -> list[dict[str, Any]]:
        """Every rating joined with its comparison (prompt, the rated answer, settings), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(ratings, comparisons.c.prompt, comparisons.c.prompt_source,
                                       comparisons.c.settings, comparisons.c.left_answer, comparisons.c.right_answer)
                                .join(comparisons, ratings.c.comparison_id == comparisons.c.id)
                                .order_by(ratings.c.id)).mappings().all()
        out = []
        for r in map(_row, rows):
            r["answer"] = r.pop("left_answer") if r["side"] == "left" else r.pop("right_answer")
            r.pop("left_answer", None), r.pop("right_answer", None)
            out.append(r)
        return out

    def decided(self) -> list[dict[str, Any]]:
        """Every vote joined with its comparison (prompt, answers, models, settings), oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(votes, comparisons.c.prompt, comparisons.c.prompt_source,
                                       comparisons.c.settings, comparisons.c.left_model, comparisons.c.right_model,
                                       comparisons.c.left_answer, comparisons.c.right_answer)
                                .join(comparisons, votes.c.comparison_id == comparisons.c.id)
                                .order_by(votes.c.id)).mappings().all()
        return [_row(r) for r in rows]

    def counts(self) -> dict[str, int]:
        out = {status: 0 for status in (GENERATING, COMPLETE, FAILED)}
        for comp in self.list_comparisons():
            out[comp["status"]] += 1
        out["votes"] = len(self.decided())
        out["ratings"] = len(self.rated())
        return out


def resubmitted(existing: Any, field: str, value: str, annotator: str, submission_id: str | None) -> bool:
    """Whether a second vote or rating is the first one sent again: the same submission id, or the same
    value by the same annotator."""
    return (submission_id is not None and existing["submission_id"] == submission_id) or (
        existing[field] == value and existing["annotator"] == annotator)


def check_annotator(annotator: str) -> None:
    if not annotator or not annotator.strip():
        raise ArenaError("an annotator name is needed (type your name)")
    if len(annotator) > MAX_ANNOTATOR_CHARS:
        raise ArenaError(f"the annotator name is {len(annotator)} characters; at most {MAX_ANNOTATOR_CHARS}")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)
