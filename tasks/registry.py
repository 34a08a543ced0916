"""Registration in the MLflow Model Registry: log the policy as a loadable transformers model, create one
version carrying its gate verdicts as tags, set `candidate`, and `champion` only when every gate passes.

Registration is the pipeline's last step and all-or-nothing: if anything after the version is created
fails, the version is deleted again, so the registry never holds a half-registered model.
"""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from mlflow import MlflowClient
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from alignment.config import PipelineConfig
from alignment.models.loading import load_causal_lm, load_tokenizer
from alignment.records import TrainOutput
from arena.events import Emit, emit_safely, emit_to_prefect, gate_refused_event, registered_event
from evaluation.gates import GateResult, all_passed, check_gates
from evaluation.quality import FLAGS as QUALITY_FLAGS
from tasks.background import drain, submit
from tasks.stages import flatten
from tasks.tracking import RunContext, StageRun, stage_run

PIP_REQUIREMENTS = ["torch==2.13.0", "transformers==5.23.0", "accelerate==1.15.0", "safetensors"]
# Served answers: greedy, as the pipeline's own comparison decodes; `max_tokens`/`temperature` in a request win.
CHAT_MODEL_CONFIG = {"max_new_tokens": 64, "do_sample": False}


class Registration(BaseModel):
    name: str
    version: str | None
    aliases: list[str]
    model_uri: str | None
    gates: list[dict[str, Any]]
    champion: bool


def gate_tags(gates: list[GateResult]) -> dict[str, str]:
    tags = {f"gate.{g.name}.value": f"{g.value:.6g}" for g in gates}
    tags.update({f"gate.{g.name}.threshold": f"{g.threshold:.6g}" for g in gates})
    tags.update({f"gate.{g.name}.passed": str(g.passed).lower() for g in gates})
    tags["gates.passed"] = str(all_passed(gates)).lower()
    return tags


def promotion_gates(cfg: PipelineConfig, comparison_metrics: dict[str, float], heldout_metrics: dict[str, float],
                    final_losses: dict[str, float], benchmarks: dict[str, tuple[float, float]] | None,
                    contamination: dict[str, float]) -> list[GateResult]:
    """Every gate of the promotion config evaluated on this run's results (evaluation/gates.py)."""
    promo = cfg.promotion
    return check_gates(win_rate=comparison_metrics["compare/win_rate"],
                       win_rate_ci_low=comparison_metrics["compare/win_rate_ci_low"],
                       min_win_rate=promo.min_win_rate, use_lower_bound=promo.use_lower_bound,
                       final_losses=final_losses,
                       reward_accuracy=heldout_metrics.get("eval/rewards/accuracies"),
                       min_reward_accuracy=promo.min_reward_accuracy,
                       benchmarks=benchmarks, max_benchmark_regression=promo.max_benchmark_regression,
                       contamination=contamination, max_contamination=promo.max_contamination,
                       degeneration=degeneration_pairs(comparison_metrics),
                       max_degeneration_increase=promo.max_degeneration_increase,
                       length_ratio=comparison_metrics.get("quality/length_ratio"),
                       min_length_ratio=length_gate(promo.min_length_ratio, comparison_metrics),
                       kl=comparison_metrics.get("compare/kl"),
                       max_kl=promo.max_kl if cfg.eval.kl_prompts else None)


def length_gate(threshold: float | None, metrics: dict[str, float]) -> float | None:
    """The length-ratio gate's threshold, or None (no gate) when the comparison measured quality but had no
    prompt without a length instruction to measure length on; without any quality metrics the gate stays (and
    fails: no evidence is not a pass)."""
    measured = "quality/reference/degenerate_rate" in metrics
    return None if measured and "quality/reference/median_words" not in metrics else threshold


def degeneration_pairs(metrics: dict[str, float]) -> dict[str, tuple[float, float]]:
    """flag -> (policy rate, reference rate) from the comparison's quality/<role>/<flag>_rate metrics."""
    out = {}
    for flag in QUALITY_FLAGS:
        policy, reference = metrics.get(f"quality/policy/{flag}_rate"), metrics.get(f"quality/reference/{flag}_rate")
        if policy is not None and reference is not None:
            out[flag] = (policy, reference)
    return out


class PolicyLogging(BaseModel):
    """The register stage's MLflow run, opened as soon as the policy is trained, and the model logging into it
    running on the pipeline's tracking thread (tasks/background.py) while evaluation computes."""

    model_config = {"arbitrary_types_allowed": True}
    run: Any  # tasks.tracking.StageRun
    logged: Any  # Future[(model_uri, model_id)]


def start_policy_logging(cfg: PipelineConfig, trained: TrainOutput, ctx: RunContext) -> PolicyLogging | None:
    """Open the register run and queue the policy's model logging; None when registration is off."""
    if not cfg.promotion.register_model:
        return None
    run = StageRun(ctx, "register")
    # Loaded here, on the caller's thread: `from_pretrained` is not thread-safe. While it builds a model it
    # swaps process-wide state (the default dtype, `PreTrainedModel.tie_weights`, torch's init functions), so
    # a load on the tracking thread racing evaluation's loads on the main thread can leave weight tying off for
    # good, and the next model loaded keeps its tied output layer on the meta device (seen in CI). The
    # tracking thread only serializes and uploads (tests/tasks/test_registry.py).
    remote = cfg.model.trust_remote_code
    model = load_causal_lm(trained.model.path, trust_remote_code=remote)
    tokenizer = load_tokenizer(trained.model.path, trust_remote_code=remote)
    return PolicyLogging(run=run, logged=submit(log_policy, model, tokenizer, trained, run.run_id))


@task(name="register-model", cache_policy=NO_CACHE)
def register_task(cfg: PipelineConfig, trained: TrainOutput, gates: list[GateResult],
                  ctx: RunContext, pending: PolicyLogging | None = None,
                  reference_model: str | None = None) -> Registration:
    """Gate verdicts on the register run; with registration on, wait for the policy's model logging and every
    other queued tracking write, then create the version (tasks/background.py: nothing is registered that
    refers to a write that failed)."""
    promo = cfg.promotion
    if pending is None and promo.register_model:
        pending = start_policy_logging(cfg, trained, ctx)
    with stage_run(ctx, "register", flatten("promotion", promo.model_dump()),
                   opened=pending.run if pending else None) as run:
        run.log_metrics({f"gate/{g.name}": float(g.passed) for g in gates})
        run.set_tags(gate_tags(gates))
        if pending is None:
            registration = Registration(name=promo.model_name, version=None, aliases=[], model_uri=None,
                                        gates=[g.to_dict() for g in gates], champion=False)
            announce_registration(registration)
            return registration
        model_uri, model_id = pending.logged.result()
        drain()
        version, aliases = register_version(ctx, promo.model_name, model_uri, model_id, run.run_id, gates,
                                            reference_model)
        run.set_tags({"alignflow.registered_model": promo.model_name, "alignflow.registered_version": version})
    registration = Registration(name=promo.model_name, version=version, aliases=aliases, model_uri=model_uri,
                                gates=[g.to_dict() for g in gates], champion="champion" in aliases)
    announce_registration(registration)
    return registration


def announce_registration(registration: Registration, emit: Emit = emit_to_prefect) -> None:
    """After the registration decision: `alignflow.model.registered` for a new version, and
    `alignflow.model.gate-refused` (the failing gates' names, values and thresholds) when a gate failed
    (arena/events.py). Sending never fails the registration."""
    if registration.version is not None:
        emit_safely(emit, registered_event(registration.name, registration.version, registration.aliases,
                                           registration.gates))
    refused = gate_refused_event(registration.name, registration.version, registration.gates)
    if refused is not None:
        emit_safely(emit, refused)


def log_policy(model: Any, tokenizer: Any, trained: TrainOutput, run_id: str) -> tuple[str, str]:
    """Log the trained policy (model + tokenizer, already loaded) as an MLflow transformers model; returns its
    URI and id. Builds no model: see `start_policy_logging`."""
    # The model card is looked up on the hub; for a local model that only produces warnings.
    logging.getLogger("mlflow.transformers").setLevel(logging.ERROR)
    with mlflow.start_run(run_id=run_id):
        # task="llm/v1/chat": MLflow's serving (`mlflow models serve`, /invocations) takes OpenAI-style
        # {"messages": [...]}, applies the tokenizer's chat template and answers with the assistant's message;
        # with the plain "text-generation" task it echoed the messages back. load_model still returns a
        # text-generation pipeline (the flavor's task); CHAT_MODEL_CONFIG are the defaults a request can override.
        info = mlflow.transformers.log_model(
            {"model": model, "tokenizer": tokenizer}, name="model", task="llm/v1/chat",
            model_config=CHAT_MODEL_CONFIG, pip_requirements=PIP_REQUIREMENTS,
            metadata={"alignflow.method": trained.method, "alignflow.fingerprint": trained.model.fingerprint})
    return info.model_uri, info.model_id


def register_version(ctx: RunContext, name: str, model_uri: str, model_id: str, run_id: str,
                     gates: list[GateResult], reference_model: str | None = None) -> tuple[str, list[str]]:
    """Create the version with its gate tags (and `alignflow.reference_model`: what it was compared with, for
    the arena), then aliases; undo the version if any later step fails."""
    client = MlflowClient(ctx.tracking_uri)
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name, description="Aligned by alignflow.")
        except mlflow.exceptions.MlflowException:
            pass  # created concurrently
    tags = {**gate_tags(gates), **({"alignflow.reference_model": reference_model} if reference_model else {})}
    mv = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags, model_id=model_id)
    aliases = ["candidate"] + (["champion"] if all_passed(gates) else [])
    try:
        for alias in aliases:
            client.set_registered_model_alias(name, alias, mv.version)
    except BaseException:
        client.delete_model_version(name, mv.version)
        raise
    return str(mv.version), aliases
