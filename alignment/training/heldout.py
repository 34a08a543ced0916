"""Held-out evaluation while a preference method trains, and early stopping on it (`HeldoutEvalConfig`).

Every `every` optimizer steps the trainer (alignment/training/trainer.py) calls a `HeldoutEvaluator` with the model
being trained. It logs, at that step:

- eval/loss: the method's own objective (DPO with its rpo term, ORPO) on up to max_pairs held-out pairs;
- eval/logps/chosen, eval/logps/rejected, eval/rewards/margins, eval/rewards/accuracies (and the method's
  other metrics, eval/nll_loss, ...): the training metrics of the same names on those pairs (DPO: summed
  log-probs and implicit rewards; ORPO: per-token mean log-probs, the accuracy being that of the log odds
  ratio). Held-out chosen and rejected log-probs that both fall while the margin grows are the sign of
  over-optimisation (Rafailov et al., arXiv 2406.02900);
- eval/kl: the Monte Carlo estimate of the sequence-level KL(policy || reference) on kl_prompts held-out
  prompts (alignment/training/divergence.py), the reference being the starting model.

Early stopping (`early_stop_decision`, pure): stop once eval/loss has not fallen below the best so far by more
than min_delta for `patience` evaluations. The best evaluation's trainable weights (LoRA's adapters, or every
weight) are kept on disk under <output_dir>/best and become the stage's model (`restore_best`): the weights
whose held-out loss was lowest, rather than the `patience` evaluations of over-optimisation after them. Its
state (every evaluation's step and loss) goes into each checkpoint, so a resumed run decides as an
uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from alignment.config import HeldoutEvalConfig
from alignment.kernels.lm_head import unwrap
from alignment.training.divergence import estimate_kl, eval_mode
from alignment.training.objectives import Objective

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Collate = Callable[[list[dict]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class StopDecision:
    best_index: int | None  # the evaluation with the best loss so far (None: none yet, or all NaN)
    stop: bool


def early_stop_decision(losses: list[float], *, patience: int | None, min_delta: float) -> StopDecision:
    """Which of `losses` (one per evaluation, in order) is the best, and whether to stop now.

    An evaluation improves when its loss is below the best so far minus min_delta (a NaN never improves); stop
    when the last `patience` evaluations have not improved. patience None: never stop."""
    best_index, best = None, math.inf
    for index, loss in enumerate(losses):
        if loss < best - min_delta:  # the first finite loss is below inf; NaN compares False
            best_index, best = index, loss
    waited = len(losses) - 1 - (best_index if best_index is not None else -1)
    return StopDecision(best_index, patience is not None and waited >= patience)


class HeldoutEvaluator:
    """The trainer's periodic evaluation (alignment.training.trainer.Evaluator) for DPO and ORPO."""

    def __init__(self, cfg: HeldoutEvalConfig, *, rows: list[dict], objective: Objective, collate: Collate,
                 tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], reference: torch.nn.Module | None, seed: int,
                 best_dir: Path) -> None:
        if cfg.every is None:
            raise ValueError("HeldoutEvaluator needs heldout_eval.every")
        if not rows:
            raise ValueError("held-out evaluation has no held-out pairs")
        self.cfg, self.every = cfg, cfg.every
        self.rows, self.objective, self.collate = rows[:cfg.max_pairs], objective, collate
        self.tokenizer, self.prompts, self.reference = tokenizer, prompts[:cfg.kl_prompts], reference
        self.seed, self.best_dir = seed, best_dir
        self.history: list[tuple[int, float]] = []  # (step, eval/loss) of every evaluation
        self.kl: dict[int, float] = {}  # eval/kl by step
        self.checkpointed_best: int | None = None  # best step recorded in the newest checkpoint

    def __call__(self, model: torch.nn.Module, step: int) -> tuple[dict[str, float], bool]:
        """Evaluate `model` (as prepared by accelerate) after optimizer step `step`: (eval/* metrics, stop?)."""
        model = getattr(model, "_orig_mod", model)  # a compiled model would recompile for generation
        with eval_mode(model), torch.no_grad():
            metrics = pair_metrics(model, self.rows, self.objective, self.collate, self.cfg.batch_size)
            if self.prompts:
                kl = estimate_kl(model, self.reference, self.tokenizer, self.prompts,
                                 max_new_tokens=self.cfg.kl_max_new_tokens, seed=self.seed,
                                 batch_size=self.cfg.batch_size, disable_adapter=self.reference is None)
                metrics["eval/kl"] = kl.mean  # the same seed every time: answers differ only as the model does
                self.kl[step] = kl.mean
        self.history.append((step, metrics["eval/loss"]))
        decision = self.decision()
        if self.cfg.patience is not None and decision.best_index == len(self.history) - 1:
            self.save_best(model, step)
        return metrics, decision.stop

    def decision(self) -> StopDecision:
        return early_stop_decision([loss for _, loss in self.history], patience=self.cfg.patience,
                                   min_delta=self.cfg.min_delta)

    @property
    def best_step(self) -> int | None:
        index = self.decision().best_index
        return None if index is None else self.history[index][0]

    # ---- best weights and checkpointed state -------------------------------------------------------------

    def best_path(self, step: int) -> Path:
        return self.best_dir / f"step-{step:07d}.safetensors"

    def save_best(self, model: torch.nn.Module, step: int) -> None:
        """Write the trainable weights of `step`; drop older best files but the newest checkpoint's."""
        self.best_dir.mkdir(parents=True, exist_ok=True)
        weights = {name: p.detach().cpu().contiguous() for name, p in trainable(model)}
        tmp = self.best_dir / f".tmp-step-{step:07d}.safetensors"
        save_file(weights, str(tmp))
        tmp.replace(self.best_path(step))
        keep = {self.best_path(step), *([self.best_path(self.checkpointed_best)] if self.checkpointed_best else [])}
        for old in self.best_dir.glob("step-*.safetensors"):
            if old not in keep:
                old.unlink(missing_ok=True)

    def restore_best(self, model: torch.nn.Module) -> int | None:
        """Load the best evaluation's weights into `model` (early stopping on); returns its step, or None
        when there is nothing to restore (patience unset, or no evaluation)."""
        step = self.best_step
        if self.cfg.patience is None or step is None:
            return None
        weights = load_file(str(self.best_path(step)))
        with torch.no_grad():
            for name, param in trainable(model):
                param.copy_(weights[name].to(param.device, param.dtype))
        return step

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (trainer_state.json): every evaluation's step, loss and KL."""
        self.checkpointed_best = self.best_step
        return {"history": [[step, loss] for step, loss in self.history],
                "kl": [[step, kl] for step, kl in self.kl.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = [(int(step), float(loss)) for step, loss in state.get("history", [])]
        self.kl = {int(step): float(kl) for step, kl in state.get("kl", [])}
        self.checkpointed_best = self.best_step

    def summary(self, stopped_at: int | None) -> dict[str, float]:
        """The stage's final metrics: best_step, early_stopped_at_step when it stopped early, and saved_kl: eval/kl
        of the model the stage keeps (the best evaluation's with early stopping, else the last one's)."""
        out = {} if self.best_step is None else {"best_step": float(self.best_step)}
        if stopped_at is not None:
            out["early_stopped_at_step"] = float(stopped_at)
        kept = self.best_step if self.cfg.patience is not None else (self.history[-1][0] if self.history else None)
        if kept in self.kl:
            out["saved_kl"] = self.kl[kept]
        return out


def trainable(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters training changes (LoRA's adapters, or all), by name, through accelerate's wrappers."""
    inner = unwrap(model)
    if inner is None:
        raise ValueError("held-out evaluation cannot keep the best weights of a sharded model")
    return [(name, p) for name, p in inner.named_parameters() if p.requires_grad]


def pair_metrics(model: torch.nn.Module, rows: list[dict], objective: Objective, collate: Collate,
                 batch_size: int) -> dict[str, float]:
    """The objective's loss and metrics on held-out pairs, averaged over pairs, named eval/*."""
    sums: dict[str, float] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        device = next(model.parameters()).device
        out = objective(model, {k: v.to(device) for k, v in collate(chunk).items()})
        for name, value in {"loss": out.loss, **out.metrics}.items():
            sums[f"eval/{name}"] = sums.get(f"eval/{name}", 0.0) + float(value) * len(chunk) / len(rows)
    return sums
