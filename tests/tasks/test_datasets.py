"""tasks.datasets: the prepared splits become MLflow run inputs (mlflow.data MetaDataset) in a real SQLite
store, with digest, context, row count and the full SHA-256."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from alignment.data.prepare import PrepareOptions, prepare
from tasks.datasets import describe_inputs, log_dataset_inputs


@pytest.mark.slow  # ~6 s: MLflow's SQLite migrations
def test_prepared_splits_are_logged_as_run_inputs(tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}) + "\n" for r in rows))
    result = prepare({"sft": str(sft), "train": str(train)}, tmp_path / "prepared", PrepareOptions(heldout_fraction=0.25))

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("data", artifact_location=(tmp_path / "art").as_uri()))
    logged = log_dataset_inputs(run.info.run_id, client, SimpleNamespace(dir=result.dir))
    assert {item["name"]: item["context"] for item in logged} == {
        "alignflow-sft": "training", "alignflow-train": "training", "alignflow-heldout": "evaluation"}

    inputs = {item["name"]: item for item in describe_inputs(client, run.info.run_id)}
    for split in ("sft", "train", "heldout"):
        item = inputs[f"alignflow-{split}"]
        assert item["digest"] == result.fingerprints[split][:32]
        assert item["tags"]["alignflow.sha256"] == result.fingerprints[split]
        assert item["profile"]["num_rows"] == result.counts[split]
    assert inputs["alignflow-train"]["tags"]["alignflow.origin"] == str(train)
    dataset = client.get_run(run.info.run_id).inputs.dataset_inputs[0].dataset
    assert json.loads(dataset.source)["uri"].endswith(".jsonl") and "mlflow_colspec" in dataset.schema
