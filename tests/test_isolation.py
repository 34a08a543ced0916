"""The test session never shares state with the checkout it runs in (issue #16): not the local stack that
`make demo` leaves running in .alignflow/stack, not the Makefile's PREFECT_HOME under .alignflow/, not the
user's shell settings, and a CLI call in a test leaves no stack settings behind for the next test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows import cli
from flows.stack import Stack
from tests.conftest import ISOLATED_VARIABLES, SESSION_STATE

CHECKOUT = Path(__file__).resolve().parents[1]


def test_the_stack_client_environment_is_all_isolated(tmp_path: Path) -> None:
    exported = set(Stack(tmp_path).client_env())
    missing = exported - set(ISOLATED_VARIABLES)
    assert not missing, f"Stack.client_env() exports {sorted(missing)}, which tests/conftest.py does not isolate"


def test_no_user_stack_setting_reaches_the_tests() -> None:
    leaked = {k: os.environ[k] for k in ISOLATED_VARIABLES
              if k in os.environ and k not in ("PREFECT_HOME", "ALIGNFLOW_STACK_DIR", "ALIGNFLOW_CACHE_DIR")}
    assert not leaked, f"set in the test process although tests/conftest.py removes them: {sorted(leaked)}"


def test_prefect_home_stack_dir_and_cache_are_the_sessions_own() -> None:
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH

    root = SESSION_STATE["root"]
    home = Path(PREFECT_HOME.value()).resolve()
    assert home == SESSION_STATE["prefect_home"].resolve(), f"Prefect's home is {home}, expected under {root}"
    storage = Path(PREFECT_LOCAL_STORAGE_PATH.value()).resolve()
    assert storage.is_relative_to(root.resolve()), f"Prefect's local result storage is {storage}, not under {root}"
    default_stack = Stack.load().dir
    assert default_stack == SESSION_STATE["stack_dir"].resolve(), (
        f"the CLI's default stack directory is {default_stack}, expected the session's {SESSION_STATE['stack_dir']}")
    assert not default_stack.is_relative_to(CHECKOUT), f"{default_stack} is inside the checkout {CHECKOUT}"
    from storage.s3 import default_cache_dir

    assert default_cache_dir() == SESSION_STATE["cache_dir"], f"alignflow's cache is {default_cache_dir()}"


def test_a_cli_call_that_finds_a_stack_leaves_no_setting_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`alignflow run` finds a (pretended) running stack, exports its settings, then fails in preflight; the
    caller's environment is as before, so a later run in this process does not track into that stack."""
    monkeypatch.setattr(Stack, "running", lambda self: True)
    before = dict(os.environ)
    missing = tmp_path / "missing.jsonl"
    code = cli.main(["run", "--stack-dir", str(tmp_path / "stack"), "--set", "data.source=files",
                     "--set", f"data.sft_path={missing}", "--set", f"data.train_path={missing}",
                     "--set", f"run.output_dir={tmp_path / 'out'}"])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert "using the local stack" in out.out, f"the CLI did not find the pretended stack: {out.out!r}"
    changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
    assert not changed, f"cli.main left these variables changed in the caller's process: {changed}"
