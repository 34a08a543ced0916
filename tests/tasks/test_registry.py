"""The policy's model logging (tasks/registry.py): it runs on the pipeline's tracking thread while evaluation
loads models on the main thread, so it must not build a model itself — transformers' `from_pretrained`
swaps process-wide state while it builds one (CI once saw a tied output layer left on the meta device).
What it logs must still load back as a generating pipeline with the trained weights."""

from __future__ import annotations

import threading
from pathlib import Path

import mlflow
import pytest
import torch
from transformers import PreTrainedModel

from alignment.config import load_config
from alignment.instruct import quicktask
from alignment.models.loading import load_causal_lm
from alignment.models.tiny import make_tiny_model
from alignment.records import ModelRef, TrainOutput
from tasks.background import background_tracking
from tasks.registry import start_policy_logging
from tasks.tracking import RunContext


@pytest.fixture
def trained(tmp_path: Path) -> TrainOutput:
    model_dir = make_tiny_model(tmp_path / "model", quicktask.corpus(), vocab_size=300, hidden_size=32,
                                num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=128,
                                seed=0)
    return TrainOutput(model=ModelRef(path=str(model_dir), fingerprint="f" * 64), method="dpo", steps=1,
                       resumed_from_step=0, final_metrics={}, seconds=0.0, tokens=0)


def test_policy_is_built_on_the_callers_thread_and_loads_back(
        trained: TrainOutput, run_context: RunContext, monkeypatch: pytest.MonkeyPatch) -> None:
    built_on: list[str] = []
    real_init = PreTrainedModel.__init__

    def recording_init(self, *args, **kwargs):  # every transformers model, however it is made
        built_on.append(threading.current_thread().name)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "__init__", recording_init)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = run_context
    mlflow.set_tracking_uri(ctx.tracking_uri)
    try:
        with background_tracking():
            pending = start_policy_logging(load_config("configs/quickstart.yaml", []), trained, ctx)
            model_uri, model_id = pending.logged.result()
        assert set(built_on) == {threading.current_thread().name}  # built here (LM and its body), not on the tracker
        pipe = mlflow.transformers.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)  # also unsets the $MLFLOW_TRACKING_URI it exported
    assert model_id and pipe.task == "text-generation"
    saved = load_causal_lm(trained.model.path)
    for name, tensor in saved.state_dict().items():  # the trained weights, tied output layer included
        torch.testing.assert_close(pipe.model.state_dict()[name], tensor, msg=name)
    out = pipe([{"role": "user", "content": "What sound does a cow make?"}], max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"
