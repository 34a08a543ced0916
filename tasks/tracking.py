"""MLflow bindings: one parent run per pipeline run, one child run per stage, metrics batched off the hot path.

Runs are driven through `MlflowClient` with explicit run ids (no fluent active-run stack), so stages work
the same in any thread or process that has the `RunContext`.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from alignment.config import PipelineConfig, config_to_params
from tasks.background import submit
from tasks.timing import current

SECRET_KEY = re.compile(r"(secret|password|passwd|token|api[_-]?key|access[_-]?key|credential)", re.I)
BATCH_LIMIT = 1000  # MLflow's log_batch maximum number of metrics per call


class RunContext(BaseModel):
    """What a stage needs to log into the pipeline's MLflow parent run."""

    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    output_dir: str
    summary_dir: str = ""  # where summary.json goes: run.summary_dir, else output_dir


def resolve_tracking(cfg: PipelineConfig) -> tuple[str, str | None]:
    """(tracking URI, artifact location for a new experiment): tracking.uri, else $MLFLOW_TRACKING_URI (set by
    the local stack: a server that proxies artifacts to S3), else a SQLite store and a local artifact folder
    under output_dir (MLflow refuses the plain file store in recent versions)."""
    out = Path(cfg.run.output_dir).resolve()
    configured = cfg.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
    uri = configured or f"sqlite:///{out / 'mlflow.db'}"
    artifacts = cfg.tracking.artifact_location
    if artifacts is None and not configured:
        artifacts = (out / "mlartifacts").as_uri()
    return uri, artifacts


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except mlflow.exceptions.MlflowException:  # created concurrently
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def redact_params(params: dict[str, str]) -> dict[str, str]:
    """Replace values of secret-looking keys; secrets never reach MLflow params or tags."""
    return {k: ("***" if SECRET_KEY.search(k) and v not in ("None", "") else v) for k, v in params.items()}


def start_pipeline_run(cfg: PipelineConfig, run_name: str | None = None) -> RunContext:
    # MLflow prints a "View run" line per run it ends; the Prefect summary artifact links them all instead.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri, artifacts = resolve_tracking(cfg)
    Path(cfg.run.output_dir).mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)  # for the fluent API (model logging)
    # MLflow also exports the URI as $MLFLOW_TRACKING_URI; here that variable is the user's setting, read by
    # resolve_tracking, so a second run in this process (compare's variants, tests) must not inherit ours.
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, cfg.tracking.experiment, artifacts)
    run = client.create_run(exp_id, run_name=run_name or f"pipeline-{cfg.preference.method}",
                            tags={"alignflow.stage": "pipeline", "alignflow.method": cfg.preference.method})
    log_params(client, run.info.run_id, redact_params(config_to_params(cfg)))
    return RunContext(tracking_uri=uri, experiment_id=exp_id, experiment_name=cfg.tracking.experiment,
                      parent_run_id=run.info.run_id, output_dir=str(Path(cfg.run.output_dir).resolve()),
                      summary_dir=str(Path(cfg.run.summary_dir or cfg.run.output_dir).resolve()))


def finish_run(ctx: RunContext, run_id: str, ok: bool, end_time: int | None = None) -> None:
    """End a run FINISHED or FAILED; `end_time` (ms since the epoch) when it ended earlier than this call."""
    MlflowClient(ctx.tracking_uri).set_terminated(run_id, RunStatus.to_string(
        RunStatus.FINISHED if ok else RunStatus.FAILED), end_time=end_time)


def log_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    items = [Param(k, v[:6000]) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


class MlflowMetricsLogger:
    """`MetricsLogger` that queues metrics and sends them in batches from a background thread, so the
    training loop never waits on the tracking server. Keeps every record for plots."""

    def __init__(self, client: MlflowClient, run_id: str | Future[str], flush_seconds: float = 2.0) -> None:
        # run_id may still be on its way (StageRun creates runs on the tracking thread): resolved when sending
        self.client, self._run_id, self.flush_seconds = client, run_id, flush_seconds
        self.records: list[tuple[int | None, dict[str, float]]] = []
        self._queue: queue.Queue[Metric | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._pump, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))
        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, int | float) and math.isfinite(float(value)):
                self._queue.put(Metric(key, float(value), now, step or 0))

    @property
    def run_id(self) -> str:
        return self._run_id.result() if isinstance(self._run_id, Future) else self._run_id

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"could not log metrics to MLflow: {self._error}") from self._error

    def _pump(self) -> None:
        pending: list[Metric] = []
        deadline = time.monotonic() + self.flush_seconds
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                item = ...
            if item is not None and item is not ...:
                pending.append(item)
            if item is None or time.monotonic() >= deadline or len(pending) >= BATCH_LIMIT:
                self._send(pending)
                pending = []
                deadline = time.monotonic() + self.flush_seconds
            if item is None:
                return

    def _send(self, metrics: list[Metric]) -> None:
        if not metrics or self._error is not None:
            return
        try:
            for start in range(0, len(metrics), BATCH_LIMIT):
                self.client.log_batch(self.run_id, metrics=metrics[start:start + BATCH_LIMIT])
        except Exception as err:  # reported by close(); never raised inside the training loop
            self._error = err


class StageRun:
    """A child run for one stage: params, batched metrics, artifacts. Its creation, params, tags and artifacts
    go through tasks/background.py: in a pipeline run its tracking thread sends them while the stage works
    (the run's start time is taken here, so the run still starts when the stage did); `run_id` waits for the
    creation only where a caller needs the id itself."""

    def __init__(self, ctx: RunContext, stage: str, tags: dict[str, str] | None = None) -> None:
        started = int(time.time() * 1000)
        self.ctx, self.stage = ctx, stage
        self.client = MlflowClient(ctx.tracking_uri)
        all_tags = {"mlflow.parentRunId": ctx.parent_run_id, "alignflow.stage": stage, **(tags or {})}
        self._created = submit(self._create, started, all_tags)
        self.logger = MlflowMetricsLogger(self.client, self._created)

    def _create(self, start_time: int, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.ctx.experiment_id, start_time=start_time, tags=tags, run_name=self.stage)
        return run.info.run_id

    @property
    def run_id(self) -> str:
        return self._created.result()

    def log_params(self, params: dict[str, Any]) -> None:
        redacted = redact_params({k: str(v) for k, v in params.items()})
        submit(lambda: log_params(self.client, self.run_id, redacted))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logger.log_metrics(metrics, step)

    def set_tags(self, tags: dict[str, str]) -> None:
        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for start in range(0, len(items), 100):  # one request per 100 tags (log_batch's limit)
            batch = items[start:start + 100]
            submit(lambda batch=batch: self.client.log_batch(self.run_id, tags=batch))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or folder; the file must stay unchanged until the run's tracking writes are drained."""
        if Path(path).is_dir():
            submit(lambda: self.client.log_artifacts(self.run_id, str(path), artifact_path))
        else:
            submit(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue `fn(run_id, *args)` on the tracking thread (the id resolved there, once the run exists)."""
        submit(lambda: fn(self.run_id, *args))


@contextlib.contextmanager
def stage_run(ctx: RunContext, stage: str, params: dict[str, Any] | None = None,
              tags: dict[str, str] | None = None, opened: StageRun | None = None) -> Iterator[StageRun]:
    """Open a child run (or continue `opened`); mark it FINISHED or FAILED on exit, flushing queued metrics
    either way."""
    run = opened or StageRun(ctx, stage, tags)
    if params:
        run.log_params(params)
    ok = False
    try:
        yield run
        ok = True
    finally:
        submit(close_and_finish, ctx, run, ok, int(time.time() * 1000))


def close_and_finish(ctx: RunContext, run: StageRun, ok: bool, end_time: int) -> None:
    """Flush a stage run's queued metrics, then end it (FINISHED or FAILED) at the time the stage ended, even
    if the flush failed."""
    try:
        run.logger.close()
    finally:
        finish_run(ctx, run.run_id, ok, end_time)


def stage_run_ids(ctx: RunContext) -> dict[str, str]:
    """Child run id of every stage of this pipeline run, read back from MLflow."""
    client = MlflowClient(ctx.tracking_uri)
    runs = client.search_runs([ctx.experiment_id], f"tags.mlflow.parentRunId = '{ctx.parent_run_id}'",
                              max_results=100)
    return {r.data.tags.get("alignflow.stage", r.info.run_name): r.info.run_id
            for r in sorted(runs, key=lambda r: r.info.start_time)}


def log_timing(ctx: RunContext) -> dict[str, Any]:
    """The run's time split so far (tasks/timing.py) as `timing/*` metrics of the parent run; returned for
    the summary. Empty when no timing is active."""
    timing = current()
    if timing is None:
        return {}
    split = timing.summary()
    metrics = {f"timing/{k}": v for k, v in split.items() if isinstance(v, float)}
    metrics.update({f"timing/compute_s/{stage}": v for stage, v in split["compute_by_stage_s"].items()})
    client = MlflowClient(ctx.tracking_uri)
    now = int(time.time() * 1000)
    client.log_batch(ctx.parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    return split
