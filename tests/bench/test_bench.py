"""The benchmark harness: its data builders, its verdicts, and the smoke run CI does through the CLI (every
trainer runs, every number is finite; no timing assertions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.bench import require_trl


@pytest.fixture(scope="module")
def tokenizer():
    from alignment import quicktask
    from alignment.tiny_model import train_tokenizer

    return train_tokenizer(quicktask.corpus(), 1024)


def test_hh_like_pairs_have_hh_lengths_within_max_length(tokenizer) -> None:
    from bench.pairs import build_pairs, length_stats

    pairs = build_pairs("hh", tokenizer, 400, seed=0, max_length=1024)
    assert pairs == build_pairs("hh", tokenizer, 400, seed=0, max_length=1024)  # deterministic
    assert all(len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) <= 1024 for p in pairs)
    stats = length_stats(pairs)
    assert 160 <= stats["prompt"]["p50"] <= 240 and 380 <= stats["prompt"]["p90"] <= 540, stats
    assert 95 <= stats["chosen"]["p50"] <= 145, stats
    end = tokenizer("<|im_end|>\n", add_special_tokens=False)["input_ids"]
    assert all(p["chosen_ids"][-len(end):] == end and p["rejected_ids"][-len(end):] == end for p in pairs)
    assert all(p["prompt_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>") for p in pairs)


def test_quickstart_pairs_and_sft_rows(tokenizer) -> None:
    from alignment.tokenization import IGNORE_INDEX
    from bench.pairs import build_pairs, sft_rows

    pairs = build_pairs("quickstart", tokenizer, 5, seed=0, max_length=128)
    text = tokenizer.decode(pairs[0]["prompt_ids"] + pairs[0]["chosen_ids"])
    assert text.startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in text
    row = sft_rows(pairs)[0]
    n = len(pairs[0]["prompt_ids"])
    assert row["input_ids"] == pairs[0]["prompt_ids"] + pairs[0]["chosen_ids"]
    assert row["labels"] == [IGNORE_INDEX] * n + pairs[0]["chosen_ids"]


def test_verdicts_compare_alignflow_with_each_trl_configuration() -> None:
    from bench.trainers import BenchOptions, BenchRun, judge, summarise

    def trial(method: str, trainer: str, seconds: float, growth: float) -> dict:
        return {"repeat": 0, "data": "hh", "method": method, "trainer": trainer, "ok": True,
                "result": {"seconds": seconds, "examples": 8, "data_tokens": 800, "ref_s": 0.0, "init_s": 0.0,
                           "checkpoint_s": 0.0, "rss_growth_mib": growth, "rss_peak_mib": 500.0, "final_loss": 1.0}}

    run = BenchRun(options=BenchOptions(data=("hh",)), environment={})
    run.trials = [trial("sft", "alignflow", 1.0, 100), trial("sft", "trl", 1.1, 100),
                  trial("dpo", "alignflow", 1.0, 105), trial("dpo", "trl", 3.0, 200),
                  trial("dpo", "trl-precompute", 1.4, 200), trial("orpo", "alignflow", 1.0, 100),
                  trial("orpo", "trl", 2.0, 150)]
    run.loss_agreement = {"hh": {"dpo/trl": {"max_abs_diff": 1e-6}, "dpo/trl-precompute": {"max_abs_diff": 2e-3}}}
    run.results = summarise(run)
    verdicts = {v["target"]: v["passed"] for v in judge(run)}
    assert verdicts["dpo speed >= 2.0x trl (hh)"] is True
    assert verdicts["dpo speed >= 1.5x trl-precompute (hh)"] is False  # 1.4x
    assert verdicts["sft speed >= 1.2x trl (hh)"] is False
    assert verdicts["orpo speed >= 1.5x trl (hh)"] is True
    assert verdicts["dpo peak RSS growth <= 1.1x sft (hh)"] is True
    assert verdicts["dpo/trl loss within 0.001 of TRL (hh)"] is True
    assert verdicts["dpo/trl-precompute loss within 0.001 of TRL (hh)"] is False
    dpo = next(r for r in run.results if (r["method"], r["trainer"]) == ("dpo", "alignflow"))
    assert dpo["speedup"] == pytest.approx({"trl": 3.0, "trl-precompute": 1.4})
    assert dpo["pairs_per_s"] == pytest.approx(8.0) and dpo["loss_diff"] == 2e-3


@pytest.mark.slow
def test_smoke_run_through_the_cli_writes_every_trainer(tmp_path: Path) -> None:
    """`alignflow bench --smoke` (what CI runs): both data sets, every trainer, finite numbers in the JSON."""
    require_trl()
    from bench.trainers import TRAINERS
    from flows import cli

    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--smoke", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    failed = [t for t in report["trials"] if not t["ok"]]
    assert not failed, failed
    expected = {(d, m, t) for d in ("quickstart", "hh") for m, trainers in TRAINERS.items() for t in trainers}
    assert {(r["data"], r["method"], r["trainer"]) for r in report["results"]} == expected
    for row in report["results"]:
        assert row["trials"] == 1, row
        for key in ("seconds", "pairs_per_s", "tokens_per_s", "rss_growth_mib", "rss_peak_mib", "final_loss",
                    "loss_diff"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), (key, row)
    for data in ("quickstart", "hh"):
        assert set(report["loss_agreement"][data]) == {"sft/trl", "dpo/trl", "dpo/trl-precompute", "orpo/trl"}
    assert report["environment"]["versions"]["trl"] and report["environment"]["threads"] == 1
    assert all(v["passed"] is None for v in report["verdicts"] if "speed" in v["target"] or "RSS" in v["target"])


def test_smoke_run_with_alignflow_variants(tmp_path: Path) -> None:
    """--variants adds alignflow trainers with LoRA / activation checkpointing on, timed beside the plain one."""
    require_trl()
    from flows import cli

    out = tmp_path / "bench.json"
    argv = ["bench", "--smoke", "--data", "quickstart", "--methods", "dpo", "--variants", "lora,checkpointing",
            "--json", str(out)]
    assert cli.main(argv) == 0
    rows = {r["trainer"]: r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {"alignflow", "alignflow+lora", "alignflow+checkpointing", "trl", "trl-precompute"}
    for name in ("alignflow+lora", "alignflow+checkpointing"):
        assert math.isfinite(rows[name]["pairs_per_s"]) and math.isfinite(rows[name]["final_loss"]), rows[name]
        assert set(rows[name]["speedup"]) == {"trl", "trl-precompute"} and rows[name]["loss_diff"] is None
    assert cli.main([*argv[:-2], "--variants", "fp8"]) == 2  # an unknown variant is refused, not ignored
