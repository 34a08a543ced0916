"""Prefect tasks: thin wrappers binding each stage function to its MLflow child run and output folder."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Generic, TypeVar

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.deployments import run_deployment
from pydantic import BaseModel

from alignment import stages
from alignment.config import OnPolicyConfig, PipelineConfig, TrainingConfig, output_neutral_fields
from alignment.records import ModelRef, PreparedData, TrainOutput
from alignment.training.distributed import join_training
from evaluation.judges import make_scorer
from evaluation.plots import plot_curves, plot_reward_margins
from storage import folders
from tasks.checkpoints import mirrored_checkpoints
from tasks.datasets import log_dataset_inputs
from tasks.nodes import run_on_nodes
from tasks.results import result_storage
from tasks.timing import compute, orchestration
from tasks.tracking import RunContext, stage_run

TRAIN_CURVES = ["loss", "rewards/margins", "rewards/accuracies", "learning_rate", "grad_norm", "nll_loss"]


def flatten(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"prefix.optim.lr": 1}, for MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(f"{prefix}.{key}", value))
        else:
            flat[f"{prefix}.{key}"] = value
    return flat


T = TypeVar("T")
COMPLETE = "COMPLETE"  # written last into a stage folder: the stage's outputs are all there
# Training settings that do not change what a stage produces, so they are left out of its cache key: where it
# runs (training.pool), where its checkpoints are kept, and glibc's mmap threshold (where freed memory goes:
# speed and peak memory, not the arithmetic). training.onednn_linear stays in: another kernel, other rounding.
# training settings that never change a stage's output, as the config declares them (SAME_OUTPUT)
UNKEYED_TRAINING = output_neutral_fields(TrainingConfig)
# the rounds' settings: an on-policy stage samples the model it is given, whichever round asks
UNKEYED_ONPOLICY = output_neutral_fields(OnPolicyConfig)


class StageResult(BaseModel, Generic[T]):
    """A stage's record plus where it was produced, so a cached result can name the run it reuses."""

    record: T
    stage: str
    run_id: str
    parent_run_id: str


def stage_keys(cfg: PipelineConfig, prepared: PreparedData | None = None, base: ModelRef | None = None,
               sft: TrainOutput | None = None) -> dict[str, str]:
    """Content keys of the cacheable stages: each stage's config section, its inputs' fingerprints and the
    code version (alignment.stages.CODE_VERSION). A stage re-runs exactly when its key changes."""
    keys = {"data": stages.stage_key("data", cfg.data.model_dump(), cfg.run.seed)}
    if prepared is not None:
        keys["base"] = stages.stage_key("base", cfg.model.model_dump(), prepared.fingerprint, cfg.run.seed)
    if prepared is not None and base is not None:
        common = [cfg.training.model_dump(exclude=UNKEYED_TRAINING), cfg.data.max_prompt_tokens,
                  cfg.data.max_response_tokens, prepared.fingerprint, base.fingerprint, cfg.run.seed,
                  cfg.model.trust_remote_code]
        keys["sft"] = stages.stage_key("sft", cfg.sft.model_dump(), *common)
        method = cfg.preference.method
        init = stages.starting_model(cfg, base, sft)
        held_to = stages.reference_model(cfg, init, sft)  # another model than the start only in a later round
        keys[method] = stages.stage_key(method, getattr(cfg, method).model_dump(), *common,
                                        sft.model.fingerprint if sft else None,
                                        *([held_to.fingerprint] if held_to.fingerprint != init.fingerprint else []))
    return keys


def run_cached(stage_task: Any, stage: str, key: str, ctx: RunContext, *args: Any) -> StageResult:
    """Run a stage task under Prefect's cache, keyed by content. Results are persisted in S3 when the run
    has an S3 endpoint, else beside the outputs (tasks/results.py); a stage folder whose outputs are
    incomplete forces a refresh. A cached result is recorded in MLflow as a child run tagged with the run
    it reuses."""
    out_dir = Path(ctx.output_dir) / f"{stage}-{key}"
    storage = result_storage(ctx.output_dir)
    cached_task = stage_task.with_options(
        cache_key_fn=lambda *_: f"{stage}-{key}", persist_result=True, result_storage=storage,
        refresh_cache=not (out_dir / COMPLETE).is_file())
    result: StageResult = cached_task(*args, ctx, out_dir)
    if result.parent_run_id != ctx.parent_run_id:
        record_reuse(ctx, result)
    return result


def prepare(cfg: PipelineConfig, ctx: RunContext) -> PreparedData:
    return run_cached(prepare_data_task, "data", stage_keys(cfg)["data"], ctx, cfg).record


def build_base(cfg: PipelineConfig, prepared: PreparedData, ctx: RunContext) -> ModelRef:
    return run_cached(build_model_task, "base", stage_keys(cfg, prepared)["base"], ctx, cfg, prepared).record


def train_sft(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, ctx: RunContext,
              full: bool = False) -> Any:
    """SFT in process, or on the training pool when training.pool is set. `full` returns the StageResult."""
    key = stage_keys(cfg, prepared, base)["sft"]
    if cfg.training.pool:
        result = run_remote(cfg, "sft", key, ctx, prepared=prepared, base=base)
    else:
        result = run_cached(sft_task, "sft", key, ctx, cfg, prepared, base)
    return result if full else result.record


def train_preference(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                     ctx: RunContext, full: bool = False) -> Any:
    method = cfg.preference.method
    key = stage_keys(cfg, prepared, base, sft)[method]
    if cfg.training.pool:
        result = run_remote(cfg, method, key, ctx, prepared=prepared, base=base, sft=sft)
    else:
        result = run_cached(preference_task, method, key, ctx, cfg, prepared, base, sft)
    return result if full else result.record


def onpolicy(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
             ctx: RunContext) -> PreparedData:
    """On-policy pairs sampled from the model preference training starts from (SFT, else base); cached by
    content like the other stages. Returns the pairs as prepared data for the later stages."""
    model = sft.model if sft is not None else base
    scorer = cfg.eval.judge.model_dump() if "judge" in cfg.onpolicy.scorers else None
    key = stages.stage_key("onpolicy", cfg.onpolicy.model_dump(exclude=UNKEYED_ONPOLICY), scorer, prepared.fingerprint, model.fingerprint,
                           cfg.run.seed, cfg.data.max_prompt_tokens, cfg.data.max_response_tokens,
                           cfg.data.truncation)
    return run_cached(onpolicy_task, "onpolicy", key, ctx, cfg, prepared, model).record


def join_stage(cfg: PipelineConfig, stage: str, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
               ctx: RunContext) -> None:
    """On a node of rank > 0 of a multi-node stage: run this node's processes of the head's training in the
    stage folder the head uses (same content key, shared run.output_dir); the head records and caches it."""
    name = "sft" if stage == "sft" else cfg.preference.method
    key = stage_keys(cfg, prepared, base, sft)[name]
    out_dir = Path(ctx.output_dir) / f"{name}-{key}"
    if (out_dir / COMPLETE).is_file():
        return  # the head reuses the finished stage without starting its processes
    join_training(stage, cfg, prepared=prepared, base=base, sft=sft, out_dir=out_dir)


def s3_stage_uri(local: str | Path) -> str:
    """Where a stage folder's part lives in S3: s3://<bucket>/stages/<stage>-<key>/<part>."""
    path = Path(local)
    return f"s3://{folders.bucket()}/stages/{path.parent.name}/{path.name}"


def publish_model(ref: ModelRef) -> ModelRef:
    """The record with its model folder published to S3 (hub ids and s3:// URIs are kept)."""
    if folders.is_s3_uri(ref.path) or not Path(ref.path).is_dir():
        return ref
    return ref.model_copy(update={"path": folders.publish_dir(ref.path, s3_stage_uri(ref.path))})


def publish_trained(trained: TrainOutput) -> TrainOutput:
    """The record with its model, and the reference it was held to, published to S3 (a later round on another
    worker trains against that reference)."""
    update = {"model": publish_model(trained.model)}
    if trained.reference is not None:
        update["reference"] = publish_model(trained.reference)
    return trained.model_copy(update=update)


def publish_stage_output(result: StageResult) -> StageResult:
    """A training StageResult whose models live in S3 (what a remote stage hands back)."""
    return result.model_copy(update={"record": publish_trained(result.record)})


def run_remote(cfg: PipelineConfig, stage: str, key: str, ctx: RunContext, *, prepared: PreparedData,
               base: ModelRef, sft: TrainOutput | None = None) -> StageResult:
    """Run a training stage on the `training.pool` work pool via run_deployment, passing only s3:// URIs and
    the run context; the result comes back as a record in S3. A result already in S3 for this content key
    is reused (and recorded in MLflow as such) without starting a run."""
    result_uri = f"s3://{folders.bucket()}/stages/{stage}-{key}/result.json"
    found = folders.get_json(result_uri)
    reused = found is not None
    if found is None:
        params = {
            "stage": "sft" if stage == "sft" else "preference",
            "config": cfg.model_dump(mode="json"),
            "prepared": prepared.model_copy(update={"dir": folders.publish_dir(
                prepared.dir, s3_stage_uri(prepared.dir))}).model_dump(mode="json"),
            "base": publish_model(base).model_dump(mode="json"),
            "sft": publish_trained(sft).model_dump(mode="json") if sft else None,
            "ctx": ctx.model_dump(mode="json"), "result_uri": result_uri,
        }
        name = f"alignment-training/{cfg.training.pool}"
        get_run_logger().info("%s: running on work pool %r through deployment %s", stage, cfg.training.pool, name)
        if cfg.training.num_nodes > 1:
            run_on_nodes(cfg, stage, name, params, key)
        else:
            flow_run = run_deployment(name, parameters=params, timeout=None)
            if not flow_run.state or not flow_run.state.is_completed():
                raise RuntimeError(f"{stage} on pool {cfg.training.pool!r} ended {flow_run.state!r} "
                                   f"(flow run {flow_run.id}); see the worker's log")
        found = folders.get_json(result_uri)
        if found is None:
            raise RuntimeError(f"{stage}: the training flow finished but wrote no result at {result_uri}")
    result = StageResult[TrainOutput].model_validate(found)
    trained = result.record
    local = trained.model_copy(update={"model": trained.model.model_copy(
        update={"path": folders.materialize(trained.model.path)})})
    result = result.model_copy(update={"record": local})
    if reused and result.parent_run_id != ctx.parent_run_id:
        record_reuse(ctx, result)
    return result


def record_reuse(ctx: RunContext, result: StageResult) -> None:
    tags = {"alignflow.cached": "true", "alignflow.reused_run_id": result.run_id,
            "alignflow.reused_pipeline_run_id": result.parent_run_id}
    with stage_run(ctx, result.stage, tags=tags) as run:
        if isinstance(result.record, TrainOutput):
            run.log_metrics({k: v for k, v in result.record.final_metrics.items()})
    get_run_logger().info("%s: reused the result of MLflow run %s (cached)", result.stage, result.run_id)


def finish(out_dir: Path, record: T, stage: str, run_id: str, ctx: RunContext) -> StageResult[T]:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / COMPLETE).write_text(run_id)
    return StageResult(record=record, stage=stage, run_id=run_id, parent_run_id=ctx.parent_run_id)


@task(name="prepare-data")
def prepare_data_task(cfg: PipelineConfig, ctx: RunContext, out_dir: Path) -> StageResult[PreparedData]:
    with stage_run(ctx, "prepare_data", flatten("data", cfg.data.model_dump())) as run:
        with compute("prepare_data"):
            prepared = stages.prepare_data(cfg, out_dir)
        run.log_metrics({f"rows/{k}": float(v) for k, v in prepared.counts.items()})
        dropped = {f"dropped/{split}": float(r["rows_dropped"]) for split, r in prepared.report["drops"].items()}
        run.log_metrics(dropped)
        run.set_tags({"alignflow.data_fingerprint": prepared.fingerprint})
        run.submit(log_dataset_inputs, run.client, prepared)
        for name in ("report.json", "lengths.png"):  # prompt-only data (the instruction task) has no plot
            if (Path(prepared.dir) / name).is_file():
                run.log_artifact(Path(prepared.dir) / name, "data")
        for split in ("train", "heldout"):
            run.log_artifact(prepared.path(split), "data")
    return finish(out_dir, prepared, "prepare_data", run.run_id, ctx)


@task(name="onpolicy-pairs")
def onpolicy_task(cfg: PipelineConfig, prepared: PreparedData, model: ModelRef, ctx: RunContext,
                  out_dir: Path) -> StageResult[PreparedData]:
    with stage_run(ctx, "onpolicy", flatten("onpolicy", cfg.onpolicy.model_dump())) as run:
        with compute("onpolicy"):
            scorer = make_scorer(cfg.onpolicy.scorers, cfg.eval.judge)
            pairs, metrics = stages.onpolicy_pairs(cfg, prepared, model, scorer, out_dir)
        run.log_metrics({**metrics, **{f"rows/{k}": float(v) for k, v in pairs.counts.items()}})
        run.set_tags({"alignflow.data_fingerprint": pairs.fingerprint, "alignflow.onpolicy_scorer": scorer.name})
        run.submit(log_dataset_inputs, run.client, pairs)
        for name in ("report.json", "lengths.png", "train.jsonl", "heldout.jsonl"):
            if (Path(pairs.dir) / name).is_file():
                run.log_artifact(Path(pairs.dir) / name, "data")
        for split in ("train", "heldout"):
            run.log_artifact(out_dir / f"samples-{split}.jsonl", "samples")
    get_run_logger().info("onpolicy: %s pairs from %s prompts (%.1f generated tokens/s)",
                          pairs.counts, int(metrics["onpolicy/train/prompts"] + metrics["onpolicy/heldout/prompts"]),
                          metrics["onpolicy/tokens_per_sec"])
    return finish(out_dir, pairs, "onpolicy", run.run_id, ctx)


@task(name="build-base-model")
def build_model_task(cfg: PipelineConfig, prepared: PreparedData, ctx: RunContext,
                     out_dir: Path) -> StageResult[ModelRef]:
    with stage_run(ctx, "base_model", flatten("model", cfg.model.model_dump())) as run:
        with compute("base_model"):
            base = stages.build_base_model(cfg, prepared, out_dir)
        run.set_tags({"alignflow.model_path": base.path, "alignflow.model_fingerprint": base.fingerprint,
                      **(base.source or {})})
        if base.source:  # a converted GGUF file: its size and the conversion's check as metrics too
            run.log_metrics({"gguf/parameters": float(base.source["alignflow.gguf.parameters"]),
                             "gguf/logits_max_abs_diff": float(base.source["alignflow.gguf.logits_max_abs_diff"]),
                             "gguf/convert_seconds": float(base.source["alignflow.gguf.convert_seconds"])})
    return finish(out_dir, base, "base_model", run.run_id, ctx)


_PROGRESS_UPDATES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefect-progress")


def progress_reporter(title: str) -> Any:
    """A Prefect progress artifact updated as training logs (created lazily on the first report; later
    updates are sent from a background thread, so training never waits on the Prefect API), and a log line
    at every tenth of the run."""
    state: dict[str, Any] = {"next_pct": 10.0}
    logger = get_run_logger()

    def report(step: int, total: int, metrics: dict[str, float]) -> None:
        pct = 100.0 * step / max(1, total)
        if pct < state["next_pct"] and step != total:
            return
        state["next_pct"] = pct + 10.0
        with orchestration():  # called from inside training: what is done here is overhead, timed as such
            if "id" not in state:  # needs this thread's run context, to be linked to the task run
                state["id"] = create_progress_artifact(progress=pct, description=title)
            else:
                # in this thread's context: Prefect's settings (the API address) can live there
                _PROGRESS_UPDATES.submit(contextvars.copy_context().run, update_progress_artifact,
                                         artifact_id=state["id"], progress=pct)
            logger.info("%s: step %d/%d loss %.4f (%.0f tokens/s)", title, step, total,
                        metrics.get("loss", float("nan")), metrics.get("tokens_per_sec", 0.0))

    return report


def log_training(run: Any, out: TrainOutput, name: str) -> None:
    if out.runtime:  # the stage's runtime plan (alignment/kernels/runtime_plan.py), as the compute side derived it
        run.log_params(out.runtime)
    run.log_metrics({"train_seconds": out.seconds, "train_tokens": float(out.tokens),
                     "resumed_from_step": float(out.resumed_from_step)})
    run.set_tags({"alignflow.model_fingerprint": out.model.fingerprint})
    with compute(name.lower()):
        png = plot_curves(run.logger.records, TRAIN_CURVES, f"{name} training",
                          Path(out.model.path).parent / "curves.png")
        margins = plot_reward_margins(run.logger.records, Path(out.model.path).parent / "reward_margins.png",
                                      f"{name} implicit rewards")
    if png:
        run.log_artifact(png, "plots")
    if margins:
        run.log_artifact(margins, "plots")


@task(name="sft")
def sft_task(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, ctx: RunContext,
             out_dir: Path) -> StageResult[TrainOutput]:
    params = flatten("sft", cfg.sft.model_dump())
    with stage_run(ctx, "sft", params) as run:
        with mirrored_checkpoints(cfg, out_dir), compute("sft"):
            out = stages.run_sft(cfg, prepared, base, out_dir, run.logger, progress_reporter("SFT training"))
        log_training(run, out, "SFT")
    return finish(out_dir, out, "sft", run.run_id, ctx)


@task(name="preference")
def preference_task(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                    ctx: RunContext, out_dir: Path) -> StageResult[TrainOutput]:
    method = cfg.preference.method
    with stage_run(ctx, method, flatten(method, getattr(cfg, method).model_dump())) as run:
        with mirrored_checkpoints(cfg, out_dir), compute(method):
            out = stages.run_preference(cfg, prepared, base, sft, out_dir, run.logger,
                                        progress_reporter(f"{method.upper()} training"))
        log_training(run, out, method.upper())
    return finish(out_dir, out, method, run.run_id, ctx)
