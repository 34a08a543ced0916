"""Human promotion in the MLflow Model Registry: point an alias (default `champion`) at an existing version,
recording who did it, why and when as tags on that version.

Promotion never creates a model version, so it can't duplicate one; promoting a version that already holds
the alias changes nothing (a no-op, reported as such). A change is announced as a Prefect event
(`alignflow.model.promoted`, arena/events.py).
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import UTC, datetime

import mlflow
from mlflow import MlflowClient
from pydantic import BaseModel

from arena.events import Emit, emit_safely, emit_to_prefect, promoted_event

ALIAS_PATTERN = r"^[A-Za-z0-9_-]+$"


class PromotionError(ValueError):
    """The model, version or alias named by the user does not exist or is not allowed."""


class Promotion(BaseModel):
    name: str
    version: str
    alias: str
    changed: bool
    previous_version: str | None
    by: str
    reason: str


def current_user() -> str:
    """Who promotes: $ALIGNFLOW_USER when set (CI, shared accounts), else the login name."""
    return os.environ.get("ALIGNFLOW_USER") or getpass.getuser()


def promote(tracking_uri: str, name: str, version: str, *, alias: str = "champion", reason: str,
            user: str | None = None, emit: Emit = emit_to_prefect) -> Promotion:
    """Point `alias` at `version`; a change is announced as an `alignflow.model.promoted` event (alias and
    previous version only: who and why stay in the registry's tags)."""
    if not reason.strip():
        raise PromotionError("a promotion needs a reason (--reason \"...\")")
    if not re.match(ALIAS_PATTERN, alias) or alias.isdigit():
        raise PromotionError(f"alias {alias!r} is not valid: letters, digits, _ and - (not only digits)")
    client = MlflowClient(tracking_uri)
    try:
        client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as err:
        raise PromotionError(f"model {name!r} has no version {version!r} in {tracking_uri} "
                             f"({err.error_code})") from None
    by = user or current_user()
    previous = None
    try:
        previous = client.get_model_version_by_alias(name, alias).version
    except mlflow.exceptions.MlflowException:
        pass  # the alias is not set yet
    if previous is not None and str(previous) == str(version):
        return Promotion(name=name, version=str(version), alias=alias, changed=False, previous_version=str(previous),
                         by=by, reason=reason)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {"by": by, "reason": reason, "at": stamp, "previous_version": str(previous or "")}.items():
        client.set_model_version_tag(name, version, f"promotion.{alias}.{key}", value)
    client.set_registered_model_alias(name, alias, version)
    emit_safely(emit, promoted_event(name, str(version), alias, None if previous is None else str(previous)))
    return Promotion(name=name, version=str(version), alias=alias, changed=True,
                     previous_version=None if previous is None else str(previous), by=by, reason=reason)
