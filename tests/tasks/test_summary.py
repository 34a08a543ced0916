"""The summary's markdown: links to MLflow runs on a server, ids for a local store, every table filled."""

from __future__ import annotations

from tasks.summary import run_link, summary_markdown

SUMMARY = {
    "tracking_uri": "http://127.0.0.1:5000", "experiment_id": "3", "parent_run_id": "p" * 32, "method": "dpo",
    "stage_runs": {"sft": "a" * 32, "dpo": "b" * 32}, "metrics": {"compare/win_rate": 0.875, "sft/steps": 200},
    "gates": [{"name": "win_rate", "value": 0.875, "threshold": 0.6, "passed": True}],
    "registered_model": {"name": "m", "version": "2", "aliases": ["candidate", "champion"], "model_uri": "x"},
}


def test_links_point_at_the_mlflow_ui_of_a_server() -> None:
    assert run_link("http://h:5000/", "3", "abc") == "[abc](http://h:5000/#/experiments/3/runs/abc)"
    assert run_link("sqlite:///x.db", "3", "abc") == "`abc`"


def test_markdown_holds_runs_metrics_gates_and_registration() -> None:
    md = summary_markdown(SUMMARY)
    assert "(http://127.0.0.1:5000/#/experiments/3/runs/" + "b" * 32 + ")" in md
    assert "| compare/win_rate | 0.875 |" in md and "| sft/steps | 200 |" in md
    assert "| win_rate | 0.875 | 0.6 | yes |" in md
    assert "version 2, aliases: candidate, champion" in md


def test_a_run_does_not_leave_its_tracking_uri_in_the_environment(tmp_path, monkeypatch) -> None:
    """mlflow.set_tracking_uri exports $MLFLOW_TRACKING_URI; a second pipeline run in the same process with
    another output_dir must still get its own default store."""
    from alignment.config import load_config
    from tasks.tracking import resolve_tracking, start_pipeline_run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = start_pipeline_run(load_config(None, [f"run.output_dir={tmp_path / 'a'}"]))
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ
    second_cfg = load_config(None, [f"run.output_dir={tmp_path / 'b'}"])
    assert resolve_tracking(second_cfg)[0] != first.tracking_uri
    assert resolve_tracking(second_cfg)[0].endswith(str(tmp_path / "b" / "mlflow.db"))
