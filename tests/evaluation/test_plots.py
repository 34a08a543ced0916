"""Every plot draws what its inputs say, from hand-made inputs, and returns None when there is nothing to plot.

Each test checks the figure's data (line points, bar heights, tick labels, titles, annotations), captured by
keeping `plt.close` from freeing the figure, and the PNG itself (read back with PIL): the figure's size at
110 dpi and not a blank canvas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer
from matplotlib.figure import Figure
from numpy.testing import assert_allclose
from PIL import Image

from evaluation import plots
from evaluation.plots import (
    plot_benchmark_deltas,
    plot_curves,
    plot_length_view,
    plot_method_comparison,
    plot_reward_margins,
    plot_verdicts,
)

DPI = 110  # what evaluation.plots saves with


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Figure]]:
    """The figures the plot functions close, in order, kept open for inspection (closed at teardown)."""
    kept: list[Figure] = []
    close = plt.close
    monkeypatch.setattr(plots.plt, "close", kept.append)
    yield kept
    for fig in kept:
        close(fig)


def read_png(path: Path | None, fig: Figure) -> np.ndarray:
    """The PNG's RGB pixels (H, W, 3) as uint8, after checking it has the figure's size and is not blank."""
    assert path is not None and path.is_file()
    with Image.open(path) as img:
        assert img.format == "PNG"
        width, height = fig.get_size_inches() * DPI
        assert img.size == (round(width), round(height))
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10.0  # not one flat colour
    assert (pixels.min(axis=2) < 200).mean() > 0.01  # some ink, not a white page
    return pixels


def count_colour(pixels: np.ndarray, colour: str) -> int:
    """Pixels of exactly `colour` (bar interiors are drawn flat, without anti-aliasing)."""
    rgb = np.array([round(255 * c) for c in to_rgb(colour)], dtype=np.uint8)
    return int((pixels == rgb).all(axis=2).sum())


def bar_groups(ax: Axes) -> list[BarContainer]:
    """The axes' bar containers, in drawing order (an error-bar container, where there is one, is not one)."""
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def bar_heights(ax: Axes) -> list[float]:
    return [p.get_height() for group in bar_groups(ax) for p in group.patches]


def bar_colours(ax: Axes) -> list[tuple[float, float, float]]:
    return [tuple(p.get_facecolor()[:3]) for group in bar_groups(ax) for p in group.patches]


def tick_labels(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def annotations(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def line_points(ax: Axes) -> list[tuple[list[float], list[float]]]:
    """(x, y) of every plotted line except the horizontal reference lines (axhline spans the axes)."""
    return [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
            if list(line.get_xdata()) != [0, 1]]


def error_bar_ranges(ax: Axes) -> np.ndarray:
    """(bars, 2): bottom and top of each error bar of the axes' first bar group."""
    segments = bar_groups(ax)[0].errorbar.lines[2][0].get_segments()  # one [(x, bottom), (x, top)] per bar
    return np.array([(seg[0][1], seg[1][1]) for seg in segments])


def training_records(with_extras: bool = True) -> list[tuple[int | None, dict[str, float]]]:
    records: list[tuple[int | None, dict[str, float]]] = [(None, {"train_seconds": 3.0})]
    for step in range(1, 6):
        metrics = {"loss": 0.7 - 0.05 * step, "rewards/margins": 0.1 * step}
        if with_extras:
            metrics.update({"rewards/chosen": 0.05 * step, "rewards/rejected": -0.05 * step,
                            "rewards/accuracies": min(1.0, 0.5 + 0.1 * step)})
        records.append((step, metrics))
    return records


STEPS = [1, 2, 3, 4, 5]  # the step-less record (train_seconds) is not plotted


def test_curves_one_panel_per_present_metric(tmp_path: Path, figures: list[Figure]) -> None:
    path = plot_curves(training_records(), ["loss", "missing", "rewards/margins"], "DPO", tmp_path / "curves.png")
    [fig] = figures
    read_png(path, fig)
    assert fig.get_suptitle() == "DPO"
    loss_ax, margin_ax = fig.axes
    assert loss_ax.get_title() == "loss" and margin_ax.get_title() == "rewards/margins"
    [(xs, ys)] = line_points(loss_ax)
    assert xs == STEPS and ys == pytest.approx([0.65, 0.6, 0.55, 0.5, 0.45])
    [(xs, ys)] = line_points(margin_ax)
    assert xs == STEPS and ys == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert plot_curves([], ["loss"], "empty", tmp_path / "none.png") is None
    assert plot_curves(training_records(), ["missing"], "absent", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists() and len(figures) == 1


def test_verdicts_bars_and_title(tmp_path: Path, figures: list[Figure]) -> None:
    """12 wins, 3 ties, 5 losses: equal-width bars, so the flat-coloured areas are in the ratio 12 : 3 : 5
    (up to the bars' edge pixels)."""
    metrics = {"compare/wins": 12.0, "compare/ties": 3.0, "compare/losses": 5.0, "compare/win_rate": 0.675,
               "compare/win_rate_ci_low": 0.46, "compare/win_rate_ci_high": 0.84}
    path = plot_verdicts(metrics, tmp_path / "verdicts.png")
    [fig] = figures
    pixels = read_png(path, fig)
    [ax] = fig.axes
    assert tick_labels(ax) == ["wins", "ties", "losses"]
    assert bar_heights(ax) == [12.0, 3.0, 5.0]
    assert ax.get_title() == "policy vs reference: win rate 0.68 [0.46, 0.84]"
    wins, ties, losses = (count_colour(pixels, c) for c in (plots.WIN, plots.NEUTRAL, plots.LOSS))
    assert losses > 1000
    assert wins / losses == pytest.approx(12 / 5, rel=0.05)
    assert ties / losses == pytest.approx(3 / 5, rel=0.05)


@pytest.mark.parametrize("with_extras", [True, False])
def test_reward_margins(tmp_path: Path, figures: list[Figure], with_extras: bool) -> None:
    path = plot_reward_margins(training_records(with_extras), tmp_path / "margins.png", title="DPO rewards")
    [fig] = figures
    read_png(path, fig)
    assert fig.get_suptitle() == "DPO rewards"
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == (["reward margin (chosen − rejected)", "rewards", "reward accuracy"] if with_extras
                      else ["reward margin (chosen − rejected)"])
    [(xs, ys)] = line_points(fig.axes[0])
    assert xs == STEPS and ys == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    if with_extras:
        (_, chosen), (_, rejected) = line_points(fig.axes[1])
        assert chosen == pytest.approx([0.05, 0.1, 0.15, 0.2, 0.25])
        assert rejected == pytest.approx([-0.05, -0.1, -0.15, -0.2, -0.25])
        assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["chosen", "rejected"]
        [(_, accuracy)] = line_points(fig.axes[2])
        assert accuracy == pytest.approx([0.6, 0.7, 0.8, 0.9, 1.0])


def test_reward_margins_with_prefix_and_empty(tmp_path: Path, figures: list[Figure]) -> None:
    evals = [(10, {"eval/rewards/margins": 0.3, "eval/rewards/accuracies": 0.7, "rewards/margins": 9.0}),
             (20, {"eval/rewards/margins": 0.5, "eval/rewards/accuracies": 0.8})]
    path = plot_reward_margins(evals, tmp_path / "eval.png", prefix="eval/")
    [fig] = figures
    read_png(path, fig)
    margins_ax, accuracy_ax = fig.axes  # no chosen/rejected logged: no rewards panel
    assert line_points(margins_ax) == [([10, 20], [0.3, 0.5])]  # the eval/ values, not the training 9.0
    assert line_points(accuracy_ax) == [([10, 20], [0.7, 0.8])]
    assert plot_reward_margins([], tmp_path / "a.png") is None
    assert plot_reward_margins([(None, {"rewards/margins": 1.0})], tmp_path / "b.png") is None
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists() and len(figures) == 1


def test_benchmark_deltas(tmp_path: Path, figures: list[Figure]) -> None:
    """Tasks sorted; a task only the policy has gets a policy bar, a missing (NaN) reference bar and no
    delta; deltas 0.81 - 0.74 = +0.070 and 0.42 - 0.45 = -0.030."""
    policy = {"alignflow_animal_mc": 0.81, "arc_easy": 0.42, "only_policy": 0.3}
    reference = {"alignflow_animal_mc": 0.74, "arc_easy": 0.45}
    path = plot_benchmark_deltas(policy, reference, tmp_path / "bench.png")
    [fig] = figures
    read_png(path, fig)
    [ax] = fig.axes
    assert tick_labels(ax) == ["alignflow_animal_mc", "arc_easy", "only_policy"]
    ref_bars, policy_bars = bar_groups(ax)
    assert [p.get_height() for p in policy_bars.patches] == [0.81, 0.42, 0.3]
    ref_heights = [p.get_height() for p in ref_bars.patches]
    assert ref_heights[:2] == [0.74, 0.45] and np.isnan(ref_heights[2])
    assert annotations(ax) == ["+0.070", "-0.030"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reference", "policy"]
    assert ax.get_ylim()[1] == pytest.approx(0.81 * 1.15)
    assert plot_benchmark_deltas({}, {}, tmp_path / "none.png") is None


def test_length_view(tmp_path: Path, figures: list[Figure]) -> None:
    lc = {"lc_win_rate": 0.61}
    for bucket, rate, n in (("policy_shorter", 0.45, 20), ("similar", 0.62, 40), ("policy_longer", 0.7, 12)):
        lc.update({f"length/{bucket}/win_rate": rate, f"length/{bucket}/win_rate_ci_low": rate - 0.15,
                   f"length/{bucket}/win_rate_ci_high": rate + 0.12, f"length/{bucket}/n": float(n)})
    path = plot_length_view(lc, tmp_path / "lc.png")
    fig = figures[-1]
    read_png(path, fig)
    [ax] = fig.axes
    assert tick_labels(ax) == ["policy shorter\nn=20", "similar\nn=40", "policy longer\nn=12"]
    assert bar_heights(ax) == [0.45, 0.62, 0.7]
    assert bar_colours(ax) == [
        to_rgb(plots.LOSS), to_rgb(plots.WIN), to_rgb(plots.WIN)]  # below 0.5 drawn as a loss
    assert_allclose(error_bar_ranges(ax), [(0.30, 0.57), (0.47, 0.74), (0.55, 0.82)])
    assert ax.get_title() == "win rate by response length (length-controlled 0.610)"

    partial = {"length/similar/win_rate": 0.5}  # one bucket, no interval, no n
    path = plot_length_view(partial, tmp_path / "partial.png")
    fig = figures[-1]
    read_png(path, fig)
    [ax] = fig.axes
    assert tick_labels(ax) == ["similar"] and bar_heights(ax) == [0.5]
    assert_allclose(error_bar_ranges(ax), [(0.5, 0.5)])
    assert ax.get_title() == "win rate by response length"
    assert plot_length_view({}, tmp_path / "none.png") is None
    assert plot_length_view({"lc_win_rate": 0.5}, tmp_path / "none.png") is None
    assert len(figures) == 2


def test_method_comparison(tmp_path: Path, figures: list[Figure]) -> None:
    rows = [
        {"variant": "dpo-beta0.1", "win_rate": 0.62, "win_rate_ci_low": 0.5, "win_rate_ci_high": 0.73,
         "reward_accuracy": 0.71, "best": True},
        {"variant": "dpo-beta0.5", "win_rate": 0.55, "win_rate_ci_low": 0.43, "win_rate_ci_high": 0.66,
         "reward_accuracy": 0.66, "best": False},
        {"variant": "orpo", "win_rate": 0.58, "win_rate_ci_low": 0.46, "win_rate_ci_high": 0.69,
         "reward_accuracy": None},
    ]
    path = plot_method_comparison(rows, tmp_path / "methods.png")
    [fig] = figures
    pixels = read_png(path, fig)
    win_ax, accuracy_ax = fig.axes
    for ax in (win_ax, accuracy_ax):
        assert tick_labels(ax) == ["dpo-beta0.1", "dpo-beta0.5", "orpo"]
        assert [t.get_fontweight() for t in ax.get_xticklabels()] == ["bold", "normal", "normal"]
        assert bar_colours(ax) == [
            to_rgb(plots.BEST), to_rgb(plots.POLICY), to_rgb(plots.POLICY)]
    assert bar_heights(win_ax) == [0.62, 0.55, 0.58]
    assert_allclose(error_bar_ranges(win_ax), [(0.5, 0.73), (0.43, 0.66), (0.46, 0.69)])
    assert bar_heights(accuracy_ax) == [0.71, 0.66, 0.0]
    assert annotations(accuracy_ax) == ["n/a"] and annotations(win_ax) == []
    assert count_colour(pixels, plots.BEST) > 500  # the best variant's gold bars are drawn
    assert plot_method_comparison([], tmp_path / "none.png") is None
