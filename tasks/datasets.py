"""Log the prepared data sets to MLflow as run inputs (`mlflow.data`), with their digests.

`MetaDataset` carries only metadata (no pandas, nothing loaded): the prepared file as its source, the
file's SHA-256 as its digest (first 32 hex digits: MLflow's digest column is 36 characters; the whole
hash is an input tag), the canonical schema and a profile with the row count.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput, InputTag
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, DataType, Object, Property, Schema

from alignment.data.prepare import describe_prepared

CONTEXTS = {"sft": "training", "train": "training", "heldout": "evaluation"}
DIGEST_CHARS = 32


class _ProfiledMetaDataset(MetaDataset):
    """A MetaDataset with a profile (MLflow shows it in the run's Datasets panel)."""

    def __init__(self, *args: Any, profile: dict[str, Any], **kwargs: Any) -> None:
        self._profile = profile
        super().__init__(*args, **kwargs)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _column(name: str, kind: str) -> ColSpec:
    if kind.startswith("list<"):
        message = Object([Property("role", DataType.string), Property("content", DataType.string)])
        return ColSpec(Array(message), name)
    return ColSpec(DataType.long if kind == "long" else DataType.string, name)


def _source(path: str) -> Any:
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # "can be interpreted in multiple ways" for local paths: it is local
        warnings.simplefilter("ignore")
        return resolve_dataset_source(path)


def dataset_inputs(prepared_dir: str, name_prefix: str = "alignflow") -> list[DatasetInput]:
    """One DatasetInput per prepared split (sft, train, heldout)."""
    inputs = []
    for item in describe_prepared(prepared_dir):
        schema = Schema([_column(column, kind) for column, kind in item["schema"].items()])
        dataset = _ProfiledMetaDataset(
            _source(item["path"]), name=f"{name_prefix}-{item['name']}", digest=item["digest"][:DIGEST_CHARS],
            schema=schema, profile={"num_rows": item["rows"], "sha256": item["digest"], "origin": item["source"]})
        tags = [InputTag("mlflow.data.context", CONTEXTS.get(item["split"], item["split"])),
                InputTag("alignflow.split", item["split"]), InputTag("alignflow.sha256", item["digest"])]
        if item["source"]:
            tags.append(InputTag("alignflow.origin", str(item["source"])[:500]))
        inputs.append(DatasetInput(dataset._to_mlflow_entity(), tags=tags))
    return inputs


def log_dataset_inputs(run_id: str, client: MlflowClient, prepared: Any) -> list[dict[str, str]]:
    """Log every prepared split of ``prepared`` (anything with ``.dir``, e.g. stages.PreparedData, or a
    folder path) as an input of ``run_id``; returns [{"name", "digest", "context"}] for the log."""
    folder = prepared if isinstance(prepared, str) else str(prepared.dir)
    inputs = dataset_inputs(folder)
    client.log_inputs(run_id, datasets=inputs)
    return [{"name": i.dataset.name, "digest": i.dataset.digest,
             "context": next(t.value for t in i.tags if t.key == "mlflow.data.context")} for i in inputs]


def describe_inputs(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """Read a run's dataset inputs back (for tests and summaries)."""
    run = client.get_run(run_id)
    return [{"name": d.dataset.name, "digest": d.dataset.digest, "profile": json.loads(d.dataset.profile or "{}"),
             "tags": {t.key: t.value for t in d.tags}} for d in run.inputs.dataset_inputs]
