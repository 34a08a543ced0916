"""Loss functions as pure functions over sequence log-probabilities.

No model, accelerator or logging in here: inputs are tensors of per-sequence log-probs (shape (B,)), output
is a `LossOutput`. Metric names follow TRL's, so curves compare across tools.

References
- DPO: Rafailov et al., arXiv 2305.18290, Eq. 7.  cDPO (label smoothing): Mitchell, "A note on DPO with
  noisy preferences" (2023).  IPO: Azar et al., arXiv 2310.12036, Eq. 17.  Hinge: SLiC, Zhao et al.,
  arXiv 2305.10425, Eq. 1 (as in TRL's `hinge`).
- ORPO: Hong et al., arXiv 2403.07691, Eq. 4-7.
- KTO: Ethayarajh et al., arXiv 2402.01306, Sec. 4.1: the value function and loss of Eq. 8 (TRL's comment
  numbers the same display Eqn (7)) and the KL reference point z0 estimated from mismatched pairs.
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


# ---- KTO ---------------------------------------------------------------------------------------------------
# Unpaired feedback: each example (x, y) is desirable or undesirable. With r(x, y) = log pi(y|x) - log ref(y|x)
# and the reference point z0 = KL(pi(y'|x) || ref(y'|x)), the value function (Eq. 8) is
#   v(x, y) = lambda_D * sigma(beta * (r(x, y) - z0))   for a desirable y
#             lambda_U * sigma(beta * (z0 - r(x, y)))   for an undesirable y
# and L_KTO = E_{x,y}[lambda_y - v(x, y)] = E[lambda_y * (1 - sigma(...))], as TRL's `loss_type="kto"` computes it.


def kto_kl_reference(policy_kl_logps: torch.Tensor, reference_kl_logps: torch.Tensor, *,
                     mean_across_processes: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """KTO's reference point z0 (): max(0, mean_i [log pi(y'_i|x_i) - log ref(y'_i|x_i)]), detached.

    policy_kl_logps, reference_kl_logps: (B,) summed log-probs of the batch's mismatched pairs (x_i, y'_i), y'_i
    another example's completion (`collate_kto`: y'_i = y_{i-1 mod B}, as TRL). As TRL's KTOTrainer: the mean
    over the batch, detached (z0 carries no gradient), over every process's examples, then clamped at 0 (the
    paper's max(0, .)). `mean_across_processes` ((B,) local values -> (): their mean over all processes; None:
    one process) is where a multi-process trainer hands in e.g.
    `lambda kl: accelerator.gather_for_metrics(kl).mean()`."""
    per_example = (policy_kl_logps - reference_kl_logps).detach()  # (B,)
    kl = per_example.mean() if mean_across_processes is None else mean_across_processes(per_example)
    return kl.clamp(min=0)


def kto_loss(policy_logps: torch.Tensor, reference_logps: torch.Tensor, desirable: torch.Tensor,
             kl_estimate: torch.Tensor | float, *, beta: float, desirable_weight: float = 1.0,
             undesirable_weight: float = 1.0) -> LossOutput:
    """KTO loss (Eq. 8): mean over the batch of lambda_y * (1 - sigma(beta * (r - z0))) for desirable
    examples and lambda_y * (1 - sigma(beta * (z0 - r))) for undesirable ones.

    policy_logps, reference_logps: (B,) summed log-probs of each example's completion; desirable: (B,) bool;
    kl_estimate: () z0 from `kto_kl_reference` (detached here; not clamped again). A batch may hold only one
    kind. chosen_rewards / rejected_rewards are beta * r of the desirable (N_D,) / undesirable (N_U,)
    examples. Metrics (TRL's names): rewards/chosen and logps/chosen are means over the desirable examples,
    rewards/rejected and logps/rejected over the undesirable ones, and 0 where the batch has none (the keys
    stay the same every step, which averaging over processes needs); rewards/margins their difference, 0
    unless both kinds are present; kl the z0 used."""
    if policy_logps.shape[0] == 0:
        raise ValueError("KTO needs at least one example")
    desirable = desirable.to(device=policy_logps.device, dtype=torch.bool)
    z0 = torch.as_tensor(kl_estimate, dtype=policy_logps.dtype, device=policy_logps.device).detach()  # ()
    log_ratio = policy_logps - reference_logps  # (B,) r(x, y)
    desirable_losses = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - z0)))  # (B,)
    undesirable_losses = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - log_ratio)))  # (B,)
    losses = torch.where(desirable, desirable_losses, undesirable_losses)  # (B,)
    rewards = (beta * log_ratio).detach()  # (B,)
    chosen_rewards, rejected_rewards = rewards[desirable], rewards[~desirable]  # (N_D,), (N_U,)
    both = bool(desirable.any()) and bool((~desirable).any())
    metrics = {
        "rewards/chosen": mean_or_zero(chosen_rewards),
        "rewards/rejected": mean_or_zero(rejected_rewards),
        "rewards/margins": (mean_or_zero(chosen_rewards) - mean_or_zero(rejected_rewards)) if both
        else rewards.new_zeros(()),
        "logps/chosen": mean_or_zero(policy_logps.detach()[desirable]),
        "logps/rejected": mean_or_zero(policy_logps.detach()[~desirable]),
        "kl": z0,
    }
    return LossOutput(loss=losses.mean(), chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards,
                      metrics=metrics)


def mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """() mean of a (N,) tensor, 0 when N = 0 (not NaN)."""
    return values.mean() if values.numel() else values.new_zeros(())


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
