"""The registry side of the arena with real tiny models in a SQLite MLflow store: versions and aliases listed,
the champion against its reference by default, held-out prompts found, models loaded once, and answers streamed
with the chat template applied (the same text MLflow's chat serving would prompt with)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from arena.catalog import Catalog, ModelUnavailable, UnknownModel, tag_label
from arena.generation import Sampling, stream_answer
from tests.arena.registry_util import HELDOUT, register_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    register_tiny(uri, root, "tiny", seed=1, champion=True)
    register_tiny(uri, root, "tiny", seed=2, champion=False)
    return uri, root


def test_lists_versions_and_defaults_to_champion_against_its_reference(registry) -> None:
    uri, _ = registry
    catalog = Catalog(uri)
    ids = [c.id for c in catalog.choices()]
    assert ids == ["tiny/2", "tiny/2/reference", "tiny/1", "tiny/1/reference"]
    labels = {c.id: c.label for c in catalog.choices()}
    assert labels["tiny/1"] == "tiny v1 (champion)" and labels["tiny/2"] == "tiny v2 (candidate)"
    assert catalog.defaults() == ("tiny/1", "tiny/1/reference")
    assert catalog.heldout_prompts("tiny/1") == [[{"role": "user", "content": q}] for q in HELDOUT]
    assert tag_label("tiny/1", "tiny/2/reference") == "2-reference" and tag_label("tiny/1", "x/3") == "x-3"


def test_unknown_and_unloadable_versions_are_named(registry, tmp_path: Path) -> None:
    uri, root = registry
    catalog = Catalog(uri)
    with pytest.raises(UnknownModel, match="no version 7"):
        catalog.load("tiny/7")
    (root / "run-2" / "reference" / "model.safetensors").rename(tmp_path / "gone.safetensors")
    try:
        with pytest.raises(ModelUnavailable, match="tiny v2 \\(candidate\\): its reference failed to load"):
            catalog.load("tiny/2/reference")
    finally:
        (tmp_path / "gone.safetensors").rename(root / "run-2" / "reference" / "model.safetensors")


def test_streamed_answer_is_the_greedy_chat_answer(registry) -> None:
    uri, _ = registry
    catalog = Catalog(uri)
    model, tok = catalog.load("tiny/1")
    assert catalog.load("tiny/1")[0] is model  # loaded once
    messages = [{"role": "user", "content": "What sound does a cow make?"}]
    pieces = list(stream_answer(model, tok, messages, Sampling(max_new_tokens=12), threading.Event()))
    assert len(pieces) > 1  # streamed, not in one piece
    from alignment.models.generation import generate

    [[expected]] = generate(model, tok, [messages], max_new_tokens=12, batch_size=1)
    assert "".join(pieces).strip() == expected == "The cow says moo."
