"""Helpers shared by the tests that start a real local stack (test_stack.py, test_browser.py)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flows.stack import HOST, Ports, Stack, free_ports

# A small training budget: the whole pipeline finishes in well under a minute on 2 cores.
SMALL = ["sft.optim.max_steps=8", "dpo.optim.max_steps=4", "eval.max_prompts=8", "eval.benchmarks.limit=16", "model.tiny.hidden_size=64",
         "model.tiny.intermediate_size=128", "model.tiny.num_layers=2"]
ALIGNFLOW = str(Path(sys.executable).parent / "alignflow")


def consecutive_free_base(count: int = 13) -> int:
    """The first of `count` consecutive free loopback ports (SeaweedFS's internal ports)."""
    for _ in range(200):
        base = random.randrange(20000, 60000)
        with_all = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind((HOST, port))
                with_all.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in with_all:
                s.close()
    raise RuntimeError("no run of free ports found")


@contextmanager
def running_stack(directory: Path, timeout: float = 180) -> Iterator[Stack]:
    """A whole stack on free loopback ports with its state in `directory`; stopped (data kept) on exit."""
    prefect, mlflow_port, s3, arena = free_ports(4)
    ports = Ports(prefect=prefect, mlflow=mlflow_port, s3=s3, weed_base=consecutive_free_base(), arena=arena)
    st = Stack(directory, ports)
    try:
        st.up(timeout=timeout, echo=lambda _: None)
        yield st
    finally:
        st.down(wipe=False, echo=lambda _: None)


def deploy(stack: Stack, *overrides: str, cron: str = "0 3 * * *", timeout: float = 120) -> str:
    """`alignflow deploy` against the stack (quickstart preset + SMALL + `overrides`); returns its output."""
    env = {**os.environ, **stack.client_env()}
    sets = sum((["--set", s] for s in [*SMALL, *overrides]), [])
    cmd = [ALIGNFLOW, "deploy", "--config", "configs/quickstart.yaml", "--stack-dir", str(stack.dir),
           "--cron", cron, *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout
