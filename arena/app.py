"""The arena's web app (FastAPI): one page where a person picks two models and a prompt, reads both answers
side by side as they are generated (sides shuffled, versions hidden), and votes; the versions are revealed
after the vote. The page renders with Jinja2 (autoescape on) and writes answers with `textContent`, so markup in
a prompt or an answer shows as text.

API: GET /api/models, GET /api/prompts?model=ID, POST /api/comparisons (NDJSON stream: start, delta per side,
done | error), POST /api/votes, POST /api/ratings (one answer rated good or bad, before or after the vote),
GET /api/stats, GET /health. Each recorded vote and rating is announced as a Prefect event (`alignflow.arena.vote`:
the two versions and the choice; `alignflow.arena.rating`: the rated version and the rating; nothing a person
typed; arena/events.py). Refusals are HTTP 4xx/5xx JSON `{"error": ...}`.
With `users` set (production), every route but /health needs HTTP basic auth and the annotator is the login.
"""

from __future__ import annotations

import hmac
import json
import queue
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape
from pydantic import BaseModel, Field

from arena.events import Emit, arena_id, emit_safely, emit_to_prefect, rating_event, vote_event
from arena.generation import Sampling
from arena.stats import annotator_agreement, pair_stats
from arena.store import ArenaError, Store, check_annotator

TEMPLATES = Path(__file__).parent / "templates"
SUBTITLE = ("Two models answer the same prompt. Which answer is better? Sides are shuffled and the models are "
            "hidden until you vote.")


class Backend(Protocol):
    """Where models come from (arena.catalog.Catalog in production; fakes in tests)."""

    def choices(self) -> list[Any]: ...
    def defaults(self, choices: list[Any] | None = None) -> tuple[str | None, str | None]: ...
    def choice(self, model_id: str) -> Any: ...
    def heldout_prompts(self, model_id: str) -> list[list[dict[str, str]]]: ...
    def load(self, model_id: str) -> tuple[Any, Any]: ...


Streamer = Callable[[Any, Any, list[dict[str, str]], Sampling, threading.Event], Iterator[str]]


@dataclass
class ArenaSettings:
    sampling: Sampling = field(default_factory=Sampling)
    max_prompt_chars: int = 2000
    users: dict[str, str] | None = None  # login -> password; None: no login, a name field
    title: str = "alignflow arena"
    arena_id: str | None = None  # the events' `alignflow.arena.<id>`; None: derived from the database URL


class ComparisonRequest(BaseModel):
    model_a: str = Field(max_length=300)
    model_b: str = Field(max_length=300)
    prompt: str
    prompt_source: str = "typed"
    annotator: str = ""


class VoteRequest(BaseModel):
    comparison_id: str = Field(max_length=64)
    choice: str = Field(max_length=16)
    note: str | None = None
    annotator: str = ""
    submission_id: str | None = Field(None, max_length=64)


class RatingRequest(BaseModel):
    comparison_id: str = Field(max_length=64)
    side: str = Field(max_length=8)
    rating: str = Field(max_length=8)
    annotator: str = ""
    submission_id: str | None = Field(None, max_length=64)


def default_streamer(model: Any, tokenizer: Any, messages: list[dict[str, str]], sampling: Sampling,
                     stop: threading.Event) -> Iterator[str]:
    from arena.generation import stream_answer

    return stream_answer(model, tokenizer, messages, sampling, stop)


def create_app(store: Store, backend: Backend, settings: ArenaSettings | None = None,
               streamer: Streamer = default_streamer, rng: random.Random | None = None,
               emit: Emit = emit_to_prefect) -> FastAPI:
    """`emit` receives an `alignflow.arena.vote` event for every newly recorded vote and an
    `alignflow.arena.rating` one for every new rating (arena/events.py), after it is committed; an emitter that
    fails is logged and the vote or rating stands."""
    settings = settings or ArenaSettings()
    rng = rng or random.SystemRandom()
    arena = settings.arena_id or arena_id(store.engine.url.render_as_string(hide_password=True))
    app = FastAPI(title=settings.title, docs_url=None, redoc_url=None)
    # arena.html extends the reports' base.html (evaluation/templates/): one look for every alignflow page
    env = Environment(loader=ChoiceLoader([FileSystemLoader(TEMPLATES), PackageLoader("evaluation", "templates")]),
                      autoescape=select_autoescape(["html"]))
    basic = HTTPBasic(auto_error=False)

    def login(credentials: HTTPBasicCredentials | None = Depends(basic)) -> str | None:  # noqa: B008
        if settings.users is None:
            return None
        if credentials is not None:
            expected = settings.users.get(credentials.username)
            if expected is not None and hmac.compare_digest(expected.encode(), credentials.password.encode()):
                return credentials.username
        raise HTTPException(401, "log in to vote in the arena", headers={"WWW-Authenticate": 'Basic realm="arena"'})

    def annotator_of(user: str | None, typed: str) -> str:
        return user if user is not None else typed.strip()

    def own_comparison(comparison_id: str, annotator: str, what: str) -> None:
        found = store.comparison(comparison_id)
        if found is not None and found["annotator"] != annotator:
            raise HTTPException(403, f"comparison {comparison_id} was shown to {found['annotator']}, not to "
                                     f"{annotator or 'an unnamed annotator'}: {what} on your own comparisons")

    @app.exception_handler(ArenaError)
    def _refused(_request: Request, err: ArenaError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    def _http(_request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": err.detail}, status_code=err.status_code, headers=err.headers)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse)
    def page(user: str | None = Depends(login)) -> HTMLResponse:
        choices = backend.choices()
        model_a, model_b = backend.defaults(choices)
        votes = store.decided()
        html = env.get_template("arena.html").render(
            title=settings.title, subtitle=SUBTITLE, sections=[], choices=choices, model_a=model_a, model_b=model_b, user=user,
            sampling=settings.sampling.model_dump(), max_prompt_chars=settings.max_prompt_chars,
            stats=pair_stats(votes), agreement=annotator_agreement(votes), labels=_labels(choices))
        return HTMLResponse(html)

    @app.get("/api/models")
    def models(user: str | None = Depends(login)) -> dict[str, Any]:
        choices = backend.choices()
        a, b = backend.defaults(choices)
        return {"models": [{"id": c.id, "label": c.label} for c in choices], "default": [a, b]}

    @app.get("/api/prompts")
    def prompts(model: str, user: str | None = Depends(login)) -> dict[str, Any]:
        backend.choice(model)
        texts = [p[-1]["content"] for p in backend.heldout_prompts(model) if p and p[-1].get("role") == "user"]
        return {"prompts": texts}

    @app.get("/api/stats")
    def stats(user: str | None = Depends(login)) -> dict[str, Any]:
        votes = store.decided()
        return {"pairs": pair_stats(votes), "annotators": annotator_agreement(votes), "counts": store.counts()}

    @app.get("/api/comparisons/{comparison_id}")
    def comparison(comparison_id: str, user: str | None = Depends(login)) -> dict[str, Any]:
        found = store.comparison(comparison_id)
        if found is None:
            raise HTTPException(404, f"no comparison {comparison_id!r}")
        return {k: found[k] for k in ("id", "status", "created_at", "settings", "prompt")}

    @app.post("/api/comparisons")
    def compare(req: ComparisonRequest, user: str | None = Depends(login)) -> StreamingResponse:
        annotator = annotator_of(user, req.annotator)
        prompt = req.prompt.strip()
        if not prompt:
            raise ArenaError("type a prompt, or pick one of the held-out prompts")
        if len(req.prompt) > settings.max_prompt_chars:
            raise ArenaError(f"the prompt is {len(req.prompt)} characters; at most {settings.max_prompt_chars}")
        if req.prompt_source not in ("typed", "heldout"):
            raise ArenaError("prompt_source must be typed or heldout")
        if req.model_a == req.model_b:
            raise ArenaError("pick two different models")
        check_annotator(annotator)
        for model_id in (req.model_a, req.model_b):
            backend.choice(model_id)  # UnknownModel (404) before anything is written
        loaded = {m: backend.load(m) for m in (req.model_a, req.model_b)}  # ModelUnavailable (502), ditto
        left, right = (req.model_a, req.model_b) if rng.random() < 0.5 else (req.model_b, req.model_a)
        messages = [{"role": "user", "content": prompt}]
        sampling = settings.sampling
        comparison_id = store.create_comparison(
            annotator=annotator, model_a=req.model_a, model_b=req.model_b, left_model=left, right_model=right,
            prompt=messages, prompt_source=req.prompt_source, settings=sampling.model_dump())
        return StreamingResponse(_stream(store, streamer, comparison_id, {"left": loaded[left], "right": loaded[right]},
                                         messages, sampling), media_type="application/x-ndjson")

    @app.post("/api/votes")
    def vote(req: VoteRequest, user: str | None = Depends(login)) -> dict[str, Any]:
        annotator = annotator_of(user, req.annotator)
        own_comparison(req.comparison_id, annotator, "vote")
        outcome = store.record_vote(req.comparison_id, req.choice, annotator=annotator, note=req.note,
                                    submission_id=req.submission_id)
        comp = store.comparison(req.comparison_id)
        if not outcome.duplicate:
            emit_safely(emit, vote_event(arena, comp, outcome.vote["choice"]))
        reveal = {side: _reveal(backend, comp[f"{side}_model"]) for side in ("left", "right")}
        message = ("this vote was already recorded; nothing changed" if outcome.duplicate else "vote recorded")
        return {"status": "duplicate" if outcome.duplicate else "recorded", "message": message,
                "vote": {k: outcome.vote[k] for k in ("comparison_id", "choice", "annotator", "voted_at")},
                "reveal": reveal}

    @app.post("/api/ratings")
    def rate(req: RatingRequest, user: str | None = Depends(login)) -> dict[str, Any]:
        annotator = annotator_of(user, req.annotator)
        own_comparison(req.comparison_id, annotator, "rate answers")
        outcome = store.record_rating(req.comparison_id, req.side, req.rating, annotator=annotator,
                                      submission_id=req.submission_id)
        if not outcome.duplicate:
            emit_safely(emit, rating_event(arena, req.comparison_id, outcome.rating))
        message = "this rating was already recorded; nothing changed" if outcome.duplicate else "rating recorded"
        return {"status": "duplicate" if outcome.duplicate else "recorded", "message": message,
                "rating": {k: outcome.rating[k] for k in ("comparison_id", "side", "rating", "annotator", "rated_at")}}

    return app


def _labels(choices: list[Any]) -> dict[str, str]:
    return {c.id: c.label for c in choices}


def _reveal(backend: Backend, model_id: str) -> dict[str, str]:
    try:
        return {"id": model_id, "label": backend.choice(model_id).label}
    except ArenaError:
        return {"id": model_id, "label": model_id}


def _stream(store: Store, streamer: Streamer, comparison_id: str, sides: dict[str, tuple[Any, Any]],
            messages: list[dict[str, str]], sampling: Sampling) -> Iterator[bytes]:
    """Generate both answers on two threads, interleave their pieces as NDJSON events, then complete the
    comparison in one transaction (or mark it failed). If the reader goes away, generation stops and the
    comparison stays undecided: no answers are written, no vote is possible."""
    events: queue.Queue[tuple[str, str, str]] = queue.Queue()
    stop = threading.Event()

    def run(side: str, model: Any, tokenizer: Any) -> None:
        try:
            for piece in streamer(model, tokenizer, messages, sampling, stop):
                events.put(("delta", side, piece))
            events.put(("end", side, ""))
        except BaseException as err:  # noqa: BLE001 - reported to the page
            events.put(("error", side, f"{type(err).__name__}: {err}"))

    yield _line({"event": "start", "comparison_id": comparison_id, "settings": sampling.model_dump()})
    threads = [threading.Thread(target=run, args=(side, *sides[side]), daemon=True, name=f"arena-{side}")
               for side in ("left", "right")]
    for t in threads:
        t.start()
    answers = {"left": [], "right": []}
    ended, error = set(), None
    try:
        while len(ended) < 2:
            kind, side, text = events.get()
            if kind == "delta":
                answers[side].append(text)
                yield _line({"event": "delta", "side": side, "text": text})
            elif kind == "end":
                ended.add(side)
            else:
                error = f"the {side} model failed while answering: {text}"
                break
    finally:
        if error or len(ended) < 2:  # failed, or the reader went away (GeneratorExit): stop both sides
            stop.set()
    if error:
        store.fail_comparison(comparison_id, error)
        yield _line({"event": "error", "error": error})
        return
    left, right = "".join(answers["left"]).strip(), "".join(answers["right"]).strip()
    store.complete_comparison(comparison_id, left, right)
    yield _line({"event": "done", "comparison_id": comparison_id, "left": left, "right": right})


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()
