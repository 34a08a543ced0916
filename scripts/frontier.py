"""The alignment frontier: how much instruction following a preset buys against how much general ability it
costs, over a grid of settings (beta, learning rate, epochs, the RPO weight, ...), measured by the pipeline's
own evaluation on held-out prompts — never by the training loss.

    python scripts/frontier.py --config configs/smollm2-instruct.yaml --output-dir runs/frontier \\
        --grid dpo.beta=0.1,0.3 --grid dpo.rpo_alpha=0,1 [--set key=value ...] [--json frontier.json]

Every point is `alignflow run --no-stack` with the point's `--set` overrides, all in one output folder, so data,
on-policy pairs, the reference's log-probs and its benchmarks are computed once (content-keyed caches) and
only training and evaluation run per point; each point's summary.json goes to <output-dir>/frontier/<point>/
(`run.summary_dir`). Points are not registered. `--table-only` reads the summaries of an earlier sweep.

The table has one row per point: the rise of held-out answers that follow the instruction *and* answer
(`quality/passed_and_answered_rate_gain`), the reference-minus-policy drop of each benchmark's main metric
(`alignflow_general_gen`'s `contains` is the free-text one), echo and loop rates, the length ratio, the KL
estimate, the win rate and whether every gate passed. A point is on the frontier when no other point has at
least its gain with at most its largest benchmark drop (and is better in one of them).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def grid_points(grid: Sequence[str]) -> list[dict[str, str]]:
    """["a=1,2", "b=x"] -> [{"a": "1", "b": "x"}, {"a": "2", "b": "x"}]."""
    axes = []
    for item in grid:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise SystemExit(f"frontier.py: --grid expects KEY=V1,V2,..., got {item!r}")
        axes.append([(key, v) for v in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def point_name(point: dict[str, str], overrides: Sequence[str] = (), config: str = "") -> str:
    """The point's folder under <output-dir>/frontier: its full keys and values, and a digest of the preset (its
    text) and the --set overrides, so that two frontiers run into one output folder (dpo.optim.learning_rate and
    orpo.optim.learning_rate, one grid under two --set, or two presets) never share a point's folder."""
    name = "_".join(f"{k}-{v}" for k, v in point.items()) or "preset"
    if overrides or config:
        name += "+" + hashlib.sha256("\n".join([config, *overrides]).encode()).hexdigest()[:8]
    return name


def row(name: str, point: dict[str, str], summary: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    metrics = summary.get("metrics") or {}
    quality = summary.get("quality") or {}
    main = (summary.get("benchmarks") or {}).get("main") or {}
    drops = {task: m["reference"] - m["policy"] for task, m in main.items()}
    gates = summary.get("gates") or []
    return {"point": name, "settings": point, "seconds": seconds,
            "passed_and_answered_gain": quality.get("passed_and_answered_rate_gain"),
            "policy_passed_and_answered": (quality.get("policy") or {}).get("passed_and_answered_rate"),
            "reference_passed_and_answered": (quality.get("reference") or {}).get("passed_and_answered_rate"),
            "benchmark_drop": drops, "max_drop": max(drops.values()) if drops else None,
            "echo_rate": (quality.get("policy") or {}).get("echo_rate"),
            "loop_rate": (quality.get("policy") or {}).get("loop_rate"),
            "length_ratio": quality.get("length_ratio"), "kl": quality.get("kl"),
            "win_rate": metrics.get("compare/win_rate"),
            "gates_failed": [g["name"] for g in gates if not g.get("passed")]}


def mark_frontier(rows: list[dict[str, Any]]) -> None:
    """rows[i]["frontier"]: no other row has at least its gain with at most its max drop, strictly better in
    one of the two."""
    usable = [r for r in rows if r["passed_and_answered_gain"] is not None and r["max_drop"] is not None]
    for r in rows:
        r["frontier"] = r in usable and not any(
            o is not r and o["passed_and_answered_gain"] >= r["passed_and_answered_gain"]
            and o["max_drop"] <= r["max_drop"]
            and (o["passed_and_answered_gain"] > r["passed_and_answered_gain"] or o["max_drop"] < r["max_drop"])
            for o in usable)


def fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if pct else f"{value:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| point | follows and answers, gain (points) | largest benchmark drop (points) | echo | loop | "
             "length ratio | KL | win rate | gates failed | frontier |", "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['point']} | {fmt(r['passed_and_answered_gain'], True)} | {fmt(r['max_drop'], True)} | "
                     f"{fmt(r['echo_rate'])} | {fmt(r['loop_rate'])} | {fmt(r['length_ratio'])} | {fmt(r['kl'])} | "
                     f"{fmt(r['win_rate'])} | {', '.join(r['gates_failed']) or 'none'} | "
                     f"{'yes' if r['frontier'] else ''} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="frontier.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/smollm2-instruct.yaml")
    parser.add_argument("--output-dir", required=True, help="one folder for every point (shared caches)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="an axis (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every point (repeatable)")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--table-only", action="store_true", help="only read the summaries already there")
    args = parser.parse_args(argv)
    out = Path(args.output_dir).resolve()
    rows = []
    for point in grid_points(args.grid):
        name = point_name(point, args.overrides, Path(args.config).read_text())
        summary_dir = out / "frontier" / name
        seconds = None
        if not args.table_only:
            cmd = [str(ROOT / ".venv" / "bin" / "alignflow"), "run", "--no-stack", "--config", args.config,
                   "--set", f"run.output_dir={out}", "--set", f"run.summary_dir={summary_dir}",
                   "--set", "promotion.register_model=false",
                   *(a for item in args.overrides for a in ("--set", item)),
                   *(a for k, v in point.items() for a in ("--set", f"{k}={v}"))]
            print(f"point {name}: {' '.join(cmd[1:])}", flush=True)
            started = time.monotonic()
            done = subprocess.run(cmd, cwd=ROOT, check=False)
            seconds = time.monotonic() - started
            if done.returncode:
                print(f"point {name}: failed (exit {done.returncode})", file=sys.stderr)
                continue
        path = summary_dir / "summary.json"
        if path.is_file():
            rows.append(row(name, point, json.loads(path.read_text()), seconds))
    mark_frontier(rows)
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
