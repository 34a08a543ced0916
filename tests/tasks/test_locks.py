"""One run per output directory: a second run on a held directory is refused at once, naming the holder;
the lock goes with its process (no stale lock after a crash)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.locks import LOCK_NAME, RunInProgressError, output_dir_lock


def test_holder_reenters_and_releases(tmp_path: Path) -> None:
    with output_dir_lock(tmp_path / "run") as lock:
        assert f"pid {os.getpid()}" in lock.read_text()
        with output_dir_lock(tmp_path / "run"):  # re-entrant for its holder (the CLI, then the flow)
            pass
        assert f"pid {os.getpid()}" in lock.read_text()  # still held after the inner exit
        with output_dir_lock(tmp_path / "other"):  # another directory is independent
            pass
    assert (tmp_path / "run" / LOCK_NAME).read_text() == ""  # released


def test_second_process_is_refused_and_the_holder_named(tmp_path: Path) -> None:
    proc = hold_in_subprocess(tmp_path / "run")
    try:
        with pytest.raises(RunInProgressError, match=rf"in use by a running pipeline \(pid {proc.pid} on "):
            with output_dir_lock(tmp_path / "run"):
                pass
    finally:
        proc.kill()
        proc.wait()


def hold_in_subprocess(path: Path) -> subprocess.Popen:
    code = ("import sys, time; from tasks.locks import output_dir_lock\n"
            f"with output_dir_lock({str(path)!r}):\n    print('held', flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_of_a_killed_process_is_gone(tmp_path: Path) -> None:
    """A process that holds the lock is killed with SIGKILL: the directory is free again at once."""
    proc = hold_in_subprocess(tmp_path)
    try:
        with pytest.raises(RunInProgressError, match=f"pid {proc.pid}"):
            with output_dir_lock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
    with output_dir_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).is_file()


def test_cli_refuses_a_busy_output_dir_before_prefect_starts(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from flows import cli

    proc = hold_in_subprocess(tmp_path)
    try:
        code = cli.main(["run", "--no-stack", "--set", f"run.output_dir={tmp_path}"])
    finally:
        proc.kill()
        proc.wait()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: run.output_dir {tmp_path} is in use"), err
    assert "Traceback" not in err and "prefect" not in err.lower()
