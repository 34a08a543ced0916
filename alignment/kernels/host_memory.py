"""How CPU training hands memory back to the OS (glibc's allocator; elsewhere these functions do nothing).

Two settings, both measured at SmolLM2-135M's size in docs/performance.md:

* `release_free_memory`: `malloc_trim` after each step returns the heap's free pages.
* `large_blocks_mapped`: while training, every allocation of `threshold_mib` or more gets its own memory
  mapping (`mallopt(M_MMAP_THRESHOLD)`), unmapped when freed. glibc's default threshold adapts upwards to
  32 MiB once such a block has been freed, so a step's activations and temporaries land in the heap, among
  longer-lived tensors (gradients, optimizer state); the heap then fragments, freed activations stay
  resident, and the next step's do not fit in the holes. Tensors of this size are touched end to end, so the
  extra cost is the page faults of fresh mappings.

And one set before the process allocates its first tensor:

* `request_huge_pages`: torch's CPU allocator (c10's alloc_cpu, torch >= 2.2) aligns every block of 2 MiB or
  more to a page and asks the kernel for transparent huge pages there (madvise MADV_HUGEPAGE) when the
  environment has `THP_MEM_ALLOC_ENABLE=1`. A fresh block then costs one page fault per 2 MiB instead of one
  per 4 KiB page; where the kernel's THP mode is `madvise` (the usual default) nothing else asks for them.
  torch reads the variable once, at the process's first tensor allocation, so `alignflow` sets it as it
  starts (flows/cli.py), and the processes it starts (the stack's Prefect workers and their flow runs, the
  bench's trials, TRL's among them) inherit it. Measured in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a tensor is made: `alignflow` sets its allocator switch first
    import torch

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# glibc's ceiling for its adaptive threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): the value the adaptive
# threshold reaches once a block of that size has been freed, which torch workloads do in their first step
GLIBC_ADAPTIVE_MAX = 32 * 1024 * 1024
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # set by the user: glibc applied it at start, and it is left alone
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"  # torch's switch (c10/core/alloc_cpu.cpp); "0" from the user turns it off
HUGE_PAGE = 2 * 1024 * 1024


@functools.cache
def _libc() -> Any:
    """The C library when it is glibc (it has malloc_trim and mallopt), else None."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None
    return libc


def release_free_memory(device: torch.device) -> None:
    """Hand the heap's free pages back to the OS after a CPU step (glibc's malloc_trim; elsewhere nothing).

    glibc keeps freed memory in its heap, and the optimizer's state, allocated in the first step amid the freed
    activations, splits that free space: the next steps' activations no longer fit in it and grow the heap,
    so the process holds the previous steps' activation memory on top of the current ones. Measured on DPO at
    SmolLM2-135M's shape (docs/performance.md), this was ~1.2 GB of the peak resident set; trimming once per
    step returns it and costs a madvise call and the page faults of touching that memory again."""
    libc = _libc() if device.type == "cpu" else None
    if libc is not None:
        libc.malloc_trim(0)


def set_mmap_threshold(nbytes: int) -> bool:
    """glibc's M_MMAP_THRESHOLD; False where there is no glibc (or it refused the value)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(nbytes)))


@contextmanager
def large_blocks_mapped(threshold_mib: int | None, device: torch.device) -> Iterator[bool]:
    """While the block runs on CPU, allocations of `threshold_mib` MiB or more are memory-mapped and unmapped
    when freed (None: glibc's default). Yields whether the setting took effect. The threshold is process-wide;
    afterwards it is set to 32 MiB, where glibc's adaptive threshold would stand (the adaptation itself stays
    off once the threshold has been set, as with glibc's environment variable). A `MALLOC_MMAP_THRESHOLD_` in
    the environment wins: nothing is changed."""
    if threshold_mib is None or device.type != "cpu" or os.environ.get(ENV_OVERRIDE):
        yield False
        return
    applied = set_mmap_threshold(threshold_mib * 1024 * 1024)
    if not applied:
        log.debug("no glibc mallopt here: training.cpu_mmap_threshold_mib has no effect")
    try:
        yield applied
    finally:
        if applied:
            set_mmap_threshold(GLIBC_ADAPTIVE_MAX)


def request_huge_pages(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Ask torch's CPU allocator for transparent huge pages (module docstring): sets `THP_MEM_ALLOC_ENABLE=1`
    in `environ` unless it is already set (a user's "0" is kept). Takes effect only in a process that has not
    allocated a tensor yet, and in the processes started after it. Returns whether it is requested."""
    environ.setdefault(HUGE_PAGES_ENV, "1")
    return environ[HUGE_PAGES_ENV].strip() not in ("", "0")


def huge_pages_in_use() -> bool:
    """Whether torch's allocator asks for huge pages in this process: it then page-aligns its blocks of 2 MiB or
    more (glibc alone hands out mapped blocks 16 bytes into a page, torch's 64-byte alignment 64). Whether the
    kernel grants them is its THP mode's say."""
    import torch

    probe = torch.empty(HUGE_PAGE // 4 + 1024)  # a little over 2 MiB of float32
    return probe.data_ptr() % os.sysconf("SC_PAGESIZE") == 0
