"""Win rates and their confidence intervals."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

Z_95 = 1.959963984540054


def wilson_interval(p_hat: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion p_hat observed over n trials (Wilson 1927)."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def win_rate(verdicts: Iterable[str]) -> dict[str, float]:
    """Win rate of the policy with ties counted half, and its Wilson 95 % interval (ties enter p_hat as half
    a win; n is the number of comparisons)."""
    counts = Counter(verdicts)
    n = sum(counts.values())
    wins, ties, losses = counts.get("win", 0), counts.get("tie", 0), counts.get("loss", 0)
    rate = (wins + 0.5 * ties) / n if n else 0.0
    low, high = wilson_interval(rate, n)
    return {"win_rate": rate, "win_rate_ci_low": low, "win_rate_ci_high": high,
            "wins": float(wins), "ties": float(ties), "losses": float(losses), "n": float(n)}
