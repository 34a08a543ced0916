"""Every plot writes a PNG from hand-made inputs, and returns None when there is nothing to plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.plots import (
    plot_benchmark_deltas,
    plot_curves,
    plot_length_view,
    plot_method_comparison,
    plot_reward_margins,
    plot_verdicts,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path | None) -> None:
    assert path is not None and path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000


def training_records(with_extras: bool = True) -> list[tuple[int | None, dict[str, float]]]:
    records: list[tuple[int | None, dict[str, float]]] = [(None, {"train_seconds": 3.0})]
    for step in range(1, 6):
        metrics = {"loss": 0.7 - 0.05 * step, "rewards/margins": 0.1 * step}
        if with_extras:
            metrics.update({"rewards/chosen": 0.05 * step, "rewards/rejected": -0.05 * step,
                            "rewards/accuracies": min(1.0, 0.5 + 0.1 * step)})
        records.append((step, metrics))
    return records


def test_existing_plots_still_write_pngs(tmp_path: Path) -> None:
    assert_png(plot_curves(training_records(), ["loss", "rewards/margins"], "DPO", tmp_path / "curves.png"))
    assert plot_curves([], ["loss"], "empty", tmp_path / "none.png") is None
    metrics = {"compare/wins": 12.0, "compare/ties": 3.0, "compare/losses": 5.0, "compare/win_rate": 0.675,
               "compare/win_rate_ci_low": 0.46, "compare/win_rate_ci_high": 0.84}
    assert_png(plot_verdicts(metrics, tmp_path / "verdicts.png"))


@pytest.mark.parametrize("with_extras", [True, False])
def test_reward_margins(tmp_path: Path, with_extras: bool) -> None:
    assert_png(plot_reward_margins(training_records(with_extras), tmp_path / "margins.png", title="DPO rewards"))


def test_reward_margins_with_prefix_and_empty(tmp_path: Path) -> None:
    evals = [(10, {"eval/rewards/margins": 0.3, "eval/rewards/accuracies": 0.7}),
             (20, {"eval/rewards/margins": 0.5, "eval/rewards/accuracies": 0.8})]
    assert_png(plot_reward_margins(evals, tmp_path / "eval.png", prefix="eval/"))
    assert plot_reward_margins([], tmp_path / "a.png") is None
    assert plot_reward_margins([(None, {"rewards/margins": 1.0})], tmp_path / "b.png") is None
    assert not (tmp_path / "a.png").exists()


def test_benchmark_deltas(tmp_path: Path) -> None:
    policy = {"alignflow_animal_mc": 0.81, "arc_easy": 0.42, "only_policy": 0.3}
    reference = {"alignflow_animal_mc": 0.74, "arc_easy": 0.45}
    assert_png(plot_benchmark_deltas(policy, reference, tmp_path / "bench.png"))
    assert plot_benchmark_deltas({}, {}, tmp_path / "none.png") is None


def test_length_view(tmp_path: Path) -> None:
    lc = {"lc_win_rate": 0.61}
    for bucket, rate, n in (("policy_shorter", 0.55, 20), ("similar", 0.62, 40), ("policy_longer", 0.7, 12)):
        lc.update({f"length/{bucket}/win_rate": rate, f"length/{bucket}/win_rate_ci_low": rate - 0.15,
                   f"length/{bucket}/win_rate_ci_high": rate + 0.12, f"length/{bucket}/n": float(n)})
    assert_png(plot_length_view(lc, tmp_path / "lc.png"))
    partial = {"length/similar/win_rate": 0.5}  # one bucket, no interval, no n
    assert_png(plot_length_view(partial, tmp_path / "partial.png"))
    assert plot_length_view({}, tmp_path / "none.png") is None
    assert plot_length_view({"lc_win_rate": 0.5}, tmp_path / "none.png") is None


def test_method_comparison(tmp_path: Path) -> None:
    rows = [
        {"variant": "dpo-beta0.1", "win_rate": 0.62, "win_rate_ci_low": 0.5, "win_rate_ci_high": 0.73,
         "reward_accuracy": 0.71, "best": True},
        {"variant": "dpo-beta0.5", "win_rate": 0.55, "win_rate_ci_low": 0.43, "win_rate_ci_high": 0.66,
         "reward_accuracy": 0.66, "best": False},
        {"variant": "orpo", "win_rate": 0.58, "win_rate_ci_low": 0.46, "win_rate_ci_high": 0.69,
         "reward_accuracy": None},
    ]
    assert_png(plot_method_comparison(rows, tmp_path / "methods.png"))
    assert plot_method_comparison([], tmp_path / "none.png") is None
