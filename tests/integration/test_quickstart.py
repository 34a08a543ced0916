"""The quickstart exactly as `make demo` runs it (full budget), through the CLI: the DPO and the ORPO policy
must beat the SFT reference (win rate >= 0.75) and DPO must rank held-out pairs (reward accuracy >= 0.8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("method", ["dpo", "orpo"])
def test_quickstart_aligns(prefect_api, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    code = main(["run", "--config", "configs/quickstart.yaml", "--set", f"run.output_dir={tmp_path}",
                 "--set", f"preference.method={method}"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1] == f"summary: {tmp_path / 'summary.json'}"
    summary = json.loads((tmp_path / "summary.json").read_text())
    m = summary["metrics"]
    print(method, json.dumps(m, indent=1))
    assert m["compare/win_rate"] >= 0.75
    if method == "dpo":
        assert m["eval/rewards/accuracies"] >= 0.8
    assert "champion" in summary["registered_model"]["aliases"]
