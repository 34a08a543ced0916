"""Loss functions against hand-computed values (arithmetic in each docstring)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from alignment.losses import DPO_LOSSES, dpo_loss, orpo_loss, sft_nll_loss

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
