"""Start an entry point in several processes, watch it, stop it (see the package docstring)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

POLL_SECONDS = 0.5
STDERR_TAIL_CHARS = 4000


@dataclass(frozen=True)
class Nodes:
    """Several machines training together: how many, this one's rank, and the head node's (rank 0's)
    `host:port`, where the others meet it; `timeout_s` bounds the wait for the rendezvous."""

    count: int
    rank: int
    endpoint: str
    timeout_s: int = 300

    @property
    def host(self) -> str:
        return self.endpoint.rsplit(":", 1)[0]

    @property
    def port(self) -> str:
        return self.endpoint.rsplit(":", 1)[1]


def distributed_command(entry: Sequence[str], *, num_processes: int, cuda: bool, mixed_precision: str = "no",
                        accelerate_config: str | None = None, nodes: Nodes | None = None) -> list[str]:
    """The command that runs `python ENTRY...` in `num_processes` processes: `torchrun` on CPU (gloo;
    accelerate's own multi-CPU mode wants MPI), `accelerate launch` on CUDA (DDP, or FSDP/DeepSpeed through
    an accelerate config file, whose process and machine counts the arguments override).

    With `nodes`, this machine is node `nodes.rank` of `nodes.count`, each running `num_processes`: torchrun's
    static rendezvous at the head's endpoint (ranks follow node ranks, so global rank 0 is on the head node,
    where the caller reads its outputs; c10d's dynamic rendezvous would order nodes by address and process id),
    or accelerate's multi-machine launch with the head as main process."""
    if not cuda:
        if nodes is None:
            where = ["--standalone", "--nnodes", "1"]
        else:
            where = ["--nnodes", str(nodes.count), "--node_rank", str(nodes.rank), "--master_addr", nodes.host,
                     "--master_port", nodes.port, "--rdzv_conf", f"timeout={nodes.timeout_s}"]
        return [sys.executable, "-m", "torch.distributed.run", *where, "--nproc_per_node", str(num_processes),
                *entry]
    machines = ["--num_machines", "1", "--main_process_port", str(free_port())] if nodes is None else [
        "--num_machines", str(nodes.count), "--machine_rank", str(nodes.rank), "--main_process_ip", nodes.host,
        "--main_process_port", nodes.port]
    total = num_processes * (nodes.count if nodes else 1)  # accelerate counts processes over all machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(total), *machines,
           "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if accelerate_config:
        if not Path(accelerate_config).is_file():
            raise FileNotFoundError(f"training.accelerate_config: no such file {accelerate_config}")
        cmd += ["--config_file", str(Path(accelerate_config).resolve())]
    else:
        cmd += ["--multi_gpu"]
    return [*cmd, *entry]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def worker_env(threads: int, root: Path) -> dict[str, str]:
    """The environment of launched processes: this one's, their threads pinned, and `root` importable."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)}


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
