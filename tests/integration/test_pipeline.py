"""The whole flow on a very small budget, against the real Prefect test harness and a real SQLite MLflow
store: runs, metrics, artifacts, registry versions and aliases, load-back, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from alignment.config import load_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = [
    "sft.optim.max_steps=12", "dpo.optim.max_steps=6", "orpo.optim.max_steps=6",
    "sft.optim.save_every=5", "eval.max_prompts=12", "model.tiny.hidden_size=64",
    "model.tiny.intermediate_size=128", "model.tiny.num_layers=2", "eval.benchmarks.limit=16",
]
STAGES = {"prepare_data", "base_model", "sft", "dpo", "evaluate", "benchmarks", "compare", "register"}
# A 12-step SFT model answers little, so quality gates would be noise here; the quickstart tests gate for real.
NO_QUALITY_GATES = ["promotion.min_win_rate=0.0", "promotion.min_reward_accuracy=null",
                    "promotion.max_benchmark_regression=null"]


def run_small(tmp_path: Path, *extra: str) -> dict:
    from flows.pipeline import alignment_pipeline

    cfg = load_config("configs/quickstart.yaml", [*SMALL, f"run.output_dir={tmp_path}", *extra])
    result = alignment_pipeline(cfg)
    summary = json.loads(Path(result["summary_path"]).read_text())
    own = f"sqlite:///{Path(cfg.run.output_dir).resolve() / 'mlflow.db'}"
    assert summary["tracking_uri"] == own, f"the run tracked into {summary['tracking_uri']}, not its own store {own}"
    return summary


@pytest.fixture(scope="module")
def champion_run(prefect_api, tmp_path_factory) -> dict:
    # min_win_rate 0: the gates pass whatever this tiny budget reaches, so `champion` is set.
    return run_small(tmp_path_factory.mktemp("champion"), *NO_QUALITY_GATES, "promotion.model_name=it-champion")


def test_runs_metrics_and_artifacts(champion_run: dict) -> None:
    s = champion_run
    client = MlflowClient(s["tracking_uri"])
    assert set(s["stage_runs"]) == STAGES
    parent = client.get_run(s["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dpo.beta"] == "0.1"  # the full config is logged as params
    for stage, run_id in s["stage_runs"].items():
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == s["parent_run_id"], stage
        assert run.info.status == "FINISHED", stage
    dpo = s["stage_runs"]["dpo"]
    history = client.get_metric_history(dpo, "loss")
    assert len(history) >= 2 and [m.step for m in history] == sorted(m.step for m in history)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/chosen", "logps/rejected", "learning_rate", "grad_norm", "tokens_per_sec"):
        assert client.get_metric_history(dpo, name), name
    artifacts = {f.path for f in client.list_artifacts(dpo, "plots")}
    assert "plots/curves.png" in artifacts
    compare = s["stage_runs"]["compare"]
    assert {f.path for f in client.list_artifacts(compare, "comparison")} >= {
        "comparison/side_by_side.json", "comparison/side_by_side_table.json"}
    bench = s["stage_runs"]["benchmarks"]
    assert {f.path for f in client.list_artifacts(bench, "lm_eval")} == {
        "lm_eval/lm_eval_policy.json", "lm_eval/lm_eval_reference.json"}
    bench_metrics = client.get_run(bench).data.metrics
    for prefix in ("lm_eval", "lm_eval_reference", "lm_eval_delta"):
        assert f"{prefix}/alignflow_animal_mc/acc" in bench_metrics, prefix
    assert {f.path for f in client.list_artifacts(s["parent_run_id"], "report")} == {"report/report.html"}
    assert "contamination/heldout" in client.get_run(s["stage_runs"]["evaluate"]).data.metrics
    data = {f.path for f in client.list_artifacts(s["stage_runs"]["prepare_data"], "data")}
    assert "data/report.json" in data
    assert 0.0 <= s["metrics"]["compare/win_rate"] <= 1.0
    assert s["metrics"]["compare/win_rate_ci_low"] <= s["metrics"]["compare/win_rate"]


def test_registry_aliases_and_load_back(champion_run: dict) -> None:
    s = champion_run
    reg = s["registered_model"]
    assert reg["aliases"] == ["candidate", "champion"]
    client = MlflowClient(s["tracking_uri"])
    version = client.get_model_version_by_alias(reg["name"], "champion")
    assert str(version.version) == reg["version"]
    assert version.tags["gates.passed"] == "true"
    mlflow.set_tracking_uri(s["tracking_uri"])
    pipe = mlflow.transformers.load_model(f"models:/{reg['name']}@champion")
    out = pipe([{"role": "user", "content": "What sound does a cow make?"}], max_new_tokens=8, do_sample=False)
    assert out[0]["generated_text"][-1]["role"] == "assistant"


def test_failed_gate_gives_candidate_only(prefect_api, tmp_path: Path) -> None:
    # The Wilson lower bound is below 1 for any finite sample, so this gate cannot pass.
    s = run_small(tmp_path, "promotion.min_win_rate=1.0", "promotion.use_lower_bound=true",
                  "promotion.model_name=it-refused", "preference.method=orpo")
    assert s["registered_model"]["aliases"] == ["candidate"]
    gates = {g["name"]: g for g in s["gates"]}
    assert gates["win_rate_ci_low"]["passed"] is False
    client = MlflowClient(s["tracking_uri"])
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("it-refused", "champion")
    version = client.get_model_version("it-refused", s["registered_model"]["version"])
    assert version.tags["gates.passed"] == "false"
    assert "orpo" in s["stage_runs"] and "nll_loss" in client.get_run(s["stage_runs"]["orpo"]).data.metrics


def test_same_seed_same_metrics(prefect_api, tmp_path: Path, champion_run: dict) -> None:
    again = run_small(tmp_path, *NO_QUALITY_GATES, "promotion.model_name=it-champion")
    assert again["metrics"] == champion_run["metrics"]


def stage_seconds(summary: dict, stage: str) -> float:
    run = MlflowClient(summary["tracking_uri"]).get_run(summary["stage_runs"][stage])
    return (run.info.end_time - run.info.start_time) / 1000.0


def test_rerun_reuses_cached_stages_and_beta_reruns_only_dpo(prefect_api, tmp_path: Path) -> None:
    # A real SFT budget (the quickstart's is ~200 steps), so the comparison is not all fixed overhead.
    more = ["promotion.model_name=it-cache", "sft.optim.max_steps=80"]
    first = run_small(tmp_path, *more)
    second = run_small(tmp_path, *more)
    client = MlflowClient(second["tracking_uri"])
    for stage in ("prepare_data", "base_model", "sft", "dpo"):
        tags = client.get_run(second["stage_runs"][stage]).data.tags
        assert tags.get("alignflow.cached") == "true", stage
        assert tags["alignflow.reused_run_id"] == first["stage_runs"][stage], stage
    assert second["metrics"] == first["metrics"]  # the cached stages' results are the same results
    cached = stage_seconds(second, "prepare_data") + stage_seconds(second, "sft")
    fresh = stage_seconds(first, "prepare_data") + stage_seconds(first, "sft")
    assert cached < 0.05 * fresh, (cached, fresh)
    third = run_small(tmp_path, *more, "dpo.beta=0.3")
    tags = {s: client.get_run(third["stage_runs"][s]).data.tags for s in ("sft", "dpo")}
    assert tags["sft"].get("alignflow.cached") == "true"
    assert "alignflow.cached" not in tags["dpo"]
    assert third["registered_model"]["version"] == "3"


def test_non_finite_loss_stops_keeps_the_last_checkpoint_and_registers_nothing(
        prefect_api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NaN injected into the DPO loss at step 7 (of 10, checkpoints every 4): the run fails with an error
    naming the step, the step-4 checkpoint stays, the DPO run is FAILED, no model version is created and no
    summary is written. Without the fault, the same command resumes from that checkpoint and completes."""
    import alignment.stages.training as stages  # where the preference stage looks method_plan up
    from alignment.training.objectives import StepOutput
    from alignment.training.trainer import NonFiniteLossError

    real_plan = stages.method_plan
    calls = {"dpo": 0}

    def faulty_plan(method: str, **kwargs):  # noqa: ANN202 - wraps alignment.training.objectives.method_plan
        objective, collate = real_plan(method, **kwargs)
        if method != "dpo":
            return objective, collate

        def poisoned(model, batch):  # noqa: ANN001, ANN202
            calls["dpo"] += 1
            out = objective(model, batch)
            return StepOutput(out.loss * float("nan"), out.metrics) if calls["dpo"] == 7 else out

        return poisoned, collate

    monkeypatch.setattr(stages, "method_plan", faulty_plan)
    args = [*NO_QUALITY_GATES, "promotion.model_name=it-nan", "dpo.optim.max_steps=10", "dpo.optim.save_every=4"]
    with pytest.raises(NonFiniteLossError, match="at step 7"):
        run_small(tmp_path, *args)
    dpo_dirs = sorted(tmp_path.glob("dpo-*"))
    assert len(dpo_dirs) == 1, f"expected one dpo-* stage folder in {tmp_path}, found {[p.name for p in dpo_dirs]}"
    dpo_dir = dpo_dirs[0]
    checkpoints = sorted(p.name for p in (dpo_dir / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-0000004"], f"checkpoints in {dpo_dir / 'checkpoints'}: {checkpoints}"
    assert not (dpo_dir / "model").exists(), f"{dpo_dir / 'model'} exists although the DPO run failed"
    assert not (tmp_path / "summary.json").exists(), f"{tmp_path / 'summary.json'} written for a failed run"
    # With no tracking.uri and no $MLFLOW_TRACKING_URI, the run tracks into a SQLite store in its output folder.
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    assert client.search_model_versions("name='it-nan'") == [], f"a version of it-nan was registered in {store}"
    experiment = client.get_experiment_by_name("alignflow")
    assert experiment is not None, (
        f"no experiment 'alignflow' in the run's own store {store}: the run tracked elsewhere "
        f"($MLFLOW_TRACKING_URI in this process: {os.environ.get('MLFLOW_TRACKING_URI')!r})")
    runs = client.search_runs([experiment.experiment_id], "tags.`alignflow.stage` = 'dpo'")
    assert [r.info.status for r in runs] == ["FAILED"], f"DPO runs in {store}: {[r.info.status for r in runs]}"
    monkeypatch.setattr(stages, "method_plan", real_plan)
    again = run_small(tmp_path, *args)
    assert again["tracking_uri"] == store, f"the resumed run tracked into {again['tracking_uri']}, not {store}"
    dpo_run = client.get_run(again["stage_runs"]["dpo"])
    assert dpo_run.data.metrics["resumed_from_step"] == 4.0, f"DPO metrics in {store}: {dpo_run.data.metrics}"
    versions = client.search_model_versions("name='it-nan'")
    assert len(versions) == 1, f"expected one version of it-nan in {store}, found {len(versions)}"
