"""PNG plots of training curves and comparison results (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

Curve = list[tuple[int | None, dict[str, float]]]


def plot_curves(records: Curve, names: list[str], title: str, path: Path) -> Path | None:
    """One panel per metric name present in `records` (step on x). Returns None if nothing to plot."""
    present = [n for n in names if any(n in m for _, m in records)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.2), squeeze=False)
    for ax, name in zip(axes[0], present, strict=True):
        points = [(s, m[name]) for s, m in records if name in m and s is not None]
        ax.plot([s for s, _ in points], [v for _, v in points], marker=".", linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_verdicts(metrics: dict[str, float], path: Path) -> Path:
    """Win / tie / loss bars of the policy against the reference."""
    labels = ["wins", "ties", "losses"]
    values = [metrics.get(f"compare/{k}", 0.0) for k in labels]
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    ax.bar(labels, values, color=["#2a9d8f", "#adb5bd", "#e76f51"])
    rate = metrics.get("compare/win_rate", 0.0)
    low, high = metrics.get("compare/win_rate_ci_low", 0.0), metrics.get("compare/win_rate_ci_high", 0.0)
    ax.set_title(f"policy vs reference: win rate {rate:.2f} [{low:.2f}, {high:.2f}]", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
