"""The data report: row counts, drops by reason with examples, length statistics and histograms.

Lengths are in tokens when a tokenizer was used (before truncation, so the plots show what the limits
cut), else in characters of message content. Lengths are kept as compact integer arrays, so a report
over millions of rows stays small; nothing here holds the records themselves.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

LENGTH_FIELDS = ("prompt", "chosen", "rejected")
SFT_FIELD = "sft"
PERCENTILES = (50, 90, 99)


class LengthCollector:
    """Collect per-field lengths (prompt, chosen, rejected, sft) as unsigned integer arrays."""

    def __init__(self) -> None:
        self.lengths: dict[str, array[int]] = {}

    def add(self, name: str, value: int) -> None:
        self.lengths.setdefault(name, array("L")).append(int(value))

    def extend(self, name: str, values: Iterable[int]) -> None:
        self.lengths.setdefault(name, array("L")).extend(int(v) for v in values)

    def add_record_chars(self, record: Mapping[str, Any]) -> None:
        """Character lengths of one canonical record (preference or SFT)."""
        if "messages" in record:
            self.add(SFT_FIELD, _chars(record["messages"]))
            return
        if "completion" in record:  # an unpaired example
            self.add("prompt", _chars(record["prompt"]))
            self.add("completion", _chars(record["completion"]))
            return
        for name in LENGTH_FIELDS:
            self.add(name, _chars(record[name]))

    def summary(self) -> dict[str, dict[str, float]]:
        return {name: summarise(values) for name, values in self.lengths.items()}


def _chars(messages: Sequence[Mapping[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def summarise(values: Sequence[int]) -> dict[str, float]:
    """count, min, mean, p50 (also as median), p90, p99, max; {} for no values."""
    if not values:
        return {}
    ordered = sorted(values)
    stats: dict[str, float] = {"count": len(ordered), "min": ordered[0], "mean": sum(ordered) / len(ordered)}
    for pct in PERCENTILES:
        stats[f"p{pct}"] = _percentile(ordered, pct)
    stats["median"] = stats["p50"]
    stats["max"] = ordered[-1]
    return stats


def _percentile(ordered: Sequence[int], pct: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def plot_lengths(lengths: Mapping[str, Sequence[int]], unit: str, path: str | Path,
                 limits: Mapping[str, int] | None = None, title: str = "") -> Path:
    """One histogram per field (prompt, chosen, rejected, sft) in a row; a dashed line at each limit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in (*LENGTH_FIELDS, SFT_FIELD) if lengths.get(n)]
    names = names or ["(no rows)"]
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        values = lengths.get(name) or []
        if values:
            ax.hist(values, bins=min(50, max(5, int(math.sqrt(len(values))))), color="#4477aa")
            limit = (limits or {}).get(name)
            if limit:
                ax.axvline(limit, color="#cc3311", linestyle="--", label=f"limit {limit}")
                ax.legend(fontsize=8)
            stats = summarise(values)
            ax.set_title(f"{name}: median {stats['p50']:.0f}, p90 {stats['p90']:.0f}", fontsize=9)
        ax.set_xlabel(unit)
        ax.set_ylabel("rows")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=100)
    plt.close(fig)
    return target


def format_text(report: Mapping[str, Any]) -> str:
    """A human-readable summary of a report (what `alignflow data inspect|prepare` prints)."""
    lines = []
    sources = report.get("sources", {})
    for split, info in report.get("drops", {}).items():
        lines.append(f"{split}: {sources.get(split, '?')}")
        for file, fmt in info.get("formats", {}).items():
            lines.append(f"  format: {fmt}  ({file})")
        lines.append(f"  rows: {info.get('rows_read', 0)} read, {info.get('rows_kept', 0)} kept, "
                     f"{info.get('rows_dropped', 0)} dropped")
        lines += _drop_lines(info)
    for split, info in report.get("tokenized", {}).get("drops", {}).items():
        if info.get("rows_dropped"):
            lines.append(f"{split} after tokenization: {info['rows_dropped']} dropped")
            lines += _drop_lines(info)
    if "counts" in report:
        lines.append("rows per split: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()))
    unit = report.get("length_unit", "characters")
    for name, stats in report.get("lengths", {}).items():
        if stats:
            lines.append(f"length of {name} ({unit}): min {stats['min']:.0f}, median {stats['p50']:.0f}, "
                         f"p90 {stats['p90']:.0f}, p99 {stats['p99']:.0f}, max {stats['max']:.0f}, "
                         f"mean {stats['mean']:.1f}")
    return "\n".join(lines)


def _drop_lines(info: Mapping[str, Any]) -> list[str]:
    lines = []
    for reason, count in info.get("counts", {}).items():
        lines.append(f"  dropped {reason}: {count}")
        for example in info.get("examples", {}).get(reason, []):
            where = f"{example['file']} row {example['row']}" + (
                f", field '{example['field']}'" if example.get("field") else "")
            lines.append(f"    e.g. {where}: {example['message']}")
    return lines
