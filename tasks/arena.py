"""Arena votes back into the pipeline: the export of decided votes as a versioned preference dataset in S3
(logged as an MLflow dataset input of an `arena-export` run), the human win rates as `human.*` tags on the
registered versions, and the human promotion gate read back from those tags."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.types.schema import Array, ColSpec, DataType, Object, Property, Schema
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from arena.catalog import parse_id, tag_label
from arena.export import digest, preference_rows, to_jsonl, unpaired_rows
from arena.stats import pair_stats, version_tags
from arena.store import open_store
from evaluation.gates import GateResult, human_win_rate_gates
from storage.s3 import make_client, parse_s3_uri

EXPORT_EXPERIMENT = "alignflow-arena"


class ArenaExport(BaseModel):
    uri: str  # s3://bucket/arena/exports/<version>/train.jsonl
    latest_uri: str  # the same rows at s3://bucket/arena/exports/latest/train.jsonl
    version: str
    sha256: str
    counts: dict[str, int]
    run_id: str | None
    unpaired_uri: str | None = None  # "both bad" votes and ratings as KTO examples (unpaired.jsonl), when any


def export_votes(store_url: str, *, bucket: str | None = None, tracking_uri: str | None = None,
                 experiment: str = EXPORT_EXPERIMENT, stamp: datetime | None = None) -> ArenaExport:
    """Write every decided vote as preference rows to S3 (a new version folder, then `latest/`), with a
    manifest, and log the file as a dataset input of an MLflow run. Ties and "both bad" are counted only."""
    store = open_store(store_url)
    decided = store.decided()
    rows, counts = preference_rows(decided)
    unpaired = unpaired_rows(decided, store.rated())
    counts = {**counts, "unpaired": len(unpaired)}
    bucket = bucket or os.environ.get("ALIGNFLOW_S3_BUCKET", "alignflow")
    version = (stamp or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    data = to_jsonl(rows)
    sha = digest(data)
    client = make_client()
    uri = f"s3://{bucket}/arena/exports/{version}/train.jsonl"
    latest = f"s3://{bucket}/arena/exports/latest/train.jsonl"
    manifest = {"version": version, "sha256": sha, "counts": counts, "rows": len(rows)}

    unpaired_uri = f"s3://{bucket}/arena/exports/{version}/unpaired.jsonl" if unpaired else None
    if unpaired:
        manifest["unpaired_sha256"] = digest(to_jsonl(unpaired))
    for target in (uri, latest):  # the data first, its manifest last: a manifest names a complete file
        b, key = parse_s3_uri(target)
        client.put_object(Bucket=b, Key=key, Body=data, ContentType="application/x-ndjson")
        if unpaired:
            client.put_object(Bucket=b, Key=key.rsplit("/", 1)[0] + "/unpaired.jsonl", Body=to_jsonl(unpaired),
                              ContentType="application/x-ndjson")
        client.put_object(Bucket=b, Key=key.rsplit("/", 1)[0] + "/manifest.json",
                          Body=json.dumps(manifest, indent=1).encode(), ContentType="application/json")
    run_id = log_export(tracking_uri, experiment, uri, sha, counts, version) if tracking_uri else None
    return ArenaExport(uri=uri, latest_uri=latest, version=version, sha256=sha, counts=counts, run_id=run_id,
                       unpaired_uri=unpaired_uri)


def log_export(tracking_uri: str, experiment: str, uri: str, sha: str, counts: dict[str, int], version: str) -> str:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    run = client.create_run(exp_id, run_name="arena-export", tags={"alignflow.arena.export": version})
    message = Object([Property("role", DataType.string), Property("content", DataType.string)])
    schema = Schema([ColSpec(Array(message), "prompt"), ColSpec(Array(message), "chosen"),
                     ColSpec(Array(message), "rejected"), ColSpec(DataType.string, "arena_annotator")])
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    dataset = MetaDataset(resolve_dataset_source(uri), name="arena-votes", digest=sha[:32], schema=schema)
    client.log_inputs(run.info.run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags=[
        InputTag("mlflow.data.context", "training"), InputTag("alignflow.sha256", sha),
        InputTag("alignflow.arena.version", version)])])
    for key, value in counts.items():
        client.log_metric(run.info.run_id, f"arena/{key}", float(value))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@task(name="arena-export", cache_policy=NO_CACHE)
def export_votes_task(store_url: str, bucket: str | None = None, tracking_uri: str | None = None) -> ArenaExport:
    """The export as a Prefect task (a scheduled flow can export, then retrain with data.train_path set to the
    export's `latest_uri`)."""
    return export_votes(store_url, bucket=bucket, tracking_uri=tracking_uri)


def tag_versions(store_url: str, tracking_uri: str) -> dict[str, dict[str, str]]:
    """Set the `human.*` tags on every registered version that has votes; returns {model id: tags}."""
    rows = pair_stats(open_store(store_url).decided())
    client = MlflowClient(tracking_uri)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    out = {}
    for model_id in sorted({r["model"] for r in rows}):
        name, version, reference = parse_id(model_id)
        if reference:
            continue  # a reference is not a registered version: its numbers stay on the page
        tags = version_tags(rows, model_id, lambda opponent, m=model_id: tag_label(m, opponent))
        tags["human.updated_at"] = stamp
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        out[model_id] = tags
    return out


def human_gates(tracking_uri: str, name: str, version: str, *, min_win_rate: float | None, min_votes: int,
                opponent: str | None = None, use_lower_bound: bool = False) -> list[GateResult]:
    """The human win-rate gates of a version from its `human.*` tags (against `opponent`, a tag label such as
    `3` for version 3, or over every opponent when None); [] when the gate is off (min_win_rate None).
    Call from registration or promotion: `gates += human_gates(...)`."""
    if min_win_rate is None:
        return []
    tags: dict[str, Any] = MlflowClient(tracking_uri).get_model_version(name, version).tags or {}
    prefix = f"human.vs.{opponent}" if opponent else "human"
    n = int(tags.get(f"{prefix}.n", 0))
    rate = float(tags.get(f"{prefix}.ci_low" if use_lower_bound else f"{prefix}.win_rate", "nan"))
    return human_win_rate_gates(win_rate=rate, n=n, min_win_rate=min_win_rate, min_votes=min_votes)
