"""The training loop on `accelerate`, shared by SFT, DPO and ORPO (composition: the objective is passed in).

Data order is a pure function of (seed, epoch), so a run resumes from a checkpoint at the exact batch it
stopped at without replaying the loader. Checkpoints hold model, optimizer, scheduler and RNG states
(`Accelerator.save_state`; a model sharded with FSDP2 writes model and optimizer through
torch.distributed.checkpoint and the scheduler, no RNG states: alignment/training/sharding.py) plus `trainer_state.json`; a checkpoint folder becomes visible only once complete
(written under a temporary name, then renamed). Either format resumes in either kind of run.

An optional `Evaluator` runs every `every` optimizer steps (and at the last one) on the main process; its metrics
are logged at that step, its state goes into each checkpoint, and it may stop training early (the run then
checkpoints that step and a re-run resumes as finished).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from alignment.config import OptimConfig
from alignment.kernels.host_memory import release_free_memory
from alignment.kernels.lm_head import unwrap
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan
from alignment.training import sharding
from alignment.training.logprobs import count_tokens
from alignment.training.objectives import Objective
from alignment.training.tracking import MetricsLogger

Collate = Callable[[list[dict]], dict[str, torch.Tensor]]
KEEP_CHECKPOINTS = 2


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


@dataclass(frozen=True)
class TrainResult:
    steps: int
    resumed_from_step: int
    final_metrics: dict[str, float]
    seconds: float
    tokens: int  # non-padding tokens seen, summed over all processes
    stopped_early_at: int | None = None  # the step an evaluator stopped training at
    # the model as prepared by accelerate (DDP/FSDP/DeepSpeed wrapper); save it through the accelerator
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)


class Evaluator(Protocol):
    """Periodic evaluation during training (alignment/training/heldout.py): called after every `every`-th optimizer step
    and the last, with the model as prepared by accelerate; returns metrics to log and whether to stop."""

    every: int

    def __call__(self, model: torch.nn.Module, step: int) -> tuple[dict[str, float], bool]: ...

    def state_dict(self) -> dict[str, Any]: ...  # kept in trainer_state.json

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class _Loop:
    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    total_steps: int
    micro_per_epoch: int
    lengths: list[int] | None = None  # row lengths, when batches are grouped by length
    keep_grads: bool = False  # zero the gradients in place between steps instead of freeing them
    sharded: bool = False  # FSDP2 (alignment/training/sharding.py): DCP checkpoints, the model not prepared by accelerate
    order_cache: dict = field(default_factory=dict)


def plan_steps(num_examples: int, optim: OptimConfig, world_size: int = 1) -> tuple[int, int]:
    """(total optimizer steps, micro-batches per epoch) for a dataset and optimiser settings."""
    global_micro = optim.batch_size * world_size
    micro_per_epoch = max(1, num_examples // global_micro)
    if optim.max_steps:
        return optim.max_steps, micro_per_epoch
    return max(1, math.ceil(optim.epochs * micro_per_epoch / optim.grad_accum_steps)), micro_per_epoch


GROUP_WINDOW = 32  # global micro-batches per length-sorted window


def epoch_order(epoch: int, num_examples: int, global_batch: int, seed: int,
                lengths: list[int] | None = None) -> list[int]:
    """Row order of one epoch: a seeded permutation. With `lengths` (length grouping), the permutation is cut
    into windows of GROUP_WINDOW global micro-batches, each window sorted by length and cut into micro-batches,
    and the micro-batches of the epoch put in a seeded random order: batches hold rows of similar length (less
    padding) while which rows meet, and the order of batches, stay random. The global batches do not depend on
    the number of processes, so multi-process training sees the same batches as one process."""
    order = list(range(num_examples))
    rng = random.Random(seed * 1_000_003 + epoch)
    rng.shuffle(order)
    if lengths is None:
        return order
    window = global_batch * GROUP_WINDOW
    batches = []
    for start in range(0, num_examples, window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i])
        batches += [chunk[i:i + global_batch] for i in range(0, len(chunk), global_batch)]
    full = [b for b in batches if len(b) == global_batch]  # the epoch's tail (< one batch) is skipped anyway
    rng.shuffle(full)
    rest = [i for b in batches if len(b) != global_batch for i in b]
    return [i for b in full for i in b] + rest


def batch_indices(micro_index: int, num_examples: int, batch_size: int, micro_per_epoch: int, seed: int,
                  rank: int = 0, world_size: int = 1, lengths: list[int] | None = None, accum_steps: int = 1,
                  _cache: dict | None = None) -> list[int]:
    """Row indices of global micro-batch `micro_index` for one process (see `epoch_order`; with lengths,
    the rows of one optimizer step — batch_size x world_size x accum_steps — are grouped, so gradient
    accumulation and the number of processes do not change which rows a step trains on). `_cache` keeps the
    epoch's order between calls (the loop passes one)."""
    epoch, pos = divmod(micro_index, micro_per_epoch)
    step_rows = batch_size * world_size * accum_steps
    key = (epoch, num_examples, step_rows, seed, lengths is not None)
    if _cache is not None and key in _cache:
        order = _cache[key]
    else:
        order = epoch_order(epoch, num_examples, step_rows, seed, lengths)
        if _cache is not None:
            _cache.clear()
            _cache[key] = order
    start = (pos * world_size + rank) * batch_size
    return order[start:start + batch_size]


def row_length(row: dict) -> int:
    """Tokens a row puts into a batch: an SFT sequence, or a pair's prompt and both responses."""
    if "input_ids" in row:
        return len(row["input_ids"])
    return len(row["prompt_ids"]) + len(row["chosen_ids"]) + len(row["rejected_ids"])


def train(model: torch.nn.Module, rows: list[dict], *, objective: Objective, collate: Collate,
          optim: OptimConfig, output_dir: Path, seed: int, logger: MetricsLogger,
          accelerator: Accelerator | None = None,
          on_log: Callable[[int, int, dict[str, float]], None] | None = None,
          evaluator: Evaluator | None = None, plan: RuntimePlan | None = None) -> TrainResult:
    """Train `model` on `rows` with `objective`; checkpoints under output_dir/checkpoints. Resumes from the
    newest complete checkpoint there. Raises NonFiniteLossError on a NaN/inf loss or gradient norm. With
    `plan`, the model is set up as it says (alignment/kernels/runtime_plan.py) once accelerate has prepared it, before
    the first step; without, it runs as it is."""
    if not rows:
        raise ValueError("no training rows")
    loop = setup(model, len(rows), optim, seed, accelerator)
    if plan is not None:
        apply_plan(loop.model, plan)
    if optim.group_by_length:
        loop.lengths = [row_length(r) for r in rows]
    ckpt_root = output_dir / "checkpoints"
    start_step, last, state = resume(loop, ckpt_root)
    acc = loop.accelerator
    stopped_at: int | None = state.get("stopped_early_at")
    if evaluator is not None:
        if acc.num_processes > 1:
            raise ValueError("evaluation during training runs in one process only")
        evaluator.load_state_dict(state.get("evaluator", {}))
    started, tokens = time.perf_counter(), 0
    window_tokens, window_start = 0, time.perf_counter()
    loop.model.train()
    release_free_memory(acc.device)  # what the caller freed before (a reference pass, a loaded state dict)
    for step in range(start_step, start_step if stopped_at else loop.total_steps):
        metrics, step_tokens = run_step(loop, rows, step, objective, collate, optim, seed)
        tokens += step_tokens
        window_tokens += step_tokens
        if (step + 1) % optim.log_every == 0 or step + 1 == loop.total_steps:
            elapsed = max(1e-9, time.perf_counter() - window_start)
            metrics["tokens_per_sec"] = window_tokens / elapsed
            metrics["epoch"] = (step + 1) * optim.grad_accum_steps / loop.micro_per_epoch
            if acc.is_main_process:
                logger.log_metrics(metrics, step=step + 1)
                if on_log:
                    on_log(step + 1, loop.total_steps, metrics)
            window_tokens, window_start = 0, time.perf_counter()
        last = metrics
        if evaluator is not None and ((step + 1) % evaluator.every == 0 or step + 1 == loop.total_steps):
            eval_metrics, stop = evaluator(loop.model, step + 1)
            logger.log_metrics(eval_metrics, step=step + 1)
            last, stopped_at = {**metrics, **eval_metrics}, (step + 1 if stop else None)
        if (step + 1) % optim.save_every == 0 or step + 1 == loop.total_steps or stopped_at:
            extra = {"evaluator": evaluator.state_dict()} if evaluator is not None else {}
            save_checkpoint(loop, ckpt_root, step + 1, last, {**extra, "stopped_early_at": stopped_at})
        if stopped_at:
            break
    return TrainResult(steps=stopped_at or loop.total_steps, resumed_from_step=start_step, final_metrics=last,
                       seconds=time.perf_counter() - started, tokens=tokens, model=loop.model,
                       stopped_early_at=stopped_at)


def setup(model: torch.nn.Module, num_rows: int, optim: OptimConfig, seed: int,
          accelerator: Accelerator | None) -> _Loop:
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(seed)
    total_steps, micro_per_epoch = plan_steps(num_rows, optim, acc.num_processes)
    sharded = sharding.is_sharded(model)  # already sharded (fit_and_save): accelerate would wrap it in DDP
    trainable = [p for p in model.parameters() if p.requires_grad]  # all of them, or LoRA's adapters
    optimizer = torch.optim.AdamW(trainable, lr=optim.learning_rate, weight_decay=optim.weight_decay,
                                  **({} if sharded else adamw_implementation(acc.device)))  # DTensors: default
    scheduler = get_scheduler(optim.lr_scheduler, optimizer, num_warmup_steps=int(optim.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    if sharded:
        optimizer, scheduler = acc.prepare(optimizer, scheduler)
    else:
        model, optimizer, scheduler = acc.prepare(model, optimizer, scheduler)
    # total_steps already counts optimizer steps of the global batch (plan_steps divides by the world size):
    # one scheduler step per optimizer step. By default accelerate steps a prepared scheduler num_processes
    # times per call (it assumes a schedule planned for one process), which ends the schedule early under DDP.
    scheduler.split_batches = True
    return _Loop(acc, model, optimizer, scheduler, total_steps, micro_per_epoch, keep_grads=keeps_grads(model),
                 sharded=sharded)


def keeps_grads(model: torch.nn.Module) -> bool:
    """With activation checkpointing the peak memory is in the backward pass, where every gradient is live
    anyway: keeping the gradient tensors between steps (zeroed, not freed) costs nothing there and stops each
    step's new gradients from being scattered through the heap among the recomputed layers' temporaries (on CPU,
    glibc then cannot reuse that space and the heap grows). Without checkpointing the peak is at the end of the
    forward pass, where freed gradients are memory saved."""
    inner = unwrap(model)
    inner = getattr(inner, "get_base_model", lambda: inner)()  # through peft
    return bool(getattr(inner, "is_activation_checkpointing", False))


def adamw_implementation(device: torch.device) -> dict[str, bool]:
    """On CPU torch's fused AdamW: one pass over each parameter, where the default (foreach) implementation
    allocates a temporary the size of all trainable weights (sqrt of the second moment) in every step; the same
    update up to float rounding. Elsewhere torch's default."""
    return {"fused": True} if device.type == "cpu" else {}


def run_step(loop: _Loop, rows: list[dict], step: int, objective: Objective, collate: Collate,
             optim: OptimConfig, seed: int) -> tuple[dict[str, float], int]:
    """One optimizer step over grad_accum_steps micro-batches; returns metrics averaged over micro-batches
    and processes, and the step's token count summed over processes."""
    acc, accum = loop.accelerator, optim.grad_accum_steps
    sums: dict[str, float] = {}
    tokens = 0
    for micro in range(accum):
        idx = batch_indices(step * accum + micro, len(rows), optim.batch_size, loop.micro_per_epoch, seed,
                            acc.process_index, acc.num_processes, loop.lengths, accum, loop.order_cache)
        batch = {k: v.to(acc.device) for k, v in collate([rows[i] for i in idx]).items()}
        tokens += count_tokens(batch)
        sync = acc.no_sync(loop.model) if micro < accum - 1 else nullcontext()
        with sync:
            out = objective(loop.model, batch)
            if not torch.isfinite(out.loss):
                raise NonFiniteLossError(f"non-finite loss ({out.loss.item()}) at step {step + 1}")
            acc.backward(out.loss / accum)
        for name, value in {"loss": out.loss.detach(), **out.metrics}.items():
            sums[name] = sums.get(name, 0.0) + float(value) / accum
    grad_norm = sharding.scalar(acc.clip_grad_norm_(loop.model.parameters(), optim.max_grad_norm))
    if not torch.isfinite(torch.as_tensor(grad_norm)):
        raise NonFiniteLossError(f"non-finite gradient norm at step {step + 1}")
    loop.optimizer.step()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=not loop.keep_grads)
    release_free_memory(acc.device)
    sums["_tokens"] = float(tokens)
    sums = average_across_processes(acc, sums)
    tokens = round(sums.pop("_tokens") * acc.num_processes)
    sums["grad_norm"] = float(grad_norm)
    sums["learning_rate"] = loop.scheduler.get_last_lr()[0]
    return sums, tokens


def average_across_processes(acc: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    if acc.num_processes == 1:
        return metrics
    names = sorted(metrics)
    values = acc.reduce(torch.tensor([metrics[n] for n in names], dtype=torch.float64, device=acc.device),
                        reduction="mean")
    return dict(zip(names, values.tolist(), strict=True))


def save_checkpoint(loop: _Loop, root: Path, step: int, metrics: dict[str, float],
                    extra: dict[str, Any] | None = None) -> Path:
    acc = loop.accelerator
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    acc.wait_for_everyone()
    if loop.sharded:
        sharding.save_state(loop.model, torch_optimizer(loop), loop.scheduler, tmp, acc.is_main_process)
    else:
        acc.save_state(str(tmp))
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({**(extra or {}), "step": step, "metrics": metrics}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("step-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    done = [p for p in sorted(root.glob("step-*")) if (p / "trainer_state.json").is_file()]
    return done[-1] if done else None


def resume(loop: _Loop, root: Path) -> tuple[int, dict[str, float], dict[str, Any]]:
    """Load the newest complete checkpoint, if any; returns the step to continue from, the metrics of the step
    it was saved at (so a finished run re-entered reports its final metrics) and its whole trainer state
    (an evaluator's state, the step it stopped training at)."""
    ckpt = latest_checkpoint(root)
    if ckpt is None:
        return 0, {}, {}
    load_state(loop, ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    return state["step"], state.get("metrics", {}), state


def load_state(loop: _Loop, ckpt: Path) -> None:
    """Either format into either kind of run: a sharded run's DCP checkpoint (resharded to this run's processes,
    or into the unsharded model of a 1-process run) or accelerate's (into a sharded model: full state read by
    every process)."""
    if sharding.is_dcp_checkpoint(ckpt):
        model = loop.model if loop.sharded else (unwrap(loop.model) or loop.model)
        sharding.load_state(model, torch_optimizer(loop), loop.scheduler, ckpt)
    elif loop.sharded:
        sharding.load_full_state(loop.model, torch_optimizer(loop), loop.scheduler, ckpt)
    else:
        loop.accelerator.load_state(str(ckpt))


def torch_optimizer(loop: _Loop) -> torch.optim.Optimizer:
    return getattr(loop.optimizer, "optimizer", loop.optimizer)  # inside accelerate's AcceleratedOptimizer
