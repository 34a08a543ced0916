"""Human win rates from arena votes: per ordered pair of models, wins / ties / losses with the win rate (ties,
"both bad" included, count half) and its Wilson 95 % interval (evaluation/stats.py), and how often each
annotator agrees with the others on the same comparison (same two models, same prompt)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from evaluation.stats import wilson_interval


def pair_stats(votes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, opponent), both orientations, sorted. Each vote needs left_model, right_model,
    choice (left | right | tie | both_bad)."""
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: {"wins": 0, "ties": 0, "both_bad": 0,
                                                                         "losses": 0})
    for v in votes:
        left, right = v["left_model"], v["right_model"]
        for model, opponent, side in ((left, right, "left"), (right, left, "right")):
            c = counts[(model, opponent)]
            if v["choice"] in ("tie", "both_bad"):
                c["ties" if v["choice"] == "tie" else "both_bad"] += 1
            elif v["choice"] == side:
                c["wins"] += 1
            else:
                c["losses"] += 1
    rows = []
    for (model, opponent), c in sorted(counts.items()):
        n = c["wins"] + c["ties"] + c["both_bad"] + c["losses"]
        rate = (c["wins"] + 0.5 * (c["ties"] + c["both_bad"])) / n if n else 0.0
        low, high = wilson_interval(rate, n)
        rows.append({"model": model, "opponent": opponent, **c, "n": n, "win_rate": rate, "ci_low": low,
                     "ci_high": high})
    return rows


def _outcome(v: Mapping[str, Any]) -> str:
    """What a vote says, independent of the side assignment: the preferred model, or 'tie'."""
    if v["choice"] == "left":
        return v["left_model"]
    if v["choice"] == "right":
        return v["right_model"]
    return "tie"


def annotator_agreement(votes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per annotator: votes cast, and over every other annotator's vote on the same comparison (the same two
    models and the same prompt), the share that agrees (same preferred model, or both a tie / both bad).
    `agreement` is None when nobody else judged any of the annotator's comparisons."""
    by_item: dict[str, list[tuple[str, str]]] = defaultdict(list)
    cast: dict[str, int] = defaultdict(int)
    for v in votes:
        key = json.dumps([sorted([v["left_model"], v["right_model"]]), v["prompt"]], sort_keys=True)
        by_item[key].append((v["annotator"], _outcome(v)))
        cast[v["annotator"]] += 1
    agree: dict[str, int] = defaultdict(int)
    compared: dict[str, int] = defaultdict(int)
    for judged in by_item.values():
        for i, (who, outcome) in enumerate(judged):
            for j, (other, other_outcome) in enumerate(judged):
                if i != j and other != who:
                    compared[who] += 1
                    agree[who] += outcome == other_outcome
    return [{"annotator": who, "votes": n, "compared": compared[who],
             "agreement": agree[who] / compared[who] if compared[who] else None} for who, n in sorted(cast.items())]


def version_tags(rows: list[dict[str, Any]], model: str, label: Any) -> dict[str, str]:
    """`human.*` tags for one model: per opponent (`human.vs.<label(opponent)>.*`) and over all opponents
    (`human.wins`, …, `human.win_rate`, `human.ci_low`, `human.ci_high`, `human.n`)."""
    tags: dict[str, str] = {}
    total = {"wins": 0, "ties": 0, "both_bad": 0, "losses": 0}
    for row in rows:
        if row["model"] != model:
            continue
        prefix = f"human.vs.{label(row['opponent'])}"
        for key in ("wins", "ties", "both_bad", "losses", "n"):
            tags[f"{prefix}.{key}"] = str(row[key])
        for key in ("win_rate", "ci_low", "ci_high"):
            tags[f"{prefix}.{key}"] = f"{row[key]:.4f}"
        for key in total:
            total[key] += row[key]
    n = sum(total.values())
    if n:
        rate = (total["wins"] + 0.5 * (total["ties"] + total["both_bad"])) / n
        low, high = wilson_interval(rate, n)
        tags.update({f"human.{k}": str(v) for k, v in total.items()})
        tags.update({"human.n": str(n), "human.win_rate": f"{rate:.4f}", "human.ci_low": f"{low:.4f}",
                     "human.ci_high": f"{high:.4f}"})
    return tags
