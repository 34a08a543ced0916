"""What every trial process measures with and starts from: torch threads pinned, peak memory (CPU: VmHWM after a
reset; GPU: peak allocated), and the model loaded in fp32 on its device. Shared by the training trials
(bench/trial.py) and the generation trial (bench/generation.py)."""

from __future__ import annotations

import resource
from typing import Any

import torch


def pin_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def read_status_kib() -> dict[str, int]:
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class MemoryProbe:
    """Peak memory from `start()` on: VmHWM after a reset (CPU), max_memory_allocated (GPU)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.reset_ok = False
        self.baseline_kib = 0

    def start(self) -> None:
        import gc

        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
                fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)
            self.reset_ok = True
        except OSError:
            self.reset_ok = False
        self.baseline_kib = read_status_kib().get("VmRSS", 0)
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.gpu_baseline = torch.cuda.memory_allocated()

    def result(self) -> dict[str, Any]:
        status = read_status_kib()
        peak_kib = status.get("VmHWM", 0) if self.reset_ok else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = {"rss_baseline_mib": self.baseline_kib / 1024, "rss_peak_mib": peak_kib / 1024,
               "rss_growth_mib": (peak_kib - self.baseline_kib) / 1024, "rss_peak_reset": self.reset_ok}
        if self.device == "cuda":
            torch.cuda.synchronize()
            out["gpu_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
            out["gpu_growth_allocated_mib"] = (torch.cuda.max_memory_allocated() - self.gpu_baseline) / 2**20
        return out


def load_model(path: str, device: str) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device)
