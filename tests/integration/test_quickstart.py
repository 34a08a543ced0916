"""The quickstart exactly as `make demo` runs it (full budget), through the CLI, all in one output directory
(so later runs reuse earlier stages, as a user's would):

- the DPO and the ORPO policy must beat the SFT reference (win rate >= 0.75), DPO must rank held-out pairs
  (reward accuracy >= 0.8), and the summary carries lm-eval results of policy and reference, every gate's
  verdict and the win-rate interval; the HTML report is written and logged to MLflow;
- a policy destroyed by a far too high learning rate is registered as `candidate` but refused `champion`;
- `alignflow compare` produces one report with a DPO and an ORPO row (training fully cached by then).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from alignment.config import BenchmarkConfig
from flows.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICKSTART_TASKS = BenchmarkConfig().tasks  # the project's animal-facts tasks (the default benchmarks)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("quickstart")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> list[str]:
    code = main(list(argv))
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0, out[-20:]
    return out


@pytest.mark.parametrize("method", ["dpo", "orpo", "kto"])
def test_quickstart_aligns(prefect_api, out_dir: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    out = run_cli(capsys, "run", "--config", "configs/quickstart.yaml", "--set", f"run.output_dir={out_dir}",
                  "--set", f"preference.method={method}")
    assert out[-1] == f"summary: {out_dir / 'summary.json'}"
    summary = json.loads((out_dir / "summary.json").read_text())
    m = summary["metrics"]
    print(method, json.dumps(m, indent=1), json.dumps(summary["benchmarks"]["main"], indent=1))
    assert m["compare/win_rate"] >= 0.75
    assert m["compare/win_rate_ci_low"] < m["compare/win_rate"] < m["compare/win_rate_ci_high"]
    if method in ("dpo", "kto"):  # against the SFT model's log-probs
        assert m["eval/rewards/accuracies"] >= 0.8
    assert "champion" in summary["registered_model"]["aliases"] and summary["registered_model"]["champion"]

    bench = summary["benchmarks"]
    for role in ("policy", "reference"):
        assert set(bench[role]) == set(QUICKSTART_TASKS), role
        assert 0.0 <= bench[role]["alignflow_animal_mc"]["acc"] <= 1.0
    assert bench["main"]["alignflow_sanity"]["reference"] >= 0.9  # a healthy SFT model is no collapse
    gates = {g["name"]: g for g in summary["gates"]}
    assert {"win_rate", "reward_accuracy", "finite_losses", "contamination.heldout",
            *(f"benchmark_regression.{t}" for t in QUICKSTART_TASKS)} <= set(gates)
    assert all(g["passed"] for g in gates.values())
    assert summary["contamination"]["heldout"] == 0.0  # held-out prompts are never training prompts

    client = MlflowClient(summary["tracking_uri"])
    version = client.get_model_version(summary["registered_model"]["name"], summary["registered_model"]["version"])
    assert version.tags["gate.benchmark_regression.alignflow_sanity.passed"] == "true"
    report = Path(summary["report"])
    html = report.read_text()
    assert "Promotion gates" in html and "alignflow_animal_mc" in html and "data:image/png;base64," in html
    assert {f.path for f in client.list_artifacts(summary["parent_run_id"], "report")} == {"report/report.html"}


def test_broken_policy_is_refused_champion(prefect_api, out_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DPO at a learning rate 1000x the preset's wrecks the policy: it is registered (candidate) but the
    gates keep `champion` where it was."""
    tracking = json.loads((out_dir / "summary.json").read_text())["tracking_uri"]  # the quickstart runs' registry
    name = "alignflow-quickstart"
    before = champion_version(tracking, name)
    assert before is not None
    run_cli(capsys, "run", "--config", "configs/quickstart.yaml", "--set", f"run.output_dir={out_dir}",
            "--set", "dpo.optim.learning_rate=0.05", "--set", "dpo.optim.max_steps=40")
    summary = json.loads((out_dir / "summary.json").read_text())
    print(json.dumps(summary["gates"], indent=1))
    assert summary["tracking_uri"] == tracking
    gates = {g["name"]: g for g in summary["gates"]}
    assert summary["registered_model"]["aliases"] == ["candidate"]
    assert not gates["win_rate"]["passed"]
    assert not all(gates[f"benchmark_regression.{t}"]["passed"] for t in QUICKSTART_TASKS)  # the alignment tax
    assert champion_version(tracking, name) == before  # untouched by the broken run
    version = MlflowClient(tracking).get_model_version(name, summary["registered_model"]["version"])
    assert version.tags["gates.passed"] == "false"


def champion_version(tracking: str, name: str) -> str | None:
    try:
        return str(MlflowClient(tracking).get_model_version_by_alias(name, "champion").version)
    except mlflow.exceptions.MlflowException:
        return None


def test_compare_reports_dpo_and_orpo(prefect_api, out_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, "compare", "--config", "configs/quickstart.yaml", "--set", f"run.output_dir={out_dir}")
    assert out[-1].startswith("report: ")
    report = Path(out[-1].removeprefix("report: "))
    rows = json.loads((report.parent / "rows.json").read_text())
    assert [r["variant"] for r in rows] == ["dpo", "orpo"]
    assert sum(r["best"] for r in rows) == 1
    for r in rows:
        assert r["win_rate"] >= 0.75 and r["gates_passed"], r
    html = report.read_text()
    assert ">dpo<" in html and ">orpo<" in html and "best" in html
    tracking = json.loads((out_dir / "summary.json").read_text())["tracking_uri"]  # the last variant's
    runs = MlflowClient(tracking).search_runs(
        [MlflowClient(tracking).get_experiment_by_name("alignflow").experiment_id],
        "tags.`alignflow.stage` = 'compare-methods'")
    assert len(runs) == 1 and runs[0].data.tags["alignflow.best_variant"] in ("dpo", "orpo")
