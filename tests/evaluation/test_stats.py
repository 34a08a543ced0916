"""Wilson intervals and win rates against hand-computed values (arithmetic in each docstring)."""

from __future__ import annotations

import math

import pytest

from evaluation.stats import Z_95, wilson_interval, win_rate


def test_z_is_the_two_sided_95_percent_quantile() -> None:
    assert Z_95 == pytest.approx(1.959964, abs=1e-6)


def test_wilson_half_at_n_100() -> None:
    """z^2 = 3.841459; denom = 1 + z^2/100 = 1.0384146; centre = (0.5 + 0.0192073) / denom = 0.5;
    half = z * sqrt(0.0025 + 3.841459/40000) / denom = 1.959964 * 0.0509513 / 1.0384146 = 0.0961685.
    -> (0.4038315, 0.5961685)."""
    low, high = wilson_interval(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-4)
    assert high == pytest.approx(0.5962, abs=1e-4)


def test_wilson_all_wins_at_n_10() -> None:
    """p = 1, n = 10: denom = 1.3841459; centre = (1 + 0.1920729) / denom = 0.8612336;
    half = z * sqrt(3.841459/400) / denom = 1.959964 * 0.0979982 / 1.3841459 = 0.1387664 -> low 0.7224672;
    high = centre + half = 1.0 (capped)."""
    low, high = wilson_interval(1.0, 10)
    assert low == pytest.approx(0.7225, abs=1e-4)
    assert high == pytest.approx(1.0, abs=1e-12)
    assert high <= 1.0


def test_wilson_is_symmetric_and_inside_unit_interval() -> None:
    """p = 0 mirrors p = 1: (0, 1 - 0.7224672)."""
    low, high = wilson_interval(0.0, 10)
    assert low == 0.0
    assert high == pytest.approx(1 - 0.7224672, abs=1e-6)
    for p in (0.0, 0.1, 0.37, 0.5, 0.9, 1.0):
        for n in (1, 7, 1000):
            lo, hi = wilson_interval(p, n)
            assert 0.0 <= lo <= p + 1e-12 and p - 1e-12 <= hi <= 1.0


def test_wilson_narrows_with_more_trials() -> None:
    widths = [hi - lo for lo, hi in (wilson_interval(0.6, n) for n in (10, 100, 1000))]
    assert widths[0] > widths[1] > widths[2]


def test_wilson_without_trials_is_uninformative() -> None:
    assert wilson_interval(0.5, 0) == (0.0, 1.0)


def test_win_rate_counts_ties_half() -> None:
    """2 wins, 1 tie, 1 loss: (2 + 0.5) / 4 = 0.625; interval is Wilson at p = 0.625, n = 4."""
    out = win_rate(["win", "tie", "loss", "win"])
    assert out["win_rate"] == pytest.approx(0.625)
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (2.0, 1.0, 1.0, 4.0)
    low, high = wilson_interval(0.625, 4)
    assert (out["win_rate_ci_low"], out["win_rate_ci_high"]) == pytest.approx((low, high))


def test_win_rate_all_ties_is_one_half() -> None:
    out = win_rate(iter(["tie"] * 100))  # any iterable
    assert out["win_rate"] == 0.5
    assert out["win_rate_ci_low"] == pytest.approx(0.4038, abs=1e-4)


def test_win_rate_of_nothing() -> None:
    out = win_rate([])
    assert out["win_rate"] == 0.0 and out["n"] == 0.0
    assert (out["win_rate_ci_low"], out["win_rate_ci_high"]) == (0.0, 1.0)
    assert all(math.isfinite(v) for v in out.values())
