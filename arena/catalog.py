"""What the arena can compare: the versions of registered models in the MLflow Model Registry (with their
aliases) and, for each version, the model it was compared with when it was trained (its reference). Loads them
once (cached), and finds the held-out prompts of the run that produced a version.

Model ids: `NAME/VERSION` is a registered version; `NAME/VERSION/reference` is that version's reference,
located by the version's `alignflow.reference_model` tag when it has one, else by the pipeline run's summary
(`run.output_dir` of the parent run, `summary.json`, `evaluation.reference_model`): a local path, so a
reference can be compared where the pipeline ran (the local stack).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from arena.store import ArenaError

REFERENCE = "reference"
ALIAS_ORDER = ("champion", "candidate")
log = logging.getLogger("alignflow.arena")


class UnknownModel(ArenaError):
    status = 404


class ModelUnavailable(ArenaError):
    status = 502


@dataclass(frozen=True)
class ModelChoice:
    id: str
    name: str
    version: str
    reference: bool
    aliases: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        aliases = f" ({', '.join(self.aliases)})" if self.aliases else ""
        if self.reference:
            return f"{self.name} v{self.version}{aliases}: its reference"
        return f"{self.name} v{self.version}{aliases}"


def parse_id(model_id: str) -> tuple[str, str, bool]:
    parts = model_id.split("/")
    if len(parts) == 2 and parts[1].isdigit():
        return parts[0], parts[1], False
    if len(parts) == 3 and parts[1].isdigit() and parts[2] == REFERENCE:
        return parts[0], parts[1], True
    raise UnknownModel(f"{model_id!r} is not a model id (NAME/VERSION or NAME/VERSION/reference)")


def tag_label(model: str, opponent: str) -> str:
    """How an opponent is named in a version's `human.vs.*` tags: `3`, `3-reference`, or `other-model-3`."""
    name, version, ref = parse_id(opponent)
    own = parse_id(model)[0]
    return ("" if name == own else f"{name}-") + version + ("-reference" if ref else "")


class Catalog:
    def __init__(self, tracking_uri: str, model_names: list[str] | None = None, max_loaded: int = 4) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.model_names = model_names
        self.max_loaded = max_loaded
        self._loaded: dict[str, tuple[Any, Any]] = {}
        self._prompts: dict[str, list[list[dict[str, str]]]] = {}
        self._lock = threading.Lock()  # one load at a time: from_pretrained changes process-wide state

    # ---- listing ---------------------------------------------------------------------------------------

    def choices(self) -> list[ModelChoice]:
        out = []
        for rm in self.client.search_registered_models():
            if self.model_names and rm.name not in self.model_names:
                continue
            by_version: dict[str, list[str]] = {}
            for alias, version in (rm.aliases or {}).items():
                by_version.setdefault(str(version), []).append(alias)
            versions = self.client.search_model_versions(f"name = '{rm.name}'")
            for mv in sorted(versions, key=lambda m: -int(m.version)):
                aliases = tuple(sorted(by_version.get(str(mv.version), []),
                                       key=lambda a: (ALIAS_ORDER + (a,)).index(a)))
                out.append(ModelChoice(f"{rm.name}/{mv.version}", rm.name, str(mv.version), False, aliases))
                out.append(ModelChoice(f"{rm.name}/{mv.version}/{REFERENCE}", rm.name, str(mv.version), True,
                                       aliases))
        return out

    def defaults(self, choices: list[ModelChoice] | None = None) -> tuple[str | None, str | None]:
        """The champion and its reference; else candidate against champion; else the two newest versions."""
        choices = self.choices() if choices is None else choices
        versions = [c for c in choices if not c.reference]

        def with_alias(alias: str) -> ModelChoice | None:
            return next((c for c in versions if alias in c.aliases), None)

        champion, candidate = with_alias("champion"), with_alias("candidate")
        if champion is not None:
            try:
                self.reference_path(champion.name, champion.version)
                return champion.id, f"{champion.id}/{REFERENCE}"
            except ArenaError:
                pass
            if candidate is not None and candidate.id != champion.id:
                return candidate.id, champion.id
        if len(versions) >= 2:
            return versions[0].id, versions[1].id
        return (versions[0].id, None) if versions else (None, None)

    def choice(self, model_id: str) -> ModelChoice:
        name, version, ref = parse_id(model_id)
        try:
            mv = self.client.get_model_version(name, version)
        except mlflow.exceptions.MlflowException:
            raise UnknownModel(f"model {name!r} has no version {version} in the registry ({self.tracking_uri})") from None
        rm = self.client.get_registered_model(name)
        aliases = tuple(a for a, v in (rm.aliases or {}).items() if str(v) == str(mv.version))
        return ModelChoice(model_id, name, version, ref, aliases)

    # ---- references and prompts ------------------------------------------------------------------------

    def reference_path(self, name: str, version: str) -> str:
        mv = self.client.get_model_version(name, version)
        tagged = (mv.tags or {}).get("alignflow.reference_model")
        if tagged:
            return tagged
        parent = self._parent_run(mv.run_id)
        output_dir = parent.data.params.get("run.output_dir") if parent else None
        summary_path = Path(output_dir) / "summary.json" if output_dir else None
        if summary_path is None or not summary_path.is_file():
            raise UnknownModel(f"{name} v{version}: its reference is not known here (no alignflow.reference_model "
                               f"tag, and no pipeline summary at {summary_path or 'its run.output_dir'})")
        summary = json.loads(summary_path.read_text())
        path = summary.get("reference_model") or (summary.get("evaluation") or {}).get("reference_model")
        if summary.get("parent_run_id") != parent.info.run_id or not path:
            raise UnknownModel(f"{name} v{version}: {summary_path} belongs to another run; its reference is not known")
        return path

    def _parent_run(self, run_id: str | None) -> Any:
        if not run_id:
            return None
        run = self.client.get_run(run_id)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        return self.client.get_run(parent_id) if parent_id else run

    def heldout_prompts(self, model_id: str) -> list[list[dict[str, str]]]:
        """Distinct held-out prompts of the run that produced the version (the prepare_data stage's
        `data/heldout.jsonl` artifact); [] when it has none."""
        name, version, _ = parse_id(model_id)
        key = f"{name}/{version}"
        if key in self._prompts:
            return self._prompts[key]
        prompts: list[list[dict[str, str]]] = []
        try:
            mv = self.client.get_model_version(name, version)
            parent = self._parent_run(mv.run_id)
            runs = self.client.search_runs(
                [parent.info.experiment_id],
                f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`alignflow.stage` = 'prepare_data'",
                max_results=1)
            if runs:
                local = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id,
                                                           artifact_path="data/heldout.jsonl",
                                                           tracking_uri=self.tracking_uri)
                seen = set()
                for line in Path(local).read_text().splitlines():
                    if line.strip():
                        prompt = json.loads(line)["prompt"]
                        if repr(prompt) not in seen:
                            seen.add(repr(prompt))
                            prompts.append(prompt)
        except Exception as err:  # noqa: BLE001 - no prompts is an answer, logged
            log.warning("no held-out prompts for %s: %s", key, err)
        self._prompts[key] = prompts
        return prompts

    # ---- loading ---------------------------------------------------------------------------------------

    def load(self, model_id: str) -> tuple[Any, Any]:
        """(model, tokenizer), loaded once and kept (the `max_loaded` most recent)."""
        choice = self.choice(model_id)
        with self._lock:
            if model_id in self._loaded:
                self._loaded[model_id] = self._loaded.pop(model_id)  # most recent last
                return self._loaded[model_id]
            try:
                loaded = self._load(choice)
            except ArenaError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure to load is one clear message
                text = str(err).strip().splitlines()
                raise ModelUnavailable(f"{choice.label} failed to load: {text[0] if text else type(err).__name__}"
                                       ) from None
            loaded[0].eval()
            self._loaded[model_id] = loaded
            while len(self._loaded) > self.max_loaded:
                self._loaded.pop(next(iter(self._loaded)))
            return loaded

    def _load(self, choice: ModelChoice) -> tuple[Any, Any]:
        if choice.reference:
            from alignment.models.loading import load_causal_lm, load_tokenizer

            path = self.reference_path(choice.name, choice.version)
            return load_causal_lm(path), load_tokenizer(path)
        logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)
        with _tracking(self.tracking_uri):
            parts = mlflow.transformers.load_model(f"models:/{choice.name}/{choice.version}",
                                                   return_type="components")
        tokenizer = parts["tokenizer"]
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return parts["model"], tokenizer


class _tracking:  # noqa: N801 - a context manager used like a function
    """Point mlflow's fluent API at the catalog's server for one call (the registry's `models:/` URIs)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def __enter__(self) -> None:
        self.previous, self.exported = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri)

    def __exit__(self, *exc: object) -> None:
        mlflow.set_tracking_uri(self.previous)
        # set_tracking_uri exports $MLFLOW_TRACKING_URI too: put the variable back as it was
        if self.exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = self.exported
