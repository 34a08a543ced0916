"""How CPU training hands memory back to the OS (glibc's allocator; elsewhere these functions do nothing).

Two settings, both measured at SmolLM2-135M's size in docs/performance.md:

* `release_free_memory`: `malloc_trim` after each step returns the heap's free pages.
* `large_blocks_mapped`: while training, every allocation of `threshold_mib` or more gets its own memory
  mapping (`mallopt(M_MMAP_THRESHOLD)`), unmapped when freed. glibc's default threshold adapts upwards to
  32 MiB once such a block has been freed, so a step's activations and temporaries land in the heap, among
  longer-lived tensors (gradients, optimizer state); the heap then fragments, freed activations stay
  resident, and the next step's do not fit in the holes. Tensors of this size are touched end to end, so the
  extra cost is the page faults of fresh mappings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# glibc's ceiling for its adaptive threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): the value the adaptive
# threshold reaches once a block of that size has been freed, which torch workloads do in their first step
GLIBC_ADAPTIVE_MAX = 32 * 1024 * 1024
ENV_OVERRIDE = "MALLOC_MMAP_THRESHOLD_"  # set by the user: glibc applied it at start, and it is left alone


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
