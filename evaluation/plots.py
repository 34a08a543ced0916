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


# ---------------------------------------------------------------------------- shared look

WIN, NEUTRAL, LOSS, POLICY, REFERENCE, BEST = "#2a9d8f", "#adb5bd", "#e76f51", "#264653", "#adb5bd", "#e9c46a"
LENGTH_BUCKETS = ("policy_shorter", "similar", "policy_longer")


def save(fig: plt.Figure, path: Path) -> Path:
    """Write a figure as PNG (creating the folder) and free it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ci_errors(rates: list[float], lows: list[float], highs: list[float]) -> list[list[float]]:
    """Asymmetric error-bar lengths [[below...], [above...]] from interval bounds (never negative)."""
    return [[max(0.0, r - lo) for r, lo in zip(rates, lows, strict=True)],
            [max(0.0, hi - r) for r, hi in zip(rates, highs, strict=True)]]


def series(records: Curve, name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric over the records that carry it and a step."""
    points = [(s, m[name]) for s, m in records if name in m and s is not None]
    return [s for s, _ in points], [v for _, v in points]


# ---------------------------------------------------------------------------- training: reward margins


def plot_reward_margins(records: Curve, path: Path, title: str = "implicit rewards", *,
                        prefix: str = "") -> Path | None:
    """DPO/ORPO implicit rewards over steps: chosen and rejected rewards on one panel, their margin on a
    second, and the reward accuracy on a third when logged. `prefix` selects e.g. "eval/" records.
    Returns None when no `rewards/margins` value with a step is present."""
    margin_steps, margins = series(records, f"{prefix}rewards/margins")
    if not margins:
        return None
    chosen, rejected = series(records, f"{prefix}rewards/chosen"), series(records, f"{prefix}rewards/rejected")
    accuracy = series(records, f"{prefix}rewards/accuracies")
    panels = ["margins"] + (["chosen/rejected"] if chosen[1] or rejected[1] else []) + (
        ["accuracies"] if accuracy[1] else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    axes_by_name = dict(zip(panels, axes[0], strict=True))
    ax = axes_by_name["margins"]
    ax.plot(margin_steps, margins, marker=".", linewidth=1.2, color=POLICY)
    ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.5)
    ax.set_title("reward margin (chosen − rejected)", fontsize=10)
    if "chosen/rejected" in axes_by_name:
        ax = axes_by_name["chosen/rejected"]
        for (steps, values), label, color in ((chosen, "chosen", WIN), (rejected, "rejected", LOSS)):
            if values:
                ax.plot(steps, values, marker=".", linewidth=1.2, color=color, label=label)
        ax.axhline(0.0, color="black", linewidth=0.6, alpha=0.5)
        ax.legend(fontsize=8)
        ax.set_title("rewards", fontsize=10)
    if "accuracies" in axes_by_name:
        ax = axes_by_name["accuracies"]
        ax.plot(*accuracy, marker=".", linewidth=1.2, color="#8856a7")
        ax.axhline(0.5, color="black", linewidth=0.6, linestyle="--", alpha=0.5)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("reward accuracy", fontsize=10)
    for ax in axes[0]:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)


# ---------------------------------------------------------------------------- benchmarks


def plot_benchmark_deltas(policy: dict[str, float], reference: dict[str, float], path: Path) -> Path | None:
    """Per-task main metric of the policy beside the reference (grouped bars), the delta written above
    each pair. Tasks in either dict are shown; None when there are none."""
    tasks = sorted(set(policy) | set(reference))
    if not tasks:
        return None
    xs = list(range(len(tasks)))
    width = 0.38
    pol = [policy.get(t, float("nan")) for t in tasks]
    ref = [reference.get(t, float("nan")) for t in tasks]
    fig, ax = plt.subplots(figsize=(max(4.2, 1.5 * len(tasks) + 1.5), 3.6))
    ax.bar([x - width / 2 for x in xs], ref, width, label="reference", color=REFERENCE)
    ax.bar([x + width / 2 for x in xs], pol, width, label="policy", color=POLICY)
    top = max([v for v in pol + ref if v == v] or [1.0])
    for x, p, r in zip(xs, pol, ref, strict=True):
        if p == p and r == r:  # both present (NaN != NaN)
            delta = p - r
            ax.annotate(f"{delta:+.3f}", (x, max(p, r)), xytext=(0, 3), textcoords="offset points",
                        ha="center", fontsize=8, color=WIN if delta > 0 else LOSS if delta < 0 else "black")
    ax.set_xticks(xs)
    ax.set_xticklabels(tasks, rotation=20 if len(tasks) > 2 else 0, ha="right" if len(tasks) > 2 else "center",
                       fontsize=8)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.set_ylabel("main metric")
    ax.set_title("benchmarks: policy vs reference", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


# ---------------------------------------------------------------------------- length-controlled view


def plot_length_view(lc: dict[str, float], path: Path) -> Path | None:
    """Win rate per length bucket (policy shorter / similar / longer than the reference) with its 95 %
    interval and n under each bar; buckets without a win rate are left out, None when none has one."""
    buckets = [b for b in LENGTH_BUCKETS if f"length/{b}/win_rate" in lc]
    buckets += sorted({k.split("/")[1] for k in lc if k.startswith("length/") and k.endswith("/win_rate")}
                      - set(buckets))
    if not buckets:
        return None
    rates = [lc[f"length/{b}/win_rate"] for b in buckets]
    lows = [lc.get(f"length/{b}/win_rate_ci_low", r) for b, r in zip(buckets, rates, strict=True)]
    highs = [lc.get(f"length/{b}/win_rate_ci_high", r) for b, r in zip(buckets, rates, strict=True)]
    fig, ax = plt.subplots(figsize=(max(4.2, 1.6 * len(buckets) + 1.0), 3.4))
    ax.bar(buckets, rates, yerr=ci_errors(rates, lows, highs), capsize=5,
           color=[WIN if r >= 0.5 else LOSS for r in rates])
    ax.axhline(0.5, color="black", linewidth=0.7, linestyle="--", alpha=0.6)
    labels = [f"{b.replace('_', ' ')}\nn={int(lc[f'length/{b}/n'])}" if f"length/{b}/n" in lc
              else b.replace("_", " ") for b in buckets]
    ax.set_xticks(range(len(buckets)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("win rate")
    title = "win rate by response length"
    if "lc_win_rate" in lc:
        title += f" (length-controlled {lc['lc_win_rate']:.3f})"
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


# ---------------------------------------------------------------------------- variants side by side


def plot_method_comparison(rows: list[dict], path: Path) -> Path | None:
    """One bar per variant: win rate with its Wilson interval, and reward accuracy on a second panel
    (variants without one are left blank). The best variant (row["best"]) is drawn in gold with a
    bold label. None for no rows."""
    if not rows:
        return None
    names = [str(r.get("variant", i)) for i, r in enumerate(rows)]
    best = [bool(r.get("best")) for r in rows]
    rates = [float(r.get("win_rate") or 0.0) for r in rows]
    lows = [float(r["win_rate_ci_low"]) if r.get("win_rate_ci_low") is not None else rate
            for r, rate in zip(rows, rates, strict=True)]
    highs = [float(r["win_rate_ci_high"]) if r.get("win_rate_ci_high") is not None else rate
             for r, rate in zip(rows, rates, strict=True)]
    colors = [BEST if b else POLICY for b in best]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 1.4 * len(rows) * 2 + 2.0), 3.6))
    ax = axes[0]
    ax.bar(names, rates, yerr=ci_errors(rates, lows, highs), capsize=5, color=colors, edgecolor="black",
           linewidth=[1.6 if b else 0.0 for b in best])
    ax.axhline(0.5, color="black", linewidth=0.7, linestyle="--", alpha=0.6)
    ax.set_ylim(0, 1.05)
    ax.set_title("win rate vs reference (95 % Wilson CI)", fontsize=10)
    ax = axes[1]
    accuracies = [r.get("reward_accuracy") for r in rows]
    ax.bar(names, [float(a) if a is not None else 0.0 for a in accuracies], color=colors, edgecolor="black",
           linewidth=[1.6 if b else 0.0 for b in best])
    for i, a in enumerate(accuracies):
        if a is None:
            ax.annotate("n/a", (i, 0.0), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    ax.axhline(0.5, color="black", linewidth=0.7, linestyle="--", alpha=0.6)
    ax.set_ylim(0, 1.05)
    ax.set_title("held-out reward accuracy", fontsize=10)
    for ax in axes:
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=20 if len(names) > 3 else 0, fontsize=8,
                           ha="right" if len(names) > 3 else "center")
        for label, b in zip(ax.get_xticklabels(), best, strict=True):
            if b:
                label.set_fontweight("bold")
        ax.grid(axis="y", alpha=0.3)
    return save(fig, path)


def plot_rounds(rows: list[dict], path: Path, start_benchmarks: dict[str, float] | None = None) -> Path | None:
    """Iterated on-policy rounds, one panel each for compliance, capability and distance, x = r being round r's
    policy and x = 0 the original model: the held-out criterion (pass rate - degenerate rate) of its samples
    (the last policy's is not measured: no round samples it); each benchmark's headline value; the KL of each
    round's saved policy from its reference. A dropped round is drawn hollow; a panel with nothing measured is
    left out."""
    measured = [r for r in rows if r.get("start_score") is not None]
    tasks = sorted({t for r in rows for t in (r.get("benchmarks") or {})})
    kls = [(r["round"], r["kl"], r["kept"]) for r in rows if r.get("kl") is not None]
    panels = [name for name, present in (("compliance", measured), ("capability", tasks), ("distance", kls))
              if present]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.3), squeeze=False)
    xs = [0] + [r["round"] for r in rows]
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "compliance":  # round 1's start is the original model (x = 0); round r's policy at x = r
            points = [(0, measured[0]["start_score"], True)] if measured[0]["round"] == 1 else []
            points += [(r["round"], r["end_score"], r["kept"]) for r in rows if r.get("end_score") is not None]
            _points(ax, points, "held-out samples")
            ax.set_ylabel("held-out pass rate - degenerate rate")
        elif panel == "capability":
            for n, task in enumerate(tasks):
                color = plt.cm.tab10(n)
                points = [(r["round"], r["benchmarks"][task], r["kept"]) for r in rows
                          if task in (r.get("benchmarks") or {})]
                if start_benchmarks and task in start_benchmarks:
                    points = [(0, start_benchmarks[task], True), *points]
                _points(ax, points, task, color=color)
            ax.set_ylabel("benchmark headline value")
        else:
            _points(ax, kls, "saved policy")
            ax.set_ylabel("KL(policy || its reference), nats")
        ax.set_xticks(xs)
        ax.set_xlabel("round (0: original model)")
        ax.set_title(panel, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("on-policy rounds (hollow: dropped)", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def _points(ax: plt.Axes, points: list[tuple[int, float, bool]], label: str, color: str | None = None) -> None:
    """A line through (x, y) points, each drawn filled when kept, hollow when not."""
    color = color or POLICY
    if not points:
        return
    ax.plot([x for x, _, _ in points], [y for _, y, _ in points], "-", color=color, label=label)
    for x, y, kept in points:
        ax.plot([x], [y], "o", color=color, markerfacecolor=color if kept else "white")
