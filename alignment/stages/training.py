"""The training stages: SFT and preference training (DPO/ORPO, chosen from the registry of methods), in this
process or in several (alignment/training/distributed.py), with the stage's runtime plan and held-out evaluation."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from alignment.config import PipelineConfig
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan, plan_of
from alignment.models.loading import fingerprint_model, load_causal_lm, load_tokenizer, prepare_for_training
from alignment.records import ModelRef, PreparedData, ProgressCallback, TrainOutput
from alignment.stages.reference import reference_annotated_pairs, tokenized_rows
from alignment.stages.runtime import model_device, stage_plan, training_scope
from alignment.training.distributed import launch_training, make_accelerator, save_trained_model
from alignment.training.heldout import HeldoutEvaluator
from alignment.training.objectives import Objective, method_plan, method_spec
from alignment.training.onpolicy import distinct_prompts
from alignment.training.sharding import shard_model
from alignment.training.tracking import MetricsLogger
from alignment.training.trainer import train

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

    from alignment.config import OptimConfig


log = logging.getLogger("alignflow.stages")


def run_sft(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, out_dir: Path, logger: MetricsLogger,
            on_log: ProgressCallback | None = None, accelerator: Accelerator | None = None) -> TrainOutput:
    """Supervised fine-tuning with the chat template, loss on assistant tokens only. With
    training.num_processes or training.num_nodes > 1 (and no accelerator given) it runs in that many processes
    (alignment/training/distributed.py)."""
    if cfg.training.world_size > 1 and accelerator is None:
        return launch_training("sft", cfg, prepared=prepared, base=base, out_dir=out_dir, logger=logger,
                               on_log=on_log)
    with training_scope(cfg, "sft"):
        return _sft_here(cfg, prepared, base, out_dir, logger, on_log, accelerator)


def _sft_here(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, out_dir: Path, logger: MetricsLogger,
              on_log: ProgressCallback | None, accelerator: Accelerator | None) -> TrainOutput:
    tok = load_tokenizer(base.path, trust_remote_code=cfg.model.trust_remote_code)
    with accelerator.main_process_first() if accelerator else nullcontext():  # one writes the token cache
        rows = tokenized_rows(cfg, prepared, base, "sft")
    model = load_causal_lm(base.path, trust_remote_code=cfg.model.trust_remote_code)
    objective, collate = method_plan("sft", pad_id=tok.pad_token_id)
    return fit_and_save(model, tok, rows, objective, collate, "sft",
                        cfg, cfg.sft.optim, out_dir, logger, on_log, accelerator)


def run_preference(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                   out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None = None,
                   accelerator: Accelerator | None = None) -> TrainOutput:
    """DPO from the SFT model (or, with SFT off, the base model — an instruct model, say) against that model's
    precomputed log-probs, or ORPO (no reference) from base or SFT.
    With several training processes (and no accelerator given) it runs in them."""
    if cfg.training.world_size > 1 and accelerator is None:
        return launch_training("preference", cfg, prepared=prepared, base=base, sft=sft, out_dir=out_dir,
                               logger=logger, on_log=on_log)
    with training_scope(cfg, "preference"):
        return _preference_here(cfg, prepared, base, sft, out_dir, logger, on_log, accelerator)


def _preference_here(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                     out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None,
                     accelerator: Accelerator | None) -> TrainOutput:
    method = cfg.preference.method
    init = starting_model(cfg, base, sft)
    reference = reference_model(cfg, init, sft)
    with accelerator.main_process_first() if accelerator else nullcontext():  # one writes the cache
        rows = training_rows(cfg, prepared, init, "train", reference)
    optim = getattr(cfg, method).optim
    tok = load_tokenizer(init.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(init.path, trust_remote_code=cfg.model.trust_remote_code)
    beta = cfg.kto.beta if method == "kto" else cfg.dpo.beta
    objective, collate = method_plan(method, pad_id=tok.pad_token_id, beta=beta,
                                     loss_type=cfg.dpo.loss_type, label_smoothing=cfg.dpo.label_smoothing,
                                     rpo_alpha=cfg.dpo.rpo_alpha, lam=cfg.orpo.lam,
                                     orpo_nll_tokens=cfg.orpo.nll_tokens, desirable_weight=cfg.kto.desirable_weight,
                                     undesirable_weight=cfg.kto.undesirable_weight,
                                     processes=cfg.training.world_size)
    make_evaluator = None
    if getattr(cfg, method).heldout_eval.every is not None:
        make_evaluator = functools.partial(heldout_evaluator, cfg, prepared, init, reference, objective, collate,
                                           tok, out_dir / "best")
    out = fit_and_save(model, tok, rows, objective, collate, method, cfg, optim, out_dir, logger, on_log,
                       accelerator, make_evaluator)
    return out.model_copy(update={"reference": reference}) if method_spec(method).uses_reference else out


def starting_model(cfg: PipelineConfig, base: ModelRef, sft: TrainOutput | None) -> ModelRef:
    """The model preference training starts from: the SFT model when there is one, except for a method whose
    section says `init: base` (ORPO may start from the base model). A method with a reference (DPO) starts from,
    and is held to, the same model."""
    starts_from = getattr(getattr(cfg, cfg.preference.method), "init", "sft")
    return sft.model if (sft is not None and starts_from == "sft") else base


def reference_model(cfg: PipelineConfig, init: ModelRef, sft: TrainOutput | None) -> ModelRef:
    """The model a method with a reference (DPO, KTO) is held to: the model it starts from, except in a later
    on-policy round with `onpolicy.round_reference: original`, where it is the reference the previous round's
    policy was held to (so, round after round, the model round 1 started from). A method without a reference
    (ORPO) gets the starting model, which only its held-out KL uses."""
    later_round = sft is not None and sft.method != "sft"  # training from a preference policy: a later round
    if cfg.onpolicy.round_reference != "original" or not later_round or not method_spec(cfg.preference.method).uses_reference:
        return init
    if sft.reference is None:
        raise ValueError(f"onpolicy.round_reference=original: the previous round's policy ({sft.model.path}, "
                         f"{sft.method}) records no reference to hold this round to; train round 1 with "
                         "preference.method=dpo or kto")
    return sft.reference


def training_rows(cfg: PipelineConfig, prepared: PreparedData, init: ModelRef, split: str,
                  reference: ModelRef | None = None) -> list[dict]:
    """A split's tokenized pairs for the configured method, with the reference's log-probs (by default the
    starting model's) where the method uses one (alignment/training/objectives.py METHODS)."""
    method = method_spec(cfg.preference.method)
    unpaired = prepared.counts.get("unpaired", 0) if split == "train" else 0
    make_rows = None
    if method.rows is not None:  # KTO: the pairs' examples and, in training, the unpaired ones
        extra = tokenized_rows(cfg, prepared, init, "unpaired") if unpaired else []
        make_rows = functools.partial(method.rows, unpaired=extra)
    elif unpaired:
        log.warning("%d unpaired examples (data.unpaired_path) left out: only preference.method=kto learns from "
                    "them", unpaired)
    if method.uses_reference:
        return reference_annotated_pairs(cfg, prepared, reference or init, split, make_rows)
    rows = tokenized_rows(cfg, prepared, init, split)
    return make_rows(rows) if make_rows is not None else rows


def heldout_evaluator(cfg: PipelineConfig, prepared: PreparedData, init: ModelRef, reference: ModelRef,
                      objective: Objective, collate: Callable[[list[dict]], dict[str, torch.Tensor]],
                      tok: PreTrainedTokenizerBase, best_dir: Path, model: torch.nn.Module) -> HeldoutEvaluator:
    """The preference stage's held-out evaluation (alignment/training/heldout.py) for the model about to train: the
    held-out pairs (DPO's with the reference's log-probs, cached like the training pairs'), the held-out
    prompts for eval/kl and its reference: with LoRA on the starting model's own reference the policy with its
    adapters off (no second copy), otherwise the reference model, loaded once."""
    settings = getattr(cfg, cfg.preference.method).heldout_eval
    rows = training_rows(cfg, prepared, init, "heldout", reference)
    prompts = distinct_prompts(prepared.path("heldout"))[:settings.kl_prompts]
    ref_model = None
    if prompts and (not hasattr(model, "disable_adapter") or reference.fingerprint != init.fingerprint):
        ref_model = load_causal_lm(reference.path, trust_remote_code=cfg.model.trust_remote_code)
        ref_model.requires_grad_(False)
        apply_plan(ref_model, stage_plan(cfg, "preference", model_device(ref_model)))
    return HeldoutEvaluator(settings, rows=rows, objective=objective, collate=collate, tokenizer=tok,
                            prompts=prompts, reference=ref_model, seed=cfg.run.seed, best_dir=best_dir)


def fit_and_save(model: torch.nn.Module, tok: PreTrainedTokenizerBase, rows: list[dict], objective: Objective,
                 collate: Callable[[list[dict]], dict[str, torch.Tensor]], method: str, cfg: PipelineConfig,
                 optim: OptimConfig, out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None,
                 accelerator: Accelerator | None = None,
                 make_evaluator: Callable[[torch.nn.Module], HeldoutEvaluator] | None = None) -> TrainOutput:
    """Train, then save the model from the main process (every process of a multi-process run gets here;
    only rank 0's record is used, the others carry no fingerprint). With `make_evaluator` (held-out evaluation
    during training), the saved model is the best evaluation's when early stopping is on."""
    acc = accelerator or make_accelerator(cfg.training)
    model = prepare_for_training(model, cfg.training)  # LoRA, activation checkpointing, compile
    if cfg.training.sharding == "fsdp2":  # after LoRA: the adapters are sharded with their layers
        model = shard_model(model, acc.device, acc.num_processes, cfg.training.mixed_precision)
    evaluator = make_evaluator(model) if make_evaluator is not None else None
    plan = stage_plan(cfg, "sft" if method == "sft" else "preference", acc.device)
    result = train(model, rows, objective=objective, collate=collate, optim=optim, output_dir=out_dir,
                   seed=cfg.run.seed, logger=logger, accelerator=acc, on_log=on_log, evaluator=evaluator,
                   plan=plan)
    trained = result.model if result.model is not None else model
    final_metrics = result.final_metrics
    if evaluator is not None:
        evaluator.restore_best(trained)
        final_metrics = {**final_metrics, **evaluator.summary(result.stopped_early_at)}
    model_dir = save_trained_model(acc, trained, tok, out_dir / "model")
    fingerprint = fingerprint_model(str(model_dir)) if acc.is_main_process else ""
    return TrainOutput(model=ModelRef(path=str(model_dir), fingerprint=fingerprint),
                       method=method, steps=result.steps, resumed_from_step=result.resumed_from_step,
                       final_metrics=final_metrics, seconds=result.seconds, tokens=result.tokens,
                       runtime=applied_plan(trained, plan).params())


def applied_plan(model: torch.nn.Module, planned: RuntimePlan) -> RuntimePlan:
    """What of the stage's plan its model ran with (`plan_of`: a switch the model could not take is off; a
    sharded model runs plain), with the stage's allocator setting, which is not the model's."""
    return dataclasses.replace(plan_of(model), mmap_threshold_mib=planned.mmap_threshold_mib)
