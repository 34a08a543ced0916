"""A fake model backend for the arena's web tests: answers are fixed text per model, streamed word by word."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from arena.catalog import ModelChoice, ModelUnavailable, UnknownModel, parse_id
from arena.generation import Sampling
from arena.store import Store, open_store, sqlite_url


@dataclass
class FakeBackend:
    answers: dict[str, str] = field(default_factory=lambda: {
        "m/2": "The cow says moo.", "m/1": "Sorry, I do not know.", "m/2/reference": "The cow says quack."})
    broken: set[str] = field(default_factory=set)
    loads: list[str] = field(default_factory=list)

    def choices(self) -> list[ModelChoice]:
        return [self.choice(m) for m in self.answers]

    def defaults(self, choices=None):  # noqa: ANN001, ANN201
        return "m/2", "m/2/reference"

    def choice(self, model_id: str) -> ModelChoice:
        name, version, ref = parse_id(model_id)
        if model_id not in self.answers and model_id not in self.broken:
            raise UnknownModel(f"model {model_id!r} is not registered")
        return ModelChoice(model_id, name, version, ref, ("champion",) if version == "2" else ())

    def heldout_prompts(self, model_id: str) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": "What sound does a cow make?"}]]

    def load(self, model_id: str) -> tuple[str, None]:
        self.loads.append(model_id)
        if model_id in self.broken:
            raise ModelUnavailable(f"{model_id} failed to load: weights missing")
        return model_id, None


def fake_streamer(backend: FakeBackend):  # noqa: ANN201
    def stream(model: str, _tok: None, messages: list[dict[str, str]], sampling: Sampling,
               stop: threading.Event) -> Iterator[str]:
        words = backend.answers[model].split(" ")
        for i, word in enumerate(words[: sampling.max_new_tokens]):
            if stop.is_set():
                return
            yield word if i == 0 else " " + word
    return stream


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(sqlite_url(tmp_path / "arena.db"))
