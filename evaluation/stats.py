"""Win rates, their confidence intervals, and the win rate controlled for answer length."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

Z_95 = 1.959963984540054


def wilson_interval(p_hat: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a proportion p_hat observed over n trials (Wilson 1927)."""
    if n <= 0:
        return 0.0, 1.0
    denom = 1 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / denom
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


VERDICTS = ("win", "tie", "loss")
ERROR = "error"  # a pair the judge could not decide (evaluation.judges.judge_pairs)


def win_rate(verdicts: Iterable[str]) -> dict[str, float]:
    """Win rate of the policy with ties counted half, and its Wilson 95 % interval (ties enter p_hat as half
    a win). "error" verdicts are counted in `errors` and left out of everything else: n is the number of
    judged pairs. Any other verdict is a ValueError."""
    counts = Counter(verdicts)
    unknown = set(counts) - {*VERDICTS, ERROR}
    if unknown:
        raise ValueError(f"unknown verdicts {sorted(unknown)}; expected one of {[*VERDICTS, ERROR]}")
    wins, ties, losses = counts["win"], counts["tie"], counts["loss"]
    n = wins + ties + losses
    rate = (wins + 0.5 * ties) / n if n else 0.0
    low, high = wilson_interval(rate, n)
    return {"win_rate": rate, "win_rate_ci_low": low, "win_rate_ci_high": high,
            "wins": float(wins), "ties": float(ties), "losses": float(losses), "n": float(n),
            "errors": float(counts[ERROR])}


LENGTH_BUCKETS = ("policy_shorter", "similar", "policy_longer")


def length_bucket(policy: str, reference: str, threshold: float = 0.1) -> str:
    """Relative length difference in whitespace-separated words, d = (w_p - w_r) / max(w_p, w_r) (0 when
    both are empty): "similar" if |d| <= threshold, else "policy_longer" (d > 0) or "policy_shorter"."""
    w_p, w_r = len(policy.split()), len(reference.split())
    d = (w_p - w_r) / max(w_p, w_r, 1)
    return "similar" if abs(d) <= threshold else "policy_longer" if d > 0 else "policy_shorter"


def length_controlled(rows: Iterable[Mapping[str, str]], *, threshold: float = 0.1) -> dict[str, float]:
    """Win rate stratified by answer length, so a judge's taste for longer answers cannot carry the result.

    Each row has "policy", "reference" (the answers) and "verdict". Rows go to a bucket by `length_bucket`
    (relative word-count difference, |d| <= threshold is "similar"); "error" rows are counted in lc_errors
    and left out. Per bucket: n, win rate (ties half) and its Wilson 95 % interval; an empty bucket reports
    only n = 0. Estimator: lc_win_rate is the unweighted mean of the win rates of the non-empty buckets
    (each length stratum counts equally, however many pairs it has; lc_buckets says how many entered). It
    is 0.0 when nothing was judged, as win_rate is. Also the mean answer length of each side in words.
    Names are flat, ready for MLflow: lc_win_rate, lc_buckets, lc_n, lc_errors,
    length/{bucket}/{n,win_rate,win_rate_ci_low,win_rate_ci_high}, length/policy_mean_words and
    length/reference_mean_words."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    buckets: dict[str, list[str]] = {name: [] for name in LENGTH_BUCKETS}
    words: dict[str, list[int]] = {"policy": [], "reference": []}
    errors = 0
    for row in rows:
        if row["verdict"] == ERROR:
            errors += 1
            continue
        buckets[length_bucket(row["policy"], row["reference"], threshold)].append(row["verdict"])
        words["policy"].append(len(row["policy"].split()))
        words["reference"].append(len(row["reference"].split()))
    out: dict[str, float] = {}
    rates = []
    for name, verdicts in buckets.items():
        out[f"length/{name}/n"] = float(len(verdicts))
        if verdicts:
            stats = win_rate(verdicts)
            rates.append(stats["win_rate"])
            out[f"length/{name}/win_rate"] = stats["win_rate"]
            out[f"length/{name}/win_rate_ci_low"] = stats["win_rate_ci_low"]
            out[f"length/{name}/win_rate_ci_high"] = stats["win_rate_ci_high"]
    judged = len(words["policy"])
    out["lc_win_rate"] = sum(rates) / len(rates) if rates else 0.0
    out["lc_buckets"] = float(len(rates))
    out["lc_n"] = float(judged)
    out["lc_errors"] = float(errors)
    for side, counts in words.items():
        out[f"length/{side}_mean_words"] = sum(counts) / judged if judged else 0.0
    return out
