"""Loss functions against hand-computed values (arithmetic in each docstring)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from alignment.training.losses import (
    DPO_LOSSES,
    dpo_loss,
    kto_kl_reference,
    kto_loss,
    orpo_loss,
    sft_nll_loss,
)

T = torch.tensor
# Two pairs. Pair 1: policy (-1, -3), reference (-2, -2) -> h = (-1 + 3) - (-2 + 2) = 2.
#            Pair 2: policy (-2, -1), reference (-2, -2) -> h = (-2 + 1) - 0 = -1.
POLICY_C, POLICY_R = T([-1.0, -2.0]), T([-3.0, -1.0])
REF_C, REF_R = T([-2.0, -2.0]), T([-2.0, -2.0])


def test_dpo_sigmoid_matches_hand_computation() -> None:
    """beta = 0.5: beta*h = (1, -0.5); -log sigma(1) = log(1 + e^-1) = 0.3132617;
    -log sigma(-0.5) = log(1 + e^0.5) = 0.9740770; mean 0.6436693.
    rewards: chosen 0.5*(-1+2)=0.5, 0.5*(-2+2)=0; rejected 0.5*(-3+2)=-0.5, 0.5*(-1+2)=0.5."""
    out = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5)
    assert_close(out.loss, T(0.6436693), atol=1e-6, rtol=0)
    assert_close(out.chosen_rewards, T([0.5, 0.0]))
    assert_close(out.rejected_rewards, T([-0.5, 0.5]))
    assert_close(out.metrics["rewards/margins"], T(0.25))  # mean(1.0, -0.5)
    assert_close(out.metrics["rewards/accuracies"], T(0.5))
    assert_close(out.metrics["logps/chosen"], T(-1.5))


def test_conservative_dpo_label_smoothing() -> None:
    """eps = 0.2, pair 1 only: 0.8 * log(1+e^-1) + 0.2 * log(1+e^1) = 0.8*0.3132617 + 0.2*1.3132617 = 0.5132617."""
    out = dpo_loss(POLICY_C[:1], POLICY_R[:1], REF_C[:1], REF_R[:1], beta=0.5, label_smoothing=0.2)
    assert_close(out.loss, T(0.5132617), atol=1e-6, rtol=0)


def test_ipo_matches_hand_computation() -> None:
    """tau = beta = 0.5, 1/(2 tau) = 1: (2 - 1)^2 = 1, (-1 - 1)^2 = 4; mean 2.5."""
    out = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5, loss_type="ipo")
    assert_close(out.loss, T(2.5))


def test_hinge_matches_hand_computation() -> None:
    """max(0, 1 - 0.5*2) = 0, max(0, 1 - 0.5*(-1)) = 1.5; mean 0.75."""
    out = dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.5, loss_type="hinge")
    assert_close(out.loss, T(0.75))


def test_dpo_at_reference_is_log2_and_gradient_points_the_right_way() -> None:
    """policy == reference -> h = 0 -> loss = log 2; the gradient raises chosen and lowers rejected."""
    pc, pr = T([-1.0], requires_grad=True), T([-1.0], requires_grad=True)
    out = dpo_loss(pc, pr, T([-1.0]), T([-1.0]), beta=0.1)
    assert_close(out.loss, T(math.log(2)))
    out.loss.backward()
    assert pc.grad.item() < 0 < pr.grad.item()


def test_unknown_dpo_loss_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown DPO loss_type"):
        dpo_loss(POLICY_C, POLICY_R, REF_C, REF_R, beta=0.1, loss_type="nope")
    assert set(DPO_LOSSES) == {"sigmoid", "ipo", "hinge"}


def test_orpo_matches_hand_computation() -> None:
    """P_w = 0.5, P_l = 0.25 (mean log-probs log 0.5, log 0.25). odds_w = 1, odds_l = 1/3;
    log odds ratio = log 3 = 1.0986123; log sigma(log 3) = log(3/4) = -0.2876821.
    With L_SFT = 2.0 and lambda = 0.5: L = 2.0 - 0.5 * (-0.2876821) = 2.1438410."""
    out = orpo_loss(T([math.log(0.5)]), T([math.log(0.25)]), T(2.0), lam=0.5)
    assert_close(out.loss, T(2.1438410), atol=1e-6, rtol=0)
    assert_close(out.metrics["log_odds_chosen"], T(math.log(3.0)))
    assert_close(out.metrics["log_odds_ratio"], T(math.log(0.75)))
    assert_close(out.metrics["nll_loss"], T(2.0))
    assert_close(out.chosen_rewards, T([0.5 * math.log(0.5)]))


def test_sft_nll_is_token_mean() -> None:
    """sums (-3, -1) over counts (3, 1): -(-4)/4 = 1.0 (a token-level, not a sequence-level, mean)."""
    assert_close(sft_nll_loss(T([-3.0, -1.0]), T([3, 1])), T(1.0))


# KTO: four examples, two desirable then two undesirable. policy (-1, -3, -2, -4), reference -2 each
# -> r = log pi - log ref = (1, -1, 0, -2); beta = 0.5, z0 = 0.5; rewards beta * r = (0.5, -0.5, 0, -1).
# desirable:   1 - sigma(0.5 * (r - z0)):  1 - sigma(0.25) = 0.4378235, 1 - sigma(-0.75) = 0.6791787
# undesirable: 1 - sigma(0.5 * (z0 - r)):  1 - sigma(0.25) = 0.4378235, 1 - sigma(1.25)  = 0.2227001
KTO_POLICY, KTO_REF = T([-1.0, -3.0, -2.0, -4.0]), T([-2.0, -2.0, -2.0, -2.0])
KTO_DESIRABLE = T([True, True, False, False])


def test_kto_matches_hand_computation() -> None:
    """Mean of the four: (0.4378235 + 0.6791787 + 0.4378235 + 0.2227001) / 4 = 1.7775258 / 4 = 0.4443815.
    rewards/chosen mean(0.5, -0.5) = 0; rewards/rejected mean(0, -1) = -0.5; margins 0.5;
    logps/chosen mean(-1, -3) = -2; logps/rejected mean(-2, -4) = -3; kl = z0 = 0.5."""
    out = kto_loss(KTO_POLICY, KTO_REF, KTO_DESIRABLE, T(0.5), beta=0.5)
    assert_close(out.loss, T(0.4443815), atol=1e-6, rtol=0)
    assert_close(out.chosen_rewards, T([0.5, -0.5]))
    assert_close(out.rejected_rewards, T([0.0, -1.0]))
    expected = {"rewards/chosen": 0.0, "rewards/rejected": -0.5, "rewards/margins": 0.5, "logps/chosen": -2.0,
                "logps/rejected": -3.0, "kl": 0.5}
    assert_close(out.metrics, {k: T(v) for k, v in expected.items()})


def test_kto_weights_scale_each_kind() -> None:
    """lambda_D = 2, lambda_U = 0.5: (2 * (0.4378235 + 0.6791787) + 0.5 * (0.4378235 + 0.2227001)) / 4
    = (2.2340044 + 0.3302618) / 4 = 0.6410666. Shuffled rows give the same: each example's mask, not its
    position, picks its weight."""
    out = kto_loss(KTO_POLICY, KTO_REF, KTO_DESIRABLE, T(0.5), beta=0.5, desirable_weight=2.0,
                   undesirable_weight=0.5)
    assert_close(out.loss, T(0.6410666), atol=1e-6, rtol=0)
    shuffled = [2, 0, 3, 1]
    out = kto_loss(KTO_POLICY[shuffled], KTO_REF[shuffled], KTO_DESIRABLE[shuffled], T(0.5), beta=0.5,
                   desirable_weight=2.0, undesirable_weight=0.5)
    assert_close(out.loss, T(0.6410666), atol=1e-6, rtol=0)


def test_kto_all_desirable_batch() -> None:
    """Rows 1-2 only, lambda_D = 2: 2 * (0.4378235 + 0.6791787) / 2 = 1.1170022. No undesirable example:
    rewards/rejected, logps/rejected and margins are 0 (not NaN); rejected_rewards is empty."""
    out = kto_loss(KTO_POLICY[:2], KTO_REF[:2], KTO_DESIRABLE[:2], T(0.5), beta=0.5, desirable_weight=2.0)
    assert_close(out.loss, T(1.1170022), atol=1e-6, rtol=0)
    assert out.rejected_rewards.shape == (0,)
    assert_close(out.metrics["rewards/chosen"], T(0.0))
    for name in ("rewards/rejected", "logps/rejected", "rewards/margins"):
        assert_close(out.metrics[name], T(0.0))


def test_kto_all_undesirable_batch() -> None:
    """Rows 3-4 only, lambda_U = 0.5: 0.5 * (0.4378235 + 0.2227001) / 2 = 0.1651309; rewards/rejected
    mean(0, -1) = -0.5; the chosen metrics and margins are 0."""
    out = kto_loss(KTO_POLICY[2:], KTO_REF[2:], KTO_DESIRABLE[2:], 0.5, beta=0.5, undesirable_weight=0.5)
    assert_close(out.loss, T(0.1651309), atol=1e-6, rtol=0)
    assert out.chosen_rewards.shape == (0,)
    assert_close(out.metrics["rewards/rejected"], T(-0.5))
    for name in ("rewards/chosen", "logps/chosen", "rewards/margins"):
        assert_close(out.metrics[name], T(0.0))


def test_kto_at_reference_and_gradient_directions() -> None:
    """policy == reference, z0 = 0 -> every term is lambda_y * (1 - sigma(0)) = lambda_y / 2: with
    lambda_D = 2, lambda_U = 0.5 and one of each, (1 + 0.25) / 2 = 0.625. The gradient raises the desirable
    completion's log-prob and lowers the undesirable one's; z0 gets none."""
    logps = T([-1.0, -1.0], requires_grad=True)
    z0 = T(0.0, requires_grad=True)
    out = kto_loss(logps, T([-1.0, -1.0]), T([True, False]), z0, beta=0.1, desirable_weight=2.0,
                   undesirable_weight=0.5)
    assert_close(out.loss, T(0.625))
    out.loss.backward()
    assert logps.grad[0].item() < 0 < logps.grad[1].item()
    assert z0.grad is None


def test_kto_refuses_an_empty_batch() -> None:
    with pytest.raises(ValueError, match="at least one"):
        kto_loss(T([]), T([]), T([], dtype=torch.bool), 0.0, beta=0.1)


def test_kto_kl_reference_is_the_clamped_detached_batch_mean() -> None:
    """Mismatched-pair log-ratios (1, 1, 0, 0) -> mean 0.5; (-1, -1, 0, 0) -> mean -0.5, clamped to 0.
    Across processes every example's log-ratio is averaged before the clamp (as TRL's gather): local
    (-1, -1, 0, 0) and another process's two examples (1.5, 1.5) -> (-2 + 3) / 6 = 1/6 (clamping first would
    give (0 + 1.5) / 2 = 0.75; a mean of the two means, (-0.5 + 1.5) / 2 = 0.5)."""
    ref = T([-2.0, -2.0, -2.0, -2.0])
    policy = T([-1.0, -1.0, -2.0, -2.0], requires_grad=True)
    z0 = kto_kl_reference(policy, ref)
    assert_close(z0, T(0.5))
    assert not z0.requires_grad
    assert_close(kto_kl_reference(T([-3.0, -3.0, -2.0, -2.0]), ref), T(0.0))
    two_processes = kto_kl_reference(T([-3.0, -3.0, -2.0, -2.0]), ref,
                                     mean_across_processes=lambda kl: torch.cat([kl, T([1.5, 1.5])]).mean())
    assert_close(two_processes, T(1 / 6))
