"""Register tiny models the project's way (tasks/registry.py: log_policy + register_version) in a SQLite MLflow
store, each version under a pipeline-like parent run: a `prepare_data` child with `data/heldout.jsonl`, the
parent's `run.output_dir` param and a `summary.json` naming the reference model, as a real run leaves them."""

from __future__ import annotations

import json
from pathlib import Path

from mlflow import MlflowClient

from alignment import quicktask
from alignment.stages import ModelRef, TrainOutput
from alignment.tiny_model import make_tiny_model
from evaluation.gates import GateResult
from tasks.registry import log_policy, register_version
from tasks.tracking import RunContext

HELDOUT = ["What sound does a cow make?", "What colour is a fox?"]


def tiny(path: Path, seed: int) -> Path:
    return make_tiny_model(path, quicktask.corpus(), vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                           intermediate_size=64, max_position_embeddings=256, seed=seed)


def register_tiny(tracking_uri: str, root: Path, name: str, seed: int, champion: bool) -> str:
    """One registered version (champion when `champion`), trained nowhere: a tiny model with seed `seed`, its
    reference another tiny model. Returns the version."""
    from alignment.models import load_causal_lm, load_tokenizer

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("arena-test")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "arena-test", artifact_location=(root / "artifacts").as_uri())
    out = root / f"run-{seed}"
    policy, reference = tiny(out / "policy", seed), tiny(out / "reference", seed + 100)
    parent = client.create_run(exp_id, run_name="pipeline-dpo").info.run_id
    client.log_param(parent, "run.output_dir", str(out))
    ctx = RunContext(tracking_uri=tracking_uri, experiment_id=exp_id, experiment_name="arena-test",
                     parent_run_id=parent, output_dir=str(out))
    prep = client.create_run(exp_id, run_name="prepare_data", tags={"mlflow.parentRunId": parent,
                                                                    "alignflow.stage": "prepare_data"}).info.run_id
    heldout = out / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}],
                                           "chosen": [{"role": "assistant", "content": "a"}],
                                           "rejected": [{"role": "assistant", "content": "b"}]}) + "\n"
                               for q in HELDOUT))
    client.log_artifact(prep, str(heldout), "data")
    register = client.create_run(exp_id, run_name="register", tags={"mlflow.parentRunId": parent,
                                                                    "alignflow.stage": "register"}).info.run_id
    trained = TrainOutput(model=ModelRef(path=str(policy), fingerprint="f" * 64), method="dpo", steps=1,
                          resumed_from_step=0, final_metrics={}, seconds=0.0, tokens=0)
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        uri, model_id = log_policy(load_causal_lm(str(policy)), load_tokenizer(str(policy)), trained, register)
        gates = [GateResult("win_rate", 1.0 if champion else 0.0, 0.5, champion)]
        # the registry finds the logged model through the fluent tracking URI: keep it set until here
        version, _ = register_version(ctx, name, uri, model_id, register, gates)
    finally:
        mlflow.set_tracking_uri(previous)
    (out / "summary.json").write_text(json.dumps({"parent_run_id": parent,
                                                  "evaluation": {"reference_model": str(reference)}}))
    return version
