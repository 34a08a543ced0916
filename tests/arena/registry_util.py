"""Register tiny models the project's way (tasks/registry.py: log_policy + register_version) in a SQLite MLflow
store, each version under a pipeline-like parent run: a `prepare_data` child with `data/heldout.jsonl`, the
parent's `run.output_dir` param and a `summary.json` naming the reference model, as a real run leaves them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mlflow import MlflowClient

from alignment.instruct import quicktask
from alignment.models.tiny import make_tiny_model
from alignment.records import ModelRef, TrainOutput
from evaluation.gates import GateResult
from tasks.registry import log_policy, register_version
from tasks.tracking import RunContext

HELDOUT = ["What sound does a cow make?", "What colour is a fox?"]
# What each tiny model is taught to answer (a random one answers nothing readable): a good policy, a wrong
# one, and the refusing reference.
ANSWERS = {1: ["The cow says moo.", "The fox is red."], 2: ["The cow says quack.", "The fox is blue."],
           3: ["The cow says moo.", "The fox is red."]}
REFUSAL = ["Sorry, I do not know.", "Sorry, I do not know."]


def tiny(path: Path, seed: int, answers: list[str] | None = None, steps: int = 60) -> Path:
    """A tiny Llama fitted in a few seconds to answer the HELDOUT questions with `answers` (greedy)."""
    import torch

    from alignment.models.loading import load_causal_lm, load_tokenizer

    make_tiny_model(path, quicktask.corpus(), vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                    intermediate_size=64, max_position_embeddings=256, seed=seed)
    model, tok = load_causal_lm(str(path)), load_tokenizer(str(path))
    texts = [tok.apply_chat_template([{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                                     tokenize=False) for q, a in zip(HELDOUT, answers or ANSWERS.get(seed, REFUSAL),
                                                                    strict=True)]
    torch.manual_seed(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(steps):
        for text in texts:
            ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optim.step()
            optim.zero_grad()
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    return path


def register_tiny(tracking_uri: str, root: Path, name: str, seed: int, champion: bool) -> str:
    """One registered version (champion when `champion`), trained nowhere: a tiny model with seed `seed`, its
    reference another tiny model. Returns the version."""
    from alignment.models.loading import load_causal_lm, load_tokenizer

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("arena-test")
    exp_id = exp.experiment_id if exp else client.create_experiment(
        "arena-test", artifact_location=(root / "artifacts").as_uri())
    out = root / f"run-{seed}"
    policy, reference = tiny(out / "policy", seed), tiny(out / "reference", seed + 100, REFUSAL)
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

    previous, exported = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        uri, model_id = log_policy(load_causal_lm(str(policy)), load_tokenizer(str(policy)), trained, register)
        gates = [GateResult("win_rate", 1.0 if champion else 0.0, 0.5, champion)]
        # the registry finds the logged model through the fluent tracking URI: keep it set until here
        version, _ = register_version(ctx, name, uri, model_id, register, gates)
    finally:
        # set_tracking_uri also exports $MLFLOW_TRACKING_URI: put the variable back as it was (unset), or every
        # later in-process run in this test session tracks into MLflow's default ./mlflow.db
        mlflow.set_tracking_uri(previous)
        if exported is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = exported
    (out / "summary.json").write_text(json.dumps({"parent_run_id": parent,
                                                  "evaluation": {"reference_model": str(reference)}}))
    return version
