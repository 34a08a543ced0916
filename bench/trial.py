"""One benchmark trial, run inside its own process: load the model and rows, train one trainer, measure.

A trial is a JSON-serialisable spec (see `bench.trainers.trial_spec`). Measured:

* ``seconds``: wall time of the training call with the model already loaded and the rows already tokenized.
  alignflow: `reference_logps` (DPO only) + `alignment.training.trainer.train` (which builds its Accelerator, optimiser
  and scheduler, and writes one checkpoint at the last step; that write is timed on its own as
  ``checkpoint_s`` and stays inside ``seconds``). TRL: `trainer.train()` (which writes the same kind of
  checkpoint at its last step, bench.trl_side, timed as ``checkpoint_s`` likewise), plus for
  ``precompute_ref_log_probs=True`` the reference pass TRL runs inside its constructor (``ref_s``). The rest of
  TRL's constructor (its dataset preparation and, for default DPO, loading the reference model) is reported
  as ``init_s`` and is not in ``seconds``.
* memory: on CPU the peak resident set size (VmHWM, reset through /proc/self/clear_refs right before the
  trainer is built) and its growth over the resident size at that moment; on GPU the peak allocated memory.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from alignment.kernels.host_memory import large_blocks_mapped
from bench.generation import run_generation_trial
from bench.pairs import pair_tokens, sft_rows
from bench.probe import MemoryProbe, load_model, pin_threads

# ORPO's NLL term as TRL computes it (over prompt + chosen; alignflow's orpo.nll_tokens="prompt_and_response"),
# so both sides train and are compared on the same loss. The pipeline's default ("response") scores fewer
# tokens and is no slower.
ORPO_NLL_TOKENS = "prompt_and_response"
# TrainingConfig settings of the `alignflow+<variant>` trainers (bench.trainers.VARIANTS)
VARIANT_SETTINGS: dict[str, dict[str, Any]] = {"lora": {"lora": {"r": 16, "alpha": 32.0}},
                                               "checkpointing": {"gradient_checkpointing": True},
                                               "compile": {"compile": True}, "full-logits": {}, "plain-ops": {},
                                               "glibc-malloc": {"cpu_mmap_threshold_mib": None},
                                               "mmap-1mib": {"cpu_mmap_threshold_mib": 1},
                                               "mkl-linear": {"onednn_linear": False},
                                               "onednn-linear": {"onednn_linear": True}, "padded-rows": {},
                                               "ddp2": {}, "fsdp2": {}}
# runtime-plan fields the `alignflow+<variant>` trainers change on the plan their TrainingConfig gives
# (alignment/kernels/runtime_plan.py): the plain LM head, transformers' RMSNorm / MLP modules, padded batches; for the
# reference pass and the training steps alike
VARIANT_PLANS: dict[str, dict[str, Any]] = {"full-logits": {"full_logits": True}, "plain-ops": {"fused_ops": False},
                                            "padded-rows": {"pack_rows": False}}
# TRL's DPOTrainer default with the allocator setting alignflow's CPU training makes
# (training.cpu_mmap_threshold_mib, alignment/kernels/host_memory.py), so that setting is not counted as alignflow's lead
TRL_MMAP = "trl-mmap"


def load_rows(spec: dict[str, Any]) -> list[dict[str, list[int]]]:
    pairs = json.loads(Path(spec["data_path"]).read_text())
    return pairs[: spec["steps"] * spec["batch_size"]]


def run_alignflow(spec: dict[str, Any], model: torch.nn.Module, pairs: list[dict], pad_id: int,
                  probe: MemoryProbe, work: Path, accelerator: Any = None, sharded: bool = False) -> dict[str, Any]:
    """alignflow's trainer on `pairs`; with `accelerator` (a process of a launched trial, bench/launched.py)
    each process takes its share of every batch (`batch_size` is then per process), and with `sharded` the
    policy is sharded with FSDP2 after the reference pass, as the pipeline does."""
    import alignment.training.trainer as trainer_module
    from alignment.config import OptimConfig, TrainingConfig
    from alignment.models.loading import prepare_for_training
    from alignment.training.logprobs import reference_logps
    from alignment.training.objectives import method_plan
    from alignment.training.tracking import InMemoryLogger

    method, steps, batch = spec["method"], spec["steps"], spec["batch_size"]
    objective, collate = method_plan(method, pad_id=pad_id, beta=spec["beta"], loss_type="sigmoid",
                                     label_smoothing=0.0, lam=spec["lam"], orpo_nll_tokens=ORPO_NLL_TOKENS)
    optim = OptimConfig(learning_rate=spec["learning_rate"], weight_decay=0.0, warmup_ratio=0.0,
                        lr_scheduler="constant_with_warmup", max_grad_norm=1.0, batch_size=batch,
                        grad_accum_steps=1, max_steps=steps, log_every=steps, save_every=10**9,
                        **({"group_by_length": True} if spec.get("group_by_length") else {}))
    rows = sft_rows(pairs) if method == "sft" else pairs
    checkpoint_s = [0.0]
    original_save = trainer_module.save_checkpoint

    def timed_save(*args: Any, **kwargs: Any) -> Any:  # train() always checkpoints its last step: time it
        started = time.perf_counter()
        try:
            return original_save(*args, **kwargs)
        finally:
            checkpoint_s[0] += time.perf_counter() - started

    trainer_module.save_checkpoint = timed_save
    variant = spec["trainer"].partition("+")[2]
    plan = variant_plan(spec)
    probe.start()
    started = time.perf_counter()
    ref_s = 0.0
    if method == "dpo":  # the cached reference: log-probs of the initial policy, computed once, inside the timing
        chosen, rejected = reference_logps(model, rows, pad_id, batch, device=spec["device"], plan=plan)
        rows = [dict(r, ref_chosen_logps=c, ref_rejected_logps=j) for r, c, j in zip(rows, chosen, rejected, strict=True)]
        ref_s = time.perf_counter() - started
    if VARIANT_SETTINGS.get(variant):  # as fit_and_save does (after the reference pass, which scores the un-adapted model)
        model = prepare_for_training(model, TrainingConfig(**VARIANT_SETTINGS[variant]))
    if sharded:
        from alignment.training.sharding import shard_model

        model = shard_model(model, accelerator.device, accelerator.num_processes, "no")
    result = trainer_module.train(model, rows, objective=objective, collate=collate, optim=optim,
                                  output_dir=work / "alignflow", seed=spec["seed"], logger=InMemoryLogger(),
                                  accelerator=accelerator, plan=plan)
    seconds = time.perf_counter() - started
    trainer_module.save_checkpoint = original_save
    return {"seconds": seconds, "ref_s": ref_s, "init_s": 0.0, "checkpoint_s": checkpoint_s[0],
            "final_loss": result.final_metrics.get("loss"), "steps_done": result.steps, **probe.result()}


def variant_plan(spec: dict[str, Any]) -> Any:
    """The runtime plan of an `alignflow[+variant]` trial: the stage's for the variant's TrainingConfig on the
    trial's device, with the variant's VARIANT_PLANS fields replaced."""
    import dataclasses

    from alignment.kernels.runtime_plan import plan_for

    stage = "sft" if spec["method"] == "sft" else "preference"
    plan = plan_for(variant_training(spec["trainer"]), spec["device"], stage)
    return dataclasses.replace(plan, **VARIANT_PLANS.get(spec["trainer"].partition("+")[2], {}))


def run_trl(spec: dict[str, Any], model: torch.nn.Module, pairs: list[dict], tokenizer: Any,
            probe: MemoryProbe, work: Path) -> dict[str, Any]:
    from bench.trl_side import make_trainer

    probe.start()
    started = time.perf_counter()
    trainer = make_trainer(spec["method"], "trl" if spec["trainer"] == TRL_MMAP else spec["trainer"], model,
                           tokenizer, pairs, work / "trl",
                           steps=spec["steps"], batch_size=spec["batch_size"], learning_rate=spec["learning_rate"],
                           seed=spec["seed"], max_length=spec["max_length"], beta=spec["beta"], lam=spec["lam"])
    init_s = time.perf_counter() - started
    ref_s = getattr(trainer, "precompute_seconds", 0.0)
    checkpoint_s = [0.0]
    original_save = trainer._save_checkpoint

    def timed_save(*args: Any, **kwargs: Any) -> Any:  # its last-step checkpoint (bench.trl_side): time it
        begun = time.perf_counter()
        try:
            return original_save(*args, **kwargs)
        finally:
            checkpoint_s[0] += time.perf_counter() - begun

    trainer._save_checkpoint = timed_save
    started = time.perf_counter()
    output = trainer.train()
    train_s = time.perf_counter() - started
    return {"seconds": train_s + ref_s, "ref_s": ref_s, "init_s": init_s - ref_s, "checkpoint_s": checkpoint_s[0],
            "final_loss": output.training_loss, "steps_done": trainer.state.global_step, **probe.result()}


def mmap_threshold_mib(trainer: str, method: str) -> int | None:
    """The allocator setting a trial runs under (alignment/kernels/host_memory.py): alignflow's training.cpu_mmap_threshold_mib
    for the method's stage (its default, or its variant's), the same for TRL_MMAP, glibc's default for TRL's
    other configurations."""
    stage = "sft" if method == "sft" else "preference"
    if trainer.startswith("alignflow"):
        return variant_training(trainer).mmap_threshold_mib(stage)
    return variant_training("alignflow").mmap_threshold_mib(stage) if trainer == TRL_MMAP else None


def variant_training(trainer: str) -> Any:
    """The TrainingConfig of an `alignflow[+variant]` trainer."""
    from alignment.config import TrainingConfig

    return TrainingConfig(**VARIANT_SETTINGS.get(trainer.partition("+")[2], {}))


def run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one trainer on one data set (spec from `bench.trainers.trial_spec`); returns the measurements.
    The allocator setting (the method's stage's) covers the whole trial, from loading the model on, as the
    pipeline's training stages (alignment/stages/runtime.py training_scope) run under it from theirs; an alignflow trial's
    model runs its variant's runtime plan (`variant_plan`), TRL's trainers transformers' modules and torch's linears."""
    with large_blocks_mapped(mmap_threshold_mib(spec["trainer"], spec["method"]), torch.device(spec["device"])):
        return _run_trial(spec)


def _run_trial(spec: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    pin_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    device = spec["device"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = load_model(spec["model_dir"], device)
    pairs = load_rows(spec)
    if len(pairs) != spec["steps"] * spec["batch_size"]:
        raise ValueError(f"need {spec['steps'] * spec['batch_size']} rows, have {len(pairs)}")
    probe = MemoryProbe(device)
    with tempfile.TemporaryDirectory(prefix="alignflow-bench-") as tmp:
        if spec["trainer"].startswith("alignflow"):
            out = run_alignflow(spec, model, pairs, tokenizer.pad_token_id, probe, Path(tmp))
        else:
            out = run_trl(spec, model, pairs, tokenizer, probe, Path(tmp))
    return with_throughput(out, spec, pairs)


def with_throughput(out: dict[str, Any], spec: dict[str, Any], pairs: list[dict]) -> dict[str, Any]:
    """A trial's measurements with its rows, tokens and rates added."""
    n = len(pairs)
    data_tokens = sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) for p in pairs) if spec["method"] == "sft" \
        else sum(pair_tokens(p) for p in pairs)
    out.update({"examples": n, "data_tokens": data_tokens, "threads_after": torch.get_num_threads(),
                "pairs_per_s": n / out["seconds"], "tokens_per_s": data_tokens / out["seconds"]})
    return out


def trial_entry(spec: dict[str, Any], result_path: str) -> None:
    """Process entry point: run the trial with its output going to a log file next to `result_path`, and write
    its result (or the error) there as JSON."""
    log = os.open(str(Path(result_path).with_suffix(".log")), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        if spec["kind"] == "generate":
            result = run_generation_trial(spec)
        else:
            result = run_trial(spec) if spec["kind"] == "train" else run_loss_check(spec)
        payload = {"ok": True, "result": result}
    except Exception as err:  # report any failure to the parent, which shows it
        payload = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(payload))
    sys.stdout.flush()
    sys.stderr.flush()


# ---- loss agreement -----------------------------------------------------------------------------------


def perturbed_copy(model: torch.nn.Module, seed: int, scale: float = 0.02) -> None:
    """Add seeded Gaussian noise to every weight in place, so a policy differs from its reference."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * scale)


def alignflow_batch_losses(method: str, policy: torch.nn.Module, reference: torch.nn.Module | None,
                           pairs: list[dict], pad_id: int, batch_size: int, batches: int, *, beta: float,
                           lam: float, orpo_nll_tokens: str = ORPO_NLL_TOKENS) -> list[dict[str, float]]:
    """alignflow's loss (its objective on its own collated batch) on consecutive batches of `pairs`; for ORPO
    also its NLL term. Both models run the default runtime plan on CPU (alignment/kernels/runtime_plan.py)."""
    from alignment.config import TrainingConfig
    from alignment.kernels.runtime_plan import apply_plan, plan_for
    from alignment.training.logprobs import reference_logps
    from alignment.training.objectives import method_plan

    plan = plan_for(TrainingConfig(), "cpu", "sft" if method == "sft" else "preference")

    objective, collate = method_plan(method, pad_id=pad_id, beta=beta, loss_type="sigmoid", label_smoothing=0.0,
                                     lam=lam, orpo_nll_tokens=orpo_nll_tokens)
    rows = sft_rows(pairs) if method == "sft" else pairs
    rows = rows[: batches * batch_size]
    if method == "dpo":
        assert reference is not None
        chosen, rejected = reference_logps(reference, rows, pad_id, batch_size, plan=plan)
        rows = [dict(r, ref_chosen_logps=c, ref_rejected_logps=j) for r, c, j in zip(rows, chosen, rejected, strict=True)]
    apply_plan(policy, plan)
    policy.train()
    out = []
    with torch.no_grad():
        for b in range(batches):
            chunk = rows[b * batch_size:(b + 1) * batch_size]
            step = objective(policy, collate(chunk))
            entry = {"loss": float(step.loss)}
            if method == "orpo":
                entry["nll_loss"] = float(step.metrics["nll_loss"])
            out.append(entry)
    return out


def run_loss_check(spec: dict[str, Any]) -> dict[str, Any]:
    """alignflow's and TRL's losses on the same fixed batches, same initial weights, no training."""
    from transformers import AutoTokenizer

    from bench.trl_side import batch_losses, make_trainer

    pin_threads(spec["threads"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    pairs = json.loads(Path(spec["data_path"]).read_text())
    batch, batches = spec["batch_size"], spec["loss_batches"]
    pairs = pairs[: batch * batches]
    results: dict[str, Any] = {}

    def policy() -> torch.nn.Module:
        model = load_model(spec["model_dir"], "cpu")
        perturbed_copy(model, spec["seed"])
        return model

    with tempfile.TemporaryDirectory(prefix="alignflow-bench-loss-") as tmp:
        for method in spec["methods"]:
            ours = alignflow_batch_losses(method, policy(), load_model(spec["model_dir"], "cpu"), pairs,
                                          tokenizer.pad_token_id, batch, batches, beta=spec["beta"], lam=spec["lam"])
            variants = ("trl", "trl-precompute") if method == "dpo" else ("trl",)
            for variant in variants:
                trainer = make_trainer(method, variant, policy(), tokenizer, pairs, Path(tmp) / variant,
                                       steps=batches, batch_size=batch, learning_rate=spec["learning_rate"],
                                       seed=spec["seed"], max_length=spec["max_length"], beta=spec["beta"],
                                       lam=spec["lam"],
                                       ref_model=load_model(spec["model_dir"], "cpu") if method == "dpo" else None)
                theirs = batch_losses(trainer, method, batch, batches)
                results[f"{method}/{variant}"] = compare_losses(method, ours, theirs)
    return results


def compare_losses(method: str, ours: list[dict[str, float]], theirs: list[dict[str, float]]) -> dict[str, Any]:
    diffs = [abs(a["loss"] - b["loss"]) for a, b in zip(ours, theirs, strict=True)]
    out: dict[str, Any] = {"alignflow": [a["loss"] for a in ours], "trl": [b["loss"] for b in theirs],
                           "max_abs_diff": max(diffs)}
    if method == "orpo":  # the NLL term on its own, to tell which part differs if the losses do
        out["max_abs_diff_nll_term"] = max(abs(a["nll_loss"] - b["nll_loss"]) for a, b in zip(ours, theirs, strict=True))
    return out
