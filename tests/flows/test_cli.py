"""The `alignflow` command in-process: user errors exit 2 with one 'error:' message, never a traceback, and
bad data fails in preflight before the Prefect flow is even imported."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch

from flows import cli

QUICKSTART = str(Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml")


@pytest.fixture(autouse=True)
def _single_thread_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # `run` sets it; restore whatever was there


@pytest.fixture
def no_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace flows.pipeline so a test fails loudly if `run` gets past preflight."""
    fake = types.ModuleType("flows.pipeline")

    def alignment_pipeline(cfg):  # pragma: no cover - reaching it is the failure
        raise AssertionError("preflight let a bad input through to the flow")

    fake.alignment_pipeline = alignment_pipeline
    monkeypatch.setitem(sys.modules, "flows.pipeline", fake)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def assert_user_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error:"), err
    assert "Traceback" not in err and "Traceback" not in out
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def test_config_prints_resolved_json_with_override(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["config", "--config", QUICKSTART, "--set", "dpo.beta=0.25", "-s", "preference.method=orpo"])
    out, err = capsys.readouterr()
    assert code == 0 and err == ""
    resolved = json.loads(out)
    assert resolved["dpo"]["beta"] == 0.25
    assert resolved["preference"]["method"] == "orpo"
    assert set(resolved) >= {"run", "data", "model", "sft", "dpo", "orpo", "eval", "promotion", "tracking"}


def test_config_with_bad_override_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["config", "--set", "dpo.optim.learning_rate=-1"])
    assert_user_error(capsys, code, "dpo.optim.learning_rate", "greater than 0")


def test_run_with_broken_config_exits_2(capsys: pytest.CaptureFixture[str], no_flow) -> None:
    code = cli.main(["run", "--config", QUICKSTART, "--set", "dpo.optim.learning_rate=-1"])
    assert_user_error(capsys, code, "dpo.optim.learning_rate", "greater than 0")


def test_run_with_unknown_key_exits_2(capsys: pytest.CaptureFixture[str], no_flow) -> None:
    code = cli.main(["run", "--set", "dpo.betta=0.1"])
    assert_user_error(capsys, code, "dpo.betta", "unknown key")


def test_run_with_broken_yaml_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, no_flow) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("run: [seed: 1\n")
    code = cli.main(["run", "--config", str(path)])
    assert_user_error(capsys, code, str(path), "not valid YAML")


def test_run_with_set_without_equals_exits_2(capsys: pytest.CaptureFixture[str], no_flow) -> None:
    code = cli.main(["run", "--set", "dpo.beta"])
    assert_user_error(capsys, code, "KEY=VALUE")


def test_run_with_empty_chosen_fails_in_preflight(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  no_flow) -> None:
    """Row 1 (0-based: the second line) has chosen == ''. The message names file, row and field; the flow
    module is never reached (no_flow), so no Prefect server starts."""
    sft = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "What is 2 + 2?", "completion": "4"},
                                               {"prompt": "What is 3 + 3?", "completion": "6"}])
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"prompt": "What is 2 + 2?", "chosen": "4", "rejected": "5"},
        {"prompt": "What is 3 + 3?", "chosen": "", "rejected": "7"},
    ])
    code = cli.main(["run", "--config", QUICKSTART, "--set", "data.source=files",
                     "--set", f"data.sft_path={sft}", "--set", f"data.train_path={train}",
                     "--set", f"run.output_dir={tmp_path / 'run'}"])
    assert_user_error(capsys, code, str(train), "row 1", "field 'chosen'")
    assert not (tmp_path / "run").exists()


def test_run_with_missing_data_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, no_flow) -> None:
    missing = tmp_path / "nope.jsonl"
    code = cli.main(["run", "--set", "data.source=files", "--set", f"data.sft_path={missing}",
                     "--set", f"data.train_path={missing}"])
    assert_user_error(capsys, code, str(missing))


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "usage: alignflow" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "extra"), [
    (["run"], ["--no-stack"]), (["compare"], ["--no-stack"]), (["deploy"], []), (["promote", "m", "1", "--reason", "r"], []),
])
def test_commands_share_one_declaration_of_config_set_and_stack_dir(command: list[str], extra: list[str]) -> None:
    """--config, --set and --stack-dir mean the same in every command that takes them (argparse parents)."""
    from flows.cli import build_parser

    args = build_parser().parse_args([*command, "-c", "p.yaml", "-s", "a.b=1", "--set", "c=2", "--stack-dir", "d",
                                      *extra])
    assert (args.config, args.overrides, args.stack_dir) == ("p.yaml", ["a.b=1", "c=2"], "d")
    if extra:
        assert args.no_stack is True
