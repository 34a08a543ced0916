"""Promotion gates: win rate (or its lower bound) against the threshold, and finite training losses."""

from __future__ import annotations

import math

import pytest

from evaluation.gates import all_passed, check_gates

FINITE = {"sft": 1.2, "dpo": 0.6}


def gates(**kw):
    args = {"win_rate": 0.7, "win_rate_ci_low": 0.55, "min_win_rate": 0.6, "use_lower_bound": False,
            "final_losses": FINITE}
    return {g.name: g for g in check_gates(**{**args, **kw})}


def test_all_gates_pass() -> None:
    out = gates()
    assert set(out) == {"win_rate", "finite_losses"}
    assert out["win_rate"].passed and out["win_rate"].value == 0.7 and out["win_rate"].threshold == 0.6
    assert out["finite_losses"].passed
    assert all_passed(list(out.values()))


def test_win_rate_below_threshold_fails() -> None:
    out = gates(win_rate=0.59)
    assert not out["win_rate"].passed
    assert not all_passed(list(out.values()))


def test_threshold_is_inclusive() -> None:
    assert gates(win_rate=0.6)["win_rate"].passed


def test_use_lower_bound_gates_on_the_interval() -> None:
    """Point estimate 0.7 passes 0.6, but the lower bound 0.55 does not."""
    out = gates(use_lower_bound=True)
    assert set(out) == {"win_rate_ci_low", "finite_losses"}
    assert out["win_rate_ci_low"].value == 0.55 and not out["win_rate_ci_low"].passed
    assert not all_passed(list(out.values()))
    assert gates(use_lower_bound=True, win_rate_ci_low=0.61)["win_rate_ci_low"].passed


@pytest.mark.parametrize("losses", [
    {"sft": 1.0, "dpo": math.nan},
    {"sft": math.inf, "dpo": 0.5},
    {"orpo": -math.inf},
    {},  # no losses at all is not evidence of a healthy run
])
def test_non_finite_or_missing_losses_fail(losses: dict[str, float]) -> None:
    out = gates(final_losses=losses)
    assert out["win_rate"].passed
    assert not out["finite_losses"].passed
    assert not all_passed(list(out.values()))


def test_gate_result_to_dict() -> None:
    assert gates()["win_rate"].to_dict() == {"name": "win_rate", "value": 0.7, "threshold": 0.6, "passed": True}


def test_reward_accuracy_gate() -> None:
    out = gates(reward_accuracy=0.74, min_reward_accuracy=0.75)
    assert out["reward_accuracy"].value == 0.74 and not out["reward_accuracy"].passed
    assert gates(reward_accuracy=0.75, min_reward_accuracy=0.75)["reward_accuracy"].passed
    assert "reward_accuracy" not in gates(reward_accuracy=0.1)  # no threshold: no gate
    assert not gates(min_reward_accuracy=0.5)["reward_accuracy"].passed  # threshold but no value: fails


def test_benchmark_regression_is_one_gate_per_task() -> None:
    """Alignment tax: reference minus policy on each task's main metric, at most the allowed regression."""
    out = gates(benchmarks={"mc": (0.80, 0.82), "sanity": (0.50, 0.95), "gen": (0.9, 0.6)},
                max_benchmark_regression=0.05)
    mc, sanity, gen = (out[f"benchmark_regression.{t}"] for t in ("mc", "sanity", "gen"))
    assert mc.value == pytest.approx(0.02) and mc.passed
    assert sanity.value == pytest.approx(0.45) and not sanity.passed
    assert gen.value == pytest.approx(-0.3) and gen.passed  # an improvement is no regression
    assert not all_passed(list(out.values()))
    assert not any(k.startswith("benchmark_regression") for k in gates(benchmarks={"mc": (0.1, 0.9)}))


def test_contamination_ceiling_per_eval_set() -> None:
    out = gates(contamination={"heldout": 0.0, "mc": 0.25}, max_contamination=0.2)
    assert out["contamination.heldout"].passed
    assert out["contamination.mc"].value == 0.25 and not out["contamination.mc"].passed


def test_nan_values_fail_their_gate() -> None:
    assert not gates(win_rate=math.nan)["win_rate"].passed
    out = gates(benchmarks={"mc": (math.nan, 0.5)}, max_benchmark_regression=0.05)
    assert not out["benchmark_regression.mc"].passed


def test_degeneration_gates_one_per_flag_on_the_rise_over_the_reference() -> None:
    """echo 0.10 vs 0.02: rise 0.08 > 0.05 fails; loop 0.30 vs 0.28: rise 0.02 passes (the reference loops
    too: a rise, not an absolute rate, is gated)."""
    out = gates(degeneration={"echo": (0.10, 0.02), "loop": (0.30, 0.28)}, max_degeneration_increase=0.05)
    assert out["degeneration.echo"].value == pytest.approx(0.08) and not out["degeneration.echo"].passed
    assert out["degeneration.loop"].passed and out["degeneration.loop"].threshold == 0.05
    assert not gates(max_degeneration_increase=0.05)["degeneration"].passed  # no measurement: no pass


def test_length_ratio_and_kl_gates() -> None:
    out = gates(length_ratio=0.2, min_length_ratio=0.5, kl=3.0, max_kl=25.0)
    assert not out["length_ratio"].passed and out["length_ratio"].value == 0.2
    assert out["kl"].passed and out["kl"].value == 3.0
    assert not gates(min_length_ratio=0.5)["length_ratio"].passed  # missing value fails
    assert not gates(kl=float("nan"), max_kl=25.0)["kl"].passed
    assert "kl" not in gates(kl=100.0)  # no bound configured: no gate


def test_no_length_gate_when_every_prompt_has_a_length_instruction() -> None:
    from tasks.registry import length_gate

    measured = {"quality/reference/degenerate_rate": 0.0, "quality/policy/degenerate_rate": 0.0}
    assert length_gate(0.5, measured) is None  # nothing to measure length on (e.g. kinds: [word_limit])
    assert length_gate(0.5, {**measured, "quality/reference/median_words": 10.0}) == 0.5
    assert length_gate(0.5, {}) == 0.5  # no quality measured at all: the gate stays and fails
