"""Wilson intervals and win rates against hand-computed values (arithmetic in each docstring)."""

from __future__ import annotations

import math

import pytest

from evaluation.stats import Z_95, length_bucket, length_controlled, wilson_interval, win_rate


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


def test_win_rate_leaves_errors_out() -> None:
    """win, error, loss, tie, error: judged n = 3, (1 + 0.5) / 3 = 0.5; errors = 2."""
    out = win_rate(["win", "error", "loss", "tie", "error"])
    assert out["win_rate"] == pytest.approx(0.5)
    assert (out["wins"], out["ties"], out["losses"], out["n"], out["errors"]) == (1.0, 1.0, 1.0, 3.0, 2.0)
    assert (out["win_rate_ci_low"], out["win_rate_ci_high"]) == pytest.approx(wilson_interval(0.5, 3))
    assert win_rate(["win", "tie"])["errors"] == 0.0


def test_win_rate_of_only_errors_is_uninformative() -> None:
    out = win_rate(["error", "error"])
    assert (out["win_rate"], out["n"], out["errors"]) == (0.0, 0.0, 2.0)
    assert (out["win_rate_ci_low"], out["win_rate_ci_high"]) == (0.0, 1.0)


def test_win_rate_refuses_unknown_verdicts() -> None:
    with pytest.raises(ValueError, match="unknown verdicts \\['draw'\\]"):
        win_rate(["win", "draw"])


def words(n: int) -> str:
    return " ".join(["w"] * n)


@pytest.mark.parametrize(("policy", "reference", "bucket"), [
    (5, 5, "similar"),  # d = 0
    (10, 9, "similar"),  # d = 1/10 = 0.1, at the threshold
    (9, 10, "similar"),  # d = -0.1
    (11, 9, "policy_longer"),  # d = 2/11 = 0.18
    (10, 5, "policy_longer"),  # d = 5/10
    (1, 2, "policy_shorter"),  # d = -1/2
    (0, 3, "policy_shorter"),  # d = -3/3
    (0, 0, "similar"),  # both empty: d = 0
])
def test_length_bucket(policy: int, reference: int, bucket: str) -> None:
    assert length_bucket(words(policy), words(reference)) == bucket


def test_length_bucket_counts_whitespace_separated_words() -> None:
    assert length_bucket("The cow  says\nmoo.", "Sorry, I do not know.") == "policy_shorter"  # 4 vs 5 words
    assert length_bucket(words(10), words(9), threshold=0.0) == "policy_longer"


LC_ROWS = [  # (policy words, reference words, verdict): bucket by d = (w_p - w_r) / max(w_p, w_r)
    (5, 5, "win"),  # d = 0: similar
    (10, 5, "win"),  # 0.5: longer
    (10, 9, "tie"),  # 0.1: similar
    (1, 2, "loss"),  # -0.5: shorter
    (2, 4, "tie"),  # -0.5: shorter
    (10, 2, "win"),  # 0.8: longer
    (1, 3, "error"),  # left out
    (3, 1, "loss"),  # 0.67: longer
]


def test_length_controlled_by_hand() -> None:
    """similar: win, tie -> 0.75 (n 2); longer: win, win, loss -> 2/3 (n 3); shorter: loss, tie -> 0.25 (n 2).
    lc_win_rate = (0.75 + 2/3 + 0.25) / 3 = 5/9 = 0.5556 (the plain win rate would be (3 + 1) / 7 = 0.5714).
    Mean words over the 7 judged rows: policy 41 / 7, reference 28 / 7 = 4."""
    rows = [{"policy": words(p), "reference": words(r), "verdict": v} for p, r, v in LC_ROWS]
    out = length_controlled(rows)
    assert out["lc_win_rate"] == pytest.approx(5 / 9)
    assert (out["lc_buckets"], out["lc_n"], out["lc_errors"]) == (3.0, 7.0, 1.0)
    for bucket, n, rate in (("similar", 2, 0.75), ("policy_longer", 3, 2 / 3), ("policy_shorter", 2, 0.25)):
        assert out[f"length/{bucket}/n"] == n
        assert out[f"length/{bucket}/win_rate"] == pytest.approx(rate)
        low, high = wilson_interval(rate, n)
        interval = (out[f"length/{bucket}/win_rate_ci_low"], out[f"length/{bucket}/win_rate_ci_high"])
        assert interval == pytest.approx((low, high))
    assert out["length/policy_mean_words"] == pytest.approx(41 / 7)
    assert out["length/reference_mean_words"] == pytest.approx(4.0)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())


def test_length_control_discounts_a_taste_for_long_answers() -> None:
    """8 longer answers all win, 2 similar ones both lose: plain win rate 8 / 10 = 0.8, but the
    length-controlled rate is (1.0 + 0.0) / 2 = 0.5. The empty bucket reports only n = 0."""
    rows = [{"policy": words(20), "reference": words(10), "verdict": "win"}] * 8 + \
           [{"policy": words(10), "reference": words(10), "verdict": "loss"}] * 2
    out = length_controlled(rows)
    assert win_rate(r["verdict"] for r in rows)["win_rate"] == pytest.approx(0.8)
    assert out["lc_win_rate"] == pytest.approx(0.5) and out["lc_buckets"] == 2.0
    assert out["length/policy_shorter/n"] == 0.0
    assert not any(k.startswith("length/policy_shorter/") and k != "length/policy_shorter/n" for k in out)


def test_length_controlled_of_nothing() -> None:
    out = length_controlled([])
    assert (out["lc_win_rate"], out["lc_buckets"], out["lc_n"], out["lc_errors"]) == (0.0, 0.0, 0.0, 0.0)
    assert all(math.isfinite(v) for v in out.values())
    only_errors = length_controlled([{"policy": "a", "reference": "b", "verdict": "error"}])
    assert (only_errors["lc_n"], only_errors["lc_errors"]) == (0.0, 1.0)
    with pytest.raises(ValueError, match="threshold"):
        length_controlled([], threshold=1.0)
