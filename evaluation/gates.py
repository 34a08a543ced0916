"""Promotion gates: a model becomes `champion` only when every gate passes.

Gates (each optional one is skipped when its threshold is unset, i.e. None):
- win_rate (or win_rate_ci_low with use_lower_bound): judged win rate over the reference >= min_win_rate;
- reward_accuracy: held-out implicit reward accuracy >= min_reward_accuracy;
- benchmark_regression.<task>: the alignment tax, reference minus policy on the task's main metric, <= the
  allowed regression (one gate per benchmark task);
- contamination.<eval set>: share of the set's items sharing an n-gram with training prompts <= the ceiling;
- degeneration.<flag>: policy's rate of empty, echoed, looping or too-short held-out answers minus the
  reference's <= the allowed rise (evaluation/quality.py);
- length_ratio: policy's median held-out answer length over the reference's >= the floor;
- kl: the estimated KL(policy || reference) in nats per answer <= the bound;
- finite_losses: every training stage ended with a finite loss.

The last three groups are the checks the training reward did not write: a policy that games its scorer
(reward hacking) shows there first, and the generative benchmark's regression gate beside them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float
    threshold: float
    passed: bool

    def to_dict(self) -> dict[str, float | str | bool]:
        return asdict(self)


def at_least(name: str, value: float, threshold: float) -> GateResult:
    return GateResult(name, value, threshold, math.isfinite(value) and value >= threshold)


def at_most(name: str, value: float, threshold: float) -> GateResult:
    return GateResult(name, value, threshold, math.isfinite(value) and value <= threshold)


def benchmark_gates(benchmarks: dict[str, tuple[float, float]] | None,
                    max_regression: float | None) -> list[GateResult]:
    """benchmark_regression.<task>: (reference - policy) of each task's (policy, reference) values at most
    `max_regression` (none when it is unset)."""
    if max_regression is None:
        return []
    return [at_most(f"benchmark_regression.{task}", reference - policy, max_regression)
            for task, (policy, reference) in sorted((benchmarks or {}).items())]


def round_gates(*, benchmarks: dict[str, tuple[float, float]] | None, max_benchmark_regression: float | None,
                length_ratio: float | None, min_length_ratio: float | None) -> list[GateResult]:
    """The gates an on-policy round's policy is held to before a later round builds on it (tasks/rounds.py):
    those of `check_gates` measured without a comparison run — each general benchmark against the original
    model's (`benchmarks`: task -> (policy, original)) and the median length of its held-out samples over the
    original model's (`length_ratio`). Unlike `check_gates`, a value that was not measured is left out: the
    kept policy still faces every gate, measured, in the final evaluation."""
    gates = benchmark_gates(benchmarks, max_benchmark_regression)
    if min_length_ratio is not None and length_ratio is not None:
        gates.append(at_least("length_ratio", length_ratio, min_length_ratio))
    return gates


def check_gates(*, win_rate: float, win_rate_ci_low: float, min_win_rate: float, use_lower_bound: bool,
                final_losses: dict[str, float], reward_accuracy: float | None = None,
                min_reward_accuracy: float | None = None,
                benchmarks: dict[str, tuple[float, float]] | None = None,
                max_benchmark_regression: float | None = None,
                contamination: dict[str, float] | None = None,
                max_contamination: float | None = None,
                degeneration: dict[str, tuple[float, float]] | None = None,
                max_degeneration_increase: float | None = None,
                length_ratio: float | None = None, min_length_ratio: float | None = None,
                kl: float | None = None, max_kl: float | None = None) -> list[GateResult]:
    """Every configured gate's value, threshold and verdict. `benchmarks` maps a task to (policy, reference)
    main-metric values; `contamination` maps an eval set to its contaminated share; `degeneration` maps a
    flag (echo, loop, ...) to (policy, reference) rates. A gate whose value is missing or not finite fails (no
    evidence is not a pass)."""
    value = win_rate_ci_low if use_lower_bound else win_rate
    gates = [at_least("win_rate_ci_low" if use_lower_bound else "win_rate", value, min_win_rate)]
    if min_reward_accuracy is not None:
        gates.append(at_least("reward_accuracy", math.nan if reward_accuracy is None else reward_accuracy,
                              min_reward_accuracy))
    gates += benchmark_gates(benchmarks, max_benchmark_regression)
    if max_contamination is not None:
        for name, share in sorted((contamination or {}).items()):
            gates.append(at_most(f"contamination.{name}", share, max_contamination))
    if max_degeneration_increase is not None:
        if not degeneration:
            gates.append(at_most("degeneration", math.nan, max_degeneration_increase))
        for flag, (policy, reference) in sorted((degeneration or {}).items()):
            gates.append(at_most(f"degeneration.{flag}", policy - reference, max_degeneration_increase))
    if min_length_ratio is not None:
        gates.append(at_least("length_ratio", math.nan if length_ratio is None else length_ratio, min_length_ratio))
    if max_kl is not None:
        gates.append(at_most("kl", math.nan if kl is None else kl, max_kl))
    finite = all(math.isfinite(v) for v in final_losses.values()) and bool(final_losses)
    gates.append(GateResult("finite_losses", float(finite), 1.0, finite))
    return gates


def all_passed(gates: list[GateResult]) -> bool:
    return all(g.passed for g in gates)


def human_win_rate_gates(*, win_rate: float, n: int, min_win_rate: float, min_votes: int) -> list[GateResult]:
    """The optional human gate (`promotion.min_human_win_rate`, `promotion.min_human_votes`): the arena's
    human win rate (ties and "both bad" count half) >= min_win_rate, over at least min_votes votes. Too few
    votes fail the gate (no evidence is not a pass)."""
    votes = GateResult("human_votes", float(n), float(min_votes), n >= min_votes)
    rate = at_least("human_win_rate", win_rate, min_win_rate)
    return [votes, GateResult(rate.name, rate.value, rate.threshold, rate.passed and votes.passed)]
