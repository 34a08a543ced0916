"""Start an entry point in several processes, watch it, stop it (see the package docstring)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

POLL_SECONDS = 0.5
STDERR_TAIL_CHARS = 4000


def distributed_command(entry: Sequence[str], *, num_processes: int, cuda: bool, mixed_precision: str = "no",
                        accelerate_config: str | None = None) -> list[str]:
    """The command that runs `python ENTRY...` in `num_processes` processes: `torchrun` on CPU (gloo;
    accelerate's own multi-CPU mode wants MPI), `accelerate launch` on CUDA (DDP, or FSDP/DeepSpeed through
    an accelerate config file, whose process count the arguments override)."""
    if not cuda:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                "--nproc_per_node", str(num_processes), *entry]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
           "--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no",
           "--main_process_port", str(free_port())]
    if accelerate_config:
        if not Path(accelerate_config).is_file():
            raise FileNotFoundError(f"training.accelerate_config: no such file {accelerate_config}")
        cmd += ["--config_file", str(Path(accelerate_config).resolve())]
    else:
        cmd += ["--multi_gpu"]
    return [*cmd, *entry]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(cmd: Sequence[str], *, env: dict[str, str], stdout_path: Path, stderr_path: Path,
              on_poll: Callable[[], None]) -> int:
    """Run `cmd` in a new session (its own process group), its output to the two files; call `on_poll` every
    POLL_SECONDS while it runs and once after it exits; return its exit code. Any exception (from `on_poll`,
    or an interrupt) stops the whole group before it propagates, so no worker is left behind."""
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            while True:
                rc = proc.poll()
                on_poll()
                if rc is not None:
                    return rc
                time.sleep(POLL_SECONDS)
        except BaseException:
            stop_group(proc)
            raise


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Stop the launcher and its workers (its own process group): SIGTERM, then SIGKILL after `grace`."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, chars: int = STDERR_TAIL_CHARS) -> str:
    """The last `chars` characters of a log file, or a note that there is none."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no stderr)"
    return text[-chars:].strip() or "(empty)"
