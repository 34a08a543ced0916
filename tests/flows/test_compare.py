"""The method comparison's variants, rows and choice of the best candidate, on hand-made summaries."""

from __future__ import annotations

from pathlib import Path

from alignment.config import PipelineConfig
from flows.compare import build_variants
from tasks.comparison import Variant, best_variant, comparison_markdown, variant_row


def test_variants_per_method_and_beta() -> None:
    base = PipelineConfig()
    names = [v.name for v in build_variants(base, ["dpo", "orpo"], None)]
    assert names == ["dpo", "orpo"]
    sweep = build_variants(base, ["dpo", "orpo", "dpo"], [0.05, 0.3])
    assert [v.name for v in sweep] == ["dpo-beta-0.05", "dpo-beta-0.3", "orpo"]
    assert [v.config.dpo.beta for v in sweep[:2]] == [0.05, 0.3]
    assert all(v.config.preference.method == m for v, m in zip(sweep, ["dpo", "dpo", "orpo"], strict=True))
    assert not any(v.config.promotion.register_model for v in sweep)  # variants are compared, not registered
    assert base.promotion.register_model and base.preference.method == "dpo"  # the input is not changed
    # each variant writes its summary.json into its own folder, never into the user's run's output_dir
    dirs = [v.config.run.summary_dir for v in sweep]
    assert len(set(dirs)) == 3 and base.run.summary_dir is None
    assert dirs[0] == str(Path(base.run.output_dir) / "compare" / "variants" / "dpo-beta-0.05")


def summary(win: float, low: float, passed: bool, acc: float | None = 0.9) -> dict:
    return {"metrics": {"compare/win_rate": win, "compare/win_rate_ci_low": low, "compare/win_rate_ci_high": 0.99,
                        "eval/rewards/accuracies": acc}, "train_seconds": {"sft": 30.0, "dpo": 12.0},
            "gates": [{"name": "win_rate", "passed": passed}, {"name": "finite_losses", "passed": True}],
            "parent_run_id": f"run-{win}", "benchmarks": {"main": {"mc": {"policy": 0.8, "reference": 0.7}}}}


def test_row_from_summary() -> None:
    row = variant_row(Variant(name="dpo", config=PipelineConfig()), summary(0.9, 0.8, True))
    assert row["win_rate"] == 0.9 and row["reward_accuracy"] == 0.9 and row["gates_passed"]
    assert row["benchmarks"] == {"mc": 0.8} and row["train_seconds"] == 12.0
    assert row["params"] == {"beta": 0.1, "lr": 5e-5}
    failed = variant_row(Variant(name="x", config=PipelineConfig()), summary(0.5, 0.4, False))
    assert failed["gates_failed"] == ["win_rate"]


def rows(*specs: tuple[str, float, float, bool]) -> list[dict]:
    return [{"variant": n, "win_rate": w, "win_rate_ci_low": lo, "gates_passed": p} for n, w, lo, p in specs]


def test_best_prefers_passing_gates_then_lower_bound() -> None:
    # b has the higher point estimate but the lower bound decides; c fails a gate, so it loses despite 0.99.
    assert best_variant(rows(("a", 0.85, 0.75, True), ("b", 0.88, 0.70, True), ("c", 0.99, 0.95, False))) == "a"
    assert best_variant(rows(("a", 0.5, 0.4, False), ("b", 0.6, 0.5, False))) == "b"  # none pass: still ranked
    assert best_variant([]) is None


def test_markdown_marks_the_best_and_lists_failed_gates() -> None:
    r = [variant_row(Variant(name="dpo", config=PipelineConfig()), summary(0.9, 0.8, True)),
         variant_row(Variant(name="orpo", config=PipelineConfig()), summary(0.5, 0.4, False))]
    r[0]["best"] = True
    md = comparison_markdown(r, "dpo", "/tmp/report.html")
    assert "| dpo ★ | 0.900 |" in md and "fail: win_rate" in md
