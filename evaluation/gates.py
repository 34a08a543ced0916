"""Promotion gates: a model becomes `champion` only when every gate passes."""

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


def check_gates(*, win_rate: float, win_rate_ci_low: float, min_win_rate: float, use_lower_bound: bool,
                final_losses: dict[str, float]) -> list[GateResult]:
    """Win rate (or the lower bound of its 95 % interval) at least `min_win_rate`; every stage's final
    training loss finite."""
    value = win_rate_ci_low if use_lower_bound else win_rate
    name = "win_rate_ci_low" if use_lower_bound else "win_rate"
    gates = [GateResult(name, value, min_win_rate, value >= min_win_rate)]
    finite = all(math.isfinite(v) for v in final_losses.values()) and bool(final_losses)
    gates.append(GateResult("finite_losses", float(finite), 1.0, finite))
    return gates


def all_passed(gates: list[GateResult]) -> bool:
    return all(g.passed for g in gates)
