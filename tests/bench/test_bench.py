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
    from alignment.instruct import quicktask
    from alignment.models.tiny import train_tokenizer

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
    from alignment.data.tokenization import IGNORE_INDEX
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


@pytest.mark.slow
def test_smoke_run_with_two_processes_replicated_and_sharded(tmp_path: Path) -> None:
    """--variants ddp2,fsdp2: alignflow in 2 torchrun processes (bench/launched.py), each with half of every
    batch, the policy replicated or sharded: the same loss as one process on the same global batches, and each
    process's own memory in the JSON."""
    require_trl()
    from flows import cli

    out = tmp_path / "bench.json"
    argv = ["bench", "--smoke", "--data", "quickstart", "--methods", "dpo", "--variants", "ddp2,fsdp2",
            "--json", str(out)]
    assert cli.main(argv) == 0
    trials = {t["trainer"]: t["result"] for t in json.loads(out.read_text())["trials"]}
    for name in ("alignflow+ddp2", "alignflow+fsdp2"):
        per_process = trials[name]["per_process"]
        assert [p["rank"] for p in per_process] == [0, 1] and all(p["rss_peak_reset"] for p in per_process)
        assert trials[name]["rss_peak_mib"] == max(p["rss_peak_mib"] for p in per_process)
        assert trials[name]["final_loss"] == pytest.approx(trials["alignflow"]["final_loss"], abs=1e-5)


def test_real_size_verdicts_compare_with_trls_fastest_and_smallest() -> None:
    """With --model: DPO speed over the fastest TRL configuration (here trl-precompute, 2.0x < 2.5x), memory
    over the smallest TRL growth (trl-mmap's: 400 / 1000 = 0.4 passes, checkpointing 350 / 1000 fails 0.3), ORPO
    and SFT >= 2x."""
    from bench.trainers import BenchOptions, BenchRun, judge, summarise

    def trial(method: str, trainer: str, seconds: float, growth: float) -> dict:
        return {"repeat": 0, "data": "hh", "method": method, "trainer": trainer, "ok": True,
                "result": {"seconds": seconds, "examples": 4, "data_tokens": 800, "ref_s": 0.0, "init_s": 0.0,
                           "checkpoint_s": 0.0, "rss_growth_mib": growth, "rss_peak_mib": 500.0, "final_loss": 1.0}}

    run = BenchRun(options=BenchOptions(data=("hh",), model="some/model", variants=("checkpointing",)),
                   environment={})
    run.trials = [trial("sft", "alignflow", 1.0, 100), trial("sft", "trl", 2.5, 100),
                  trial("dpo", "alignflow", 1.0, 400), trial("dpo", "trl", 3.0, 1200),
                  trial("dpo", "trl-precompute", 2.0, 1100), trial("dpo", "trl-mmap", 2.9, 1000),
                  trial("dpo", "alignflow+checkpointing", 1.5, 350),
                  trial("orpo", "alignflow", 1.0, 100), trial("orpo", "trl", 1.9, 150)]
    run.results = summarise(run)
    verdicts = {v["target"]: (v["passed"], v["value"]) for v in judge(run)}
    assert verdicts["dpo speed >= 2.5x TRL's fastest (trl-precompute, hh)"] == (False, pytest.approx(2.0))
    assert verdicts["sft speed >= 2.0x TRL's fastest (trl, hh)"][0] is True
    assert verdicts["orpo speed >= 2.0x TRL's fastest (trl, hh)"][0] is False
    assert verdicts["dpo alignflow peak RSS growth <= 0.4x TRL's smallest (hh)"] == (True, pytest.approx(0.4))
    assert verdicts["dpo alignflow+checkpointing peak RSS growth <= 0.3x TRL's smallest (hh)"][0] is False


def test_generation_verdicts() -> None:
    from bench.generation import judge_generation, summarise_generation

    def trial(name: str, seconds: float, digest: str = "same") -> dict:
        return {"repeat": 0, "generator": name, "ok": True,
                "result": {"seconds": seconds, "new_tokens": 100, "prompts": 4, "rss_growth_mib": 1.0,
                           "answers_digest": digest}}

    rows = summarise_generation([trial("alignflow", 1.0), trial("hf-sorted", 1.5), trial("hf-padded-batch", 2.0),
                                 trial("hf-one-at-a-time", 3.5)])
    verdicts = {v["target"]: v["passed"] for v in judge_generation(rows, smoke=False)}
    assert verdicts == {"generation tokens/s >= 3.0x model.generate one prompt at a time": True,
                        "greedy answers identical to model.generate's (every generator)": True}
    rows = summarise_generation([trial("alignflow", 1.0), trial("hf-one-at-a-time", 2.0, "other")])
    assert [v["passed"] for v in judge_generation(rows, smoke=False)] == [False, False]


@pytest.mark.slow
def test_smoke_run_with_a_model_folder_generation_and_full_logits(tmp_path: Path) -> None:
    """--model takes a model folder (as the pipeline's model sources); gen times generation; the full-logits
    variant (the LM head at every position) trains to the same loss as the chunked head."""
    require_trl()
    from alignment.instruct import quicktask
    from alignment.models.tiny import build_model, train_tokenizer
    from flows import cli

    tok = train_tokenizer(quicktask.corpus(), 1024)
    model = build_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                        max_position_embeddings=256, seed=0)
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "bench.json"
    argv = ["bench", "--smoke", "--data", "hh", "--methods", "dpo,gen", "--variants", "full-logits,glibc-malloc,mkl-linear",
            "--model", str(tmp_path / "model"), "--json", str(out)]
    assert cli.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["environment"]["model"]["hidden_size"] == 32
    rows = {r["trainer"]: r for r in report["results"]}
    assert rows["alignflow+full-logits"]["final_loss"] == pytest.approx(rows["alignflow"]["final_loss"], abs=1e-5)
    # the allocator settings change where memory comes from, not a single value
    assert rows["alignflow+glibc-malloc"]["final_loss"] == rows["alignflow"]["final_loss"]
    assert rows["trl-mmap"]["final_loss"] == rows["trl"]["final_loss"]
    # torch's own products instead of oneDNN's: the same loss up to float rounding
    assert rows["alignflow+mkl-linear"]["final_loss"] == pytest.approx(rows["alignflow"]["final_loss"], abs=1e-4)
    assert set(rows["alignflow"]["speedup"]) == {"trl", "trl-precompute", "trl-mmap"}
    assert {r["generator"] for r in report["generation"]} == {"alignflow", "hf-sorted", "hf-padded-batch",
                                                             "hf-one-at-a-time"}
    verdicts = {v["target"]: v["passed"] for v in report["verdicts"]}
    assert verdicts["greedy answers identical to model.generate's (every generator)"] is True
    assert cli.main([*argv[:-2], "--model", str(tmp_path / "missing.gguf")]) == 2  # one clear error line


def test_thp_mode_reads_the_bracketed_choice(tmp_path) -> None:
    from bench.trainers import thp_mode

    (tmp_path / "enabled").write_text("always [madvise] never\n")
    assert thp_mode(tmp_path / "enabled") == "madvise"
    (tmp_path / "odd").write_text("unknown\n")
    assert thp_mode(tmp_path / "odd") is None
    assert thp_mode(tmp_path / "missing") is None


@pytest.mark.parametrize(("variant", "field"), [("full-logits", "full_logits"), ("plain-ops", "fused_ops"),
                                                ("padded-rows", "pack_rows"), ("mkl-linear", "onednn_linear")])
def test_variants_run_other_runtime_plans(variant: str, field: str) -> None:
    """The plan-level variants are the default alignflow trial's runtime plan with one field changed (for the
    reference pass and the training steps alike); nothing else differs."""
    import dataclasses

    from bench.trial import variant_plan

    spec = {"method": "dpo", "device": "cpu"}
    default = dataclasses.replace(variant_plan({**spec, "trainer": "alignflow"}), onednn_linear=True)
    plan = dataclasses.replace(variant_plan({**spec, "trainer": f"alignflow+{variant}"}),
                               **({} if field == "onednn_linear" else {"onednn_linear": True}))
    assert getattr(plan, field) is not getattr(default, field)
    assert dataclasses.replace(plan, **{field: getattr(default, field)}) == default
