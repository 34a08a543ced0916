"""scripts/frontier.py: the grid, a row read from a summary, and which points are on the frontier."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("frontier", ROOT / "scripts" / "frontier.py")
frontier = importlib.util.module_from_spec(spec)
spec.loader.exec_module(frontier)


def test_grid_is_the_product_of_the_axes() -> None:
    points = frontier.grid_points(["dpo.beta=0.1,0.3", "dpo.rpo_alpha=0,1"])
    assert points == [{"dpo.beta": "0.1", "dpo.rpo_alpha": "0"}, {"dpo.beta": "0.1", "dpo.rpo_alpha": "1"},
                      {"dpo.beta": "0.3", "dpo.rpo_alpha": "0"}, {"dpo.beta": "0.3", "dpo.rpo_alpha": "1"}]
    assert frontier.point_name(points[1]) == "dpo.beta-0.1_dpo.rpo_alpha-1"
    assert frontier.point_name({"orpo.optim.learning_rate": "1e-4"}) != frontier.point_name(
        {"dpo.optim.learning_rate": "1e-4"})
    assert frontier.point_name({}) == "preset"
    with_set = frontier.point_name(points[1], ["preference.method=orpo"])
    assert with_set.startswith("dpo.beta-0.1_dpo.rpo_alpha-1+") and with_set != frontier.point_name(
        points[1], ["preference.method=dpo"])
    assert frontier.point_name(points[1], config="a: 1") != frontier.point_name(points[1], config="a: 2")
    assert frontier.grid_points([]) == [{}]
    with pytest.raises(SystemExit, match="KEY=V1,V2"):
        frontier.grid_points(["dpo.beta"])


def summary(gain: float, drop: float) -> dict:
    return {"metrics": {"compare/win_rate": 0.6},
            "quality": {"passed_and_answered_rate_gain": gain, "policy": {"echo_rate": 0.0, "loop_rate": 0.1}},
            "benchmarks": {"main": {"gen": {"policy": 0.5 - drop, "reference": 0.5},
                                    "mc": {"policy": 0.6, "reference": 0.6}}},
            "gates": [{"name": "kl", "passed": False}, {"name": "win_rate", "passed": True}]}


def test_frontier_keeps_the_points_no_other_beats_on_gain_and_drop() -> None:
    """a: +20 for a 5-point drop; b: +10 for 1; c: +10 for 5 (worse than both: off); d: +25 for 8."""
    rows = [frontier.row(n, {}, summary(g, d), None) for n, g, d in
            [("a", 0.20, 0.05), ("b", 0.10, 0.01), ("c", 0.10, 0.05), ("d", 0.25, 0.08)]]
    assert rows[0]["max_drop"] == pytest.approx(0.05) and rows[0]["gates_failed"] == ["kl"]
    frontier.mark_frontier(rows)
    assert [r["frontier"] for r in rows] == [True, True, False, True]
    text = frontier.table(rows)
    assert "| a | +20.0 | +5.0 |" in text and text.count("| yes |") == 3
