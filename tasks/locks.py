"""One pipeline run per output directory at a time.

Stage folders, caches and the summary under `run.output_dir` are written by one run; a second run started on
the same directory while the first is alive is refused at once (naming the holder), instead of interleaving
writes. The lock is an advisory `flock` on `<output_dir>/.alignflow.lock`: the kernel drops it when its
process ends, however it ends (kill -9 included), so a crashed run never leaves a stale lock behind. Runs on
different output directories share nothing but content-keyed caches (identical content under one key).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".alignflow.lock"
_held: dict[Path, int] = {}  # lock files this process holds, with their nesting depth (the CLI, then the flow)


class RunInProgressError(RuntimeError):
    """Another live run holds the output directory."""


@contextlib.contextmanager
def output_dir_lock(output_dir: str | Path) -> Iterator[Path]:
    path = Path(output_dir)
    path.mkdir(parents=True, exist_ok=True)
    lock = (path / LOCK_NAME).resolve()
    if lock in _held:  # re-entered by the holder itself
        _held[lock] += 1
        try:
            yield lock
        finally:
            _held[lock] -= 1
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunInProgressError(
                f"run.output_dir {path} is in use by a running pipeline ({holder}); wait for it to finish or "
                f"choose another run.output_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        _held[lock] = 1
        try:
            yield lock
        finally:
            del _held[lock]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
