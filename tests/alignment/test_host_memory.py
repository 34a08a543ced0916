"""CPU training's allocator settings (alignment/kernels/host_memory.py), checked through glibc's own counters: the
number of memory-mapped blocks (mallinfo2's hblks) goes up by one for a 2 MiB tensor exactly when the mmap
threshold is below 2 MiB."""

import os
import subprocess
import sys

import pytest
import torch

from alignment.config import TrainingConfig
from alignment.kernels import host_memory

MIB = 1024 * 1024


glibc = pytest.mark.skipif(host_memory._libc() is None or not hasattr(host_memory._libc(), "mallinfo2"),
                           reason="needs glibc >= 2.33 (mallopt, mallinfo2)")


# Run in a fresh interpreter: glibc serves a request from a free chunk of the heap whatever the threshold, so
# in a process that has freed large blocks before (this test session) the count would depend on its history.
PROBE = """
import ctypes, os, sys, torch
from alignment.kernels import host_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                                 "fordblks keepcost").split()]
libc = host_memory._libc()
libc.mallinfo2.restype = MallInfo2
def maps_2mib():
    before = libc.mallinfo2().hblks
    tensor = torch.empty(2 * 1024 * 1024 // 4)
    mapped = libc.mallinfo2().hblks - before
    del tensor
    return mapped == 1
threshold = int(sys.argv[1])
with host_memory.large_blocks_mapped(threshold, torch.device("cpu")) as applied:
    inside = maps_2mib()
print(applied, inside, maps_2mib())
"""


def probe(threshold_mib: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV_OVERRIDE}
    done = subprocess.run([sys.executable, "-c", PROBE, str(threshold_mib)], capture_output=True, text=True,
                          env=env, check=True)
    return done.stdout.strip()


@glibc
def test_large_blocks_are_mapped_inside_and_not_after():
    # inside: a 2 MiB tensor is a mapping of its own; after: back at 32 MiB, where glibc's adaptive threshold
    # stands once a large block has been freed, it comes from the heap
    assert probe(1) == "True True False"


@glibc
def test_threshold_above_the_block_leaves_it_in_the_heap():
    assert probe(4) == "True False False"


@pytest.mark.parametrize("threshold, device", [(None, "cpu"), (1, "meta")])
def test_off_or_not_on_cpu_changes_nothing(monkeypatch, threshold, device):
    calls = []
    monkeypatch.setattr(host_memory, "set_mmap_threshold", calls.append)
    with host_memory.large_blocks_mapped(threshold, torch.device(device)) as applied:
        assert not applied
    assert calls == []


def test_the_environment_variable_wins(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "set_mmap_threshold", calls.append)
    monkeypatch.setenv(host_memory.ENV_OVERRIDE, "4194304")
    with host_memory.large_blocks_mapped(1, torch.device("cpu")) as applied:
        assert not applied
    assert calls == []


def test_restored_even_when_training_fails(monkeypatch):
    calls = []
    monkeypatch.delenv(host_memory.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(host_memory, "set_mmap_threshold", lambda n: calls.append(n) or True)
    with pytest.raises(RuntimeError, match="boom"), host_memory.large_blocks_mapped(2, torch.device("cpu")):
        raise RuntimeError("boom")
    assert calls == [2 * MIB, host_memory.GLIBC_ADAPTIVE_MAX]


def test_config_default_and_bounds():
    auto = TrainingConfig()
    assert auto.cpu_mmap_threshold_mib == "auto"  # 1 MiB for the preference stage, glibc's default for SFT
    assert (auto.mmap_threshold_mib("preference"), auto.mmap_threshold_mib("sft")) == (1, None)
    for value in (None, 1, 32):  # set: the same in both stages
        training = TrainingConfig(cpu_mmap_threshold_mib=value)
        assert training.mmap_threshold_mib("sft") == training.mmap_threshold_mib("preference") == value
    for bad in (0, 33, "big"):
        with pytest.raises(ValueError):
            TrainingConfig(cpu_mmap_threshold_mib=bad)


def test_request_huge_pages_sets_the_switch_unless_the_user_did() -> None:
    environ: dict[str, str] = {}
    assert host_memory.request_huge_pages(environ) and environ == {"THP_MEM_ALLOC_ENABLE": "1"}
    off = {"THP_MEM_ALLOC_ENABLE": "0"}
    assert not host_memory.request_huge_pages(off) and off == {"THP_MEM_ALLOC_ENABLE": "0"}  # the user's "0" kept


HUGE_PAGES_PROBE = """
import os, sys
from alignment.kernels import host_memory
print(host_memory.huge_pages_in_use())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torch asks for huge pages on Linux only")
@pytest.mark.parametrize(("value", "expected"), [("1", "True"), ("0", "False")])
def test_torch_allocator_follows_the_switch(value: str, expected: str) -> None:
    """The installed torch still reads THP_MEM_ALLOC_ENABLE: with it, blocks of 2 MiB or more are page-aligned
    (what it does before madvise MADV_HUGEPAGE); without, they are not (glibc's mapped blocks start 16 bytes in)."""
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": value}
    out = subprocess.run([sys.executable, "-c", HUGE_PAGES_PROBE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_alignflow_sets_the_switch_before_a_command_runs() -> None:
    """`alignflow` requests huge pages before dispatching, so every command's processes inherit it."""
    probe = ("import os, sys\nfrom flows import cli\n"
             "cli.COMMANDS['config'] = lambda args: print(os.environ.get('THP_MEM_ALLOC_ENABLE')) or 0\n"
             "sys.exit(cli.main(['config']))\n")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
