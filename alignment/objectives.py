"""Training objectives: glue from a batch to a loss, via `sequence_logps` and the pure loss functions.

An objective is `(model, batch) -> StepOutput`; the trainer does not know which one it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from alignment.logprobs import collate_sft, collate_shared_pairs, sequence_logps
from alignment.losses import dpo_loss, orpo_loss, sft_nll_loss


@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor  # ()
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # () detached scalars


Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor]], StepOutput]


def sft_objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
    logps = sequence_logps(model, batch)
    return StepOutput(sft_nll_loss(logps.sum, logps.count))


def make_dpo_objective(*, beta: float, loss_type: str, label_smoothing: float, rpo_alpha: float = 0.0) -> Objective:
    """DPO against reference log-probs precomputed into the batch (`ref_chosen_logps`, `ref_rejected_logps`).

    rpo_alpha > 0 adds alpha * NLL(chosen) (RPO, Pang et al., arXiv 2404.19733, Eq. 1; TRL's `rpo_alpha`),
    which keeps the chosen answers' likelihood from falling while the margin grows. The NLL is TRL's: the mean
    over every chosen-response token of the batch (-sum log p / sum T_w, `sft_nll_loss`), not the paper's
    per-pair -log p(y_w|x) / |y_w| averaged over pairs; the two agree when the chosen responses are of one
    length."""

    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        chosen, rejected = sequence_logps(model, batch).split()
        ref_c, ref_r = batch["ref_chosen_logps"], batch["ref_rejected_logps"]  # (B,) summed
        if loss_type == "ipo":  # IPO works on length-averaged log-probs (as TRL)
            pol_c, pol_r = chosen.mean, rejected.mean
            ref_c, ref_r = ref_c / chosen.count.clamp(min=1), ref_r / rejected.count.clamp(min=1)
        else:
            pol_c, pol_r = chosen.sum, rejected.sum
        out = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
        if rpo_alpha > 0:
            nll = sft_nll_loss(chosen.sum, chosen.count)
            return StepOutput(out.loss + rpo_alpha * nll, {**out.metrics, "nll_loss": nll.detach()})
        return StepOutput(out.loss, out.metrics)

    return objective


def make_orpo_objective(*, lam: float, nll_tokens: str = "response") -> Objective:
    """ORPO (Hong et al., arXiv 2403.07691, Eq. 6): NLL of the chosen response + lam * odds-ratio term.

    nll_tokens "response": the NLL over the chosen response given the prompt (Eq. 2's conditional SFT loss);
    "prompt_and_response": over the prompt's tokens too, as TRL's ORPOTrainer computes it (the batch must be
    collated with score_prompt=True). The odds-ratio term uses the responses' mean log-probs either way."""

    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        logps = sequence_logps(model, batch)
        chosen, rejected = logps.split()
        if nll_tokens == "prompt_and_response":
            if logps.prompt is None:
                raise ValueError("ORPO nll_tokens='prompt_and_response' needs batches collated with score_prompt")
            nll = sft_nll_loss(chosen.sum + logps.prompt.sum, chosen.count + logps.prompt.count)
        else:
            nll = sft_nll_loss(chosen.sum, chosen.count)
        out = orpo_loss(chosen.mean, rejected.mean, nll, lam=lam)
        return StepOutput(out.loss, out.metrics)

    return objective


Collate = Callable[[list[dict]], dict[str, torch.Tensor]]


def method_plan(method: str, *, pad_id: int, beta: float = 0.1, loss_type: str = "sigmoid",
                label_smoothing: float = 0.0, rpo_alpha: float = 0.0, lam: float = 0.5,
                orpo_nll_tokens: str = "response") -> tuple[Objective, Collate]:
    """The objective and the batch collation of one training method ("sft", "dpo" or "orpo"): what the
    pipeline's stages and the benchmark (bench/) both train with."""
    if method == "sft":
        return sft_objective, lambda rows: collate_sft(rows, pad_id)
    if method == "dpo":
        objective = make_dpo_objective(beta=beta, loss_type=loss_type, label_smoothing=label_smoothing,
                                       rpo_alpha=rpo_alpha)
    elif method == "orpo":
        objective = make_orpo_objective(lam=lam, nll_tokens=orpo_nll_tokens)
        score_prompt = orpo_nll_tokens == "prompt_and_response"
        return objective, lambda rows: collate_shared_pairs(rows, pad_id, score_prompt=score_prompt)
    else:
        raise ValueError(f"unknown method {method!r}")
    return objective, lambda rows: collate_shared_pairs(rows, pad_id)  # the prompt encoded once per pair
