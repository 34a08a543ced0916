"""The feedback loop's events, sent to Prefect so that automations can react to them (a deployment trigger
starts `feedback-round` after N votes; flows/deploy.py).

| event | resource | related (role) | payload |
|---|---|---|---|
| `alignflow.arena.vote` | `alignflow.arena.<arena id>` | the two versions (`model-a`, `model-b`) | `choice` (a, b, tie, both_bad), `winner` |
| `alignflow.arena.rating` | `alignflow.arena.<arena id>` | the version whose answer was rated (`rated`) | `rating` (good, bad) |
| `alignflow.model.registered` | `alignflow.model.<name>.<version>` | — | `aliases`, `champion`, `gates_passed` |
| `alignflow.model.gate-refused` | the version (or `alignflow.model.<name>` when nothing was registered) | — | `failed`: name, value, threshold of each failing gate |
| `alignflow.model.promoted` | the version | the previous version (`previous`) | `alias`, `previous_version` |

What an event never carries: prompts, answers, notes, annotator or promoter names, reasons typed by people,
URLs or secrets. Events are built here as plain records (`AlignflowEvent`) and handed to an `Emit` callable;
the default, `emit_to_prefect`, sends nothing when no Prefect API is configured (`PREFECT_API_URL` unset:
Prefect would otherwise start a temporary server just for the event). `emit_safely` never raises: an event is
a notification, and what it announces (a vote, a registration, a promotion) has already happened.
"""

from __future__ import annotations

import hashlib
import logging
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

VOTE = "alignflow.arena.vote"
RATING = "alignflow.arena.rating"
REGISTERED = "alignflow.model.registered"
GATE_REFUSED = "alignflow.model.gate-refused"
PROMOTED = "alignflow.model.promoted"
ARENA_PREFIX = "alignflow.arena."
MODEL_PREFIX = "alignflow.model."
# Event ids derived from what happened (a vote on comparison X): the same vote sent twice is one event to Prefect
NAMESPACE = uuid.UUID("6f1c7f57-3d5e-4d7e-9a43-4c4d0e1f2a30")

log = logging.getLogger("alignflow.events")


@dataclass(frozen=True)
class AlignflowEvent:
    event: str
    resource: dict[str, str]
    related: list[dict[str, str]] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID | None = None


Emit = Callable[[AlignflowEvent], None]


def prefect_api_configured() -> bool:
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def emit_to_prefect(ev: AlignflowEvent) -> None:
    """Send one event with `prefect.events.emit_event` (queued, delivered by Prefect's events worker thread);
    skipped, with a debug line, when no Prefect API is configured."""
    if not prefect_api_configured():
        log.debug("no Prefect API configured (PREFECT_API_URL): event %s not sent", ev.event)
        return
    from prefect.events import emit_event

    emit_event(event=ev.event, resource=ev.resource, related=ev.related or None, payload=ev.payload, id=ev.id)


def emit_safely(emit: Emit, ev: AlignflowEvent) -> bool:
    """Emit, and never raise: a failure is logged as a warning. True when the emitter returned."""
    try:
        emit(ev)
        return True
    except Exception as err:  # noqa: BLE001 - an event must never undo what it announces
        log.warning("event %s on %s was not sent: %s: %s", ev.event, ev.resource.get("prefect.resource.id"),
                    type(err).__name__, err)
        return False


# ---- resources ---------------------------------------------------------------------------------------------


def arena_id(database_url: str) -> str:
    """A stable, secret-free id for an arena: 12 hex digits of the SHA-256 of its database URL with any password
    hidden (the URL itself may hold one, and names a host)."""
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(database_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a SQLAlchemy URL: hash it as given, it is never shown
        shown = database_url
    return hashlib.sha256(shown.encode()).hexdigest()[:12]


def arena_resource(arena: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{ARENA_PREFIX}{arena}", "prefect.resource.name": f"arena {arena}"}


def model_resource(name: str, version: str | None = None, *, reference: bool = False,
                   role: str | None = None) -> dict[str, str]:
    """`alignflow.model.<name>.<version>` (`.reference` for a version's reference), with the name and version
    as labels too (a model name may itself contain dots)."""
    rid = MODEL_PREFIX + name + (f".{version}" if version is not None else "") + (".reference" if reference else "")
    out = {"prefect.resource.id": rid, "alignflow.model.name": name}
    if version is not None:
        out["alignflow.model.version"] = str(version)
    if reference:
        out["alignflow.model.reference"] = "true"
    if role:
        out["prefect.resource.role"] = role
    return out


def arena_model_resource(model_id: str, role: str) -> dict[str, str]:
    """An arena model id (`NAME/VERSION` or `NAME/VERSION/reference`) as a related resource."""
    parts = model_id.split("/")
    if len(parts) in (2, 3) and parts[1].isdigit() and (len(parts) == 2 or parts[2] == "reference"):
        return model_resource(parts[0], parts[1], reference=len(parts) == 3, role=role)
    return {"prefect.resource.id": MODEL_PREFIX + model_id.replace("/", "."), "prefect.resource.role": role}


# ---- events ------------------------------------------------------------------------------------------------


def vote_event(arena: str, comparison: Mapping[str, Any], choice: str) -> AlignflowEvent:
    """One decided vote: the two versions as the person picked them (model-a, model-b; not the shuffled sides)
    and which one won. `choice` is the stored left | right | tie | both_bad."""
    a, b = comparison["model_a"], comparison["model_b"]
    winner = {"left": comparison["left_model"], "right": comparison["right_model"]}.get(choice)
    outcome = choice if winner is None else ("a" if winner == a else "b")
    return AlignflowEvent(
        event=VOTE, resource=arena_resource(arena),
        related=[arena_model_resource(a, "model-a"), arena_model_resource(b, "model-b")],
        payload={"choice": outcome, "winner": winner},
        id=uuid.uuid5(NAMESPACE, f"vote:{arena}:{comparison['id']}"))


def rating_event(arena: str, comparison_id: str, rating: Mapping[str, Any]) -> AlignflowEvent:
    """One answer rated on its own: the version that gave it and the rating (good | bad)."""
    return AlignflowEvent(
        event=RATING, resource=arena_resource(arena), related=[arena_model_resource(rating["model"], "rated")],
        payload={"rating": rating["rating"]},
        id=uuid.uuid5(NAMESPACE, f"rating:{arena}:{comparison_id}:{rating['side']}"))


def gate_record(gate: Any) -> dict[str, Any]:
    """name, value, threshold and verdict of an evaluation.gates.GateResult (or its dict)."""
    g = gate if isinstance(gate, Mapping) else gate.to_dict()
    return {"name": str(g["name"]), "value": _number(g["value"]), "threshold": _number(g["threshold"]),
            "passed": bool(g["passed"])}


def _number(value: Any) -> float | None:
    """JSON has no NaN: a gate value that could not be measured is null."""
    x = float(value)
    return x if math.isfinite(x) else None


def registered_event(name: str, version: str, aliases: Iterable[str], gates: Iterable[Any]) -> AlignflowEvent:
    records = [gate_record(g) for g in gates]
    aliases = list(aliases)
    return AlignflowEvent(
        event=REGISTERED, resource=model_resource(name, version),
        payload={"aliases": aliases, "champion": "champion" in aliases,
                 "gates_passed": all(r["passed"] for r in records)},
        id=uuid.uuid5(NAMESPACE, f"registered:{name}:{version}"))


def gate_refused_event(name: str, version: str | None, gates: Iterable[Any]) -> AlignflowEvent | None:
    """The failing gates (None when every gate passed)."""
    failed = [{k: r[k] for k in ("name", "value", "threshold")} for r in map(gate_record, gates) if not r["passed"]]
    if not failed:
        return None
    return AlignflowEvent(event=GATE_REFUSED, resource=model_resource(name, version), payload={"failed": failed})


def promoted_event(name: str, version: str, alias: str, previous: str | None) -> AlignflowEvent:
    related = [model_resource(name, previous, role="previous")] if previous else []
    return AlignflowEvent(event=PROMOTED, resource=model_resource(name, version), related=related,
                          payload={"alias": alias, "previous_version": previous})
