"""Loss functions as pure functions over sequence log-probabilities.

No model, accelerator or logging in here: inputs are tensors of per-sequence log-probs (shape (B,)), output
is a `LossOutput`. Metric names follow TRL's, so curves compare across tools.

References
- DPO: Rafailov et al., arXiv 2305.18290, Eq. 7.  cDPO (label smoothing): Mitchell, "A note on DPO with
  noisy preferences" (2023).  IPO: Azar et al., arXiv 2310.12036, Eq. 17.  Hinge: SLiC, Zhao et al.,
  arXiv 2305.10425, Eq. 1 (as in TRL's `hinge`).
- ORPO: Hong et al., arXiv 2403.07691, Eq. 4-7.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor  # () the scalar to back-propagate
    chosen_rewards: torch.Tensor  # (B,) detached
    rejected_rewards: torch.Tensor  # (B,) detached
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)  # () detached scalars, TRL names


def sft_nll_loss(sum_logps: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """Token-level mean negative log-likelihood over a batch: -sum_i sum_t log p / sum_i T_i.

    sum_logps: (B,) summed log-probs of the trained tokens; token_counts: (B,) number of those tokens."""
    return -sum_logps.sum() / token_counts.sum().clamp(min=1)


# ---- DPO family ---------------------------------------------------------------------------------------
# Each takes h = (log pi(y_w) - log pi(y_l)) - (log ref(y_w) - log ref(y_l)), shape (B,), and returns (B,).


def dpo_sigmoid(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # DPO Eq. 7: -log sigma(beta * h); cDPO mixes in the flipped label with weight epsilon.
    return -F.logsigmoid(beta * h) * (1 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing


def dpo_ipo(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # IPO Eq. 17: (h - 1/(2 tau))^2 with tau = beta. (Callers pass length-averaged log-probs, as TRL does.)
    return (h - 1 / (2 * beta)) ** 2


def dpo_hinge(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    # SLiC calibration loss: max(0, 1 - beta * h).
    return torch.relu(1 - beta * h)


DPO_LOSSES: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "sigmoid": dpo_sigmoid,
    "ipo": dpo_ipo,
    "hinge": dpo_hinge,
}


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, *, beta: float,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> LossOutput:
    """DPO-family loss; implicit rewards r = beta * (log pi(y|x) - log ref(y|x)) (DPO Eq. 5)."""
    if loss_type not in DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose from {sorted(DPO_LOSSES)}")
    chosen_ratio = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_ratio = policy_rejected_logps - ref_rejected_logps  # (B,)
    losses = DPO_LOSSES[loss_type](chosen_ratio - rejected_ratio, beta, label_smoothing)  # (B,)
    chosen_rewards = (beta * chosen_ratio).detach()
    rejected_rewards = (beta * rejected_ratio).detach()
    return LossOutput(
        loss=losses.mean(), chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards,
        metrics=reward_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps),
    )


# ---- ORPO ----------------------------------------------------------------------------------------------


def orpo_loss(policy_chosen_mean_logps: torch.Tensor, policy_rejected_mean_logps: torch.Tensor,
              chosen_nll: torch.Tensor, *, lam: float) -> LossOutput:
    """ORPO: L = L_SFT + lambda * L_OR (Eq. 6).

    odds(y|x) = P(y|x) / (1 - P(y|x)) with P the length-normalised likelihood exp(mean log p) (Eq. 4);
    L_OR = -log sigma(log(odds(y_w|x) / odds(y_l|x))) (Eq. 7).
    policy_*_mean_logps: (B,) mean per-token log-probs (< 0); chosen_nll: () the SFT loss on y_w."""
    # log odds = log P - log(1 - P) = logp - log1p(-exp(logp))
    log_odds = (policy_chosen_mean_logps - policy_rejected_mean_logps) - (
        torch.log1p(-torch.exp(policy_chosen_mean_logps)) - torch.log1p(-torch.exp(policy_rejected_mean_logps))
    )  # (B,)
    log_sigmoid_odds = F.logsigmoid(log_odds)  # (B,)
    loss = chosen_nll - lam * log_sigmoid_odds.mean()
    chosen_rewards = (lam * policy_chosen_mean_logps).detach()
    rejected_rewards = (lam * policy_rejected_mean_logps).detach()
    metrics = reward_metrics(chosen_rewards, rejected_rewards, policy_chosen_mean_logps, policy_rejected_mean_logps)
    metrics.update({
        "nll_loss": chosen_nll.detach(),
        "log_odds_ratio": log_sigmoid_odds.detach().mean(),
        "log_odds_chosen": log_odds.detach().mean(),
    })
    return LossOutput(loss=loss, chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards, metrics=metrics)


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor, chosen_logps: torch.Tensor,
                   rejected_logps: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": chosen_logps.detach().mean(),
        "logps/rejected": rejected_logps.detach().mean(),
    }
