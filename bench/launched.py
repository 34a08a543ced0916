"""Trials in several processes (`alignflow bench --variants ddp2,fsdp2`): alignflow's trainer in 2 torchrun
processes on the bench's global batches (each process half of every batch), the policy replicated (`ddp2`,
DDP) or sharded with FSDP2 (`fsdp2`, as `training.sharding=fsdp2`), started through the pipeline's launcher
(launcher/processes.py). Each process measures its own peak memory from just before its reference pass, as
a one-process trial does; the trial reports the largest process's (memory per process is what decides
whether a model fits a machine) and every process's figures under `per_process`. Time is the slowest
process's, with both processes sharing the trial's cores.

`python -m bench.launched SPEC_JSON OUT_DIR` is the entry point of each process; rank r writes
`OUT_DIR/rank-r.json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import torch

from alignment.kernels.host_memory import large_blocks_mapped
from bench.probe import MemoryProbe, load_model, pin_threads
from bench.trial import load_rows, mmap_threshold_mib, run_alignflow, with_throughput
from launcher.processes import distributed_command, tail, worker_env

LAUNCHED = {"ddp2": False, "fsdp2": True}  # variant -> policy sharded
PROCESSES = 2
REPO_ROOT = Path(__file__).resolve().parents[1]


def launched_entry(spec: dict[str, Any], result_path: str) -> None:
    """As bench.trial.trial_entry, for a trial whose trainer is one of LAUNCHED."""
    try:
        payload = {"ok": True, "result": run_launched_trial(spec, Path(result_path).with_suffix(".log"))}
    except Exception as err:  # reported to the parent, which shows it
        payload = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    Path(result_path).write_text(json.dumps(payload))


def run_launched_trial(spec: dict[str, Any], log_path: Path) -> dict[str, Any]:
    if spec["batch_size"] % PROCESSES:
        raise ValueError(f"batch {spec['batch_size']} does not split over {PROCESSES} processes")
    with tempfile.TemporaryDirectory(prefix="alignflow-bench-launched-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = distributed_command(["-m", "bench.launched", str(spec_path), tmp], num_processes=PROCESSES,
                                  cuda=spec["device"] == "cuda")
        with log_path.open("w") as log:
            rc = subprocess.run(cmd, env=worker_env(spec["threads"], REPO_ROOT), stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0:
            raise RuntimeError(f"{spec['trainer']}: the {PROCESSES} processes failed (exit {rc})\n{tail(log_path)}")
        ranks = [json.loads((Path(tmp) / f"rank-{r}.json").read_text()) for r in range(PROCESSES)]
    largest = max(ranks, key=lambda r: r["rss_peak_mib"])
    keys = ("rss_baseline_mib", "rss_peak_mib", "rss_growth_mib", "rss_peak_reset")
    return with_throughput({"seconds": max(r["seconds"] for r in ranks), "ref_s": max(r["ref_s"] for r in ranks), "init_s": 0.0,
            "checkpoint_s": max(r["checkpoint_s"] for r in ranks), "final_loss": ranks[0]["final_loss"],
            "steps_done": ranks[0]["steps_done"], **{k: largest[k] for k in keys}, "processes": PROCESSES,
            "per_process": [{"rank": i, **{k: r[k] for k in keys}} for i, r in enumerate(ranks)]},
        spec, load_rows(spec))


def worker(spec_path: Path, out_dir: Path) -> None:
    """One process of a launched trial: its share of every batch, its own memory."""
    from accelerate import Accelerator
    from transformers import AutoTokenizer

    spec = json.loads(spec_path.read_text())
    pin_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    accelerator = Accelerator(cpu=spec["device"] != "cuda")
    variant = spec["trainer"].partition("+")[2]
    with large_blocks_mapped(mmap_threshold_mib(spec["trainer"], spec["method"]), torch.device(spec["device"])):
        tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
        model = load_model(spec["model_dir"], spec["device"])
        pairs = load_rows(spec)
        per_process = dict(spec, batch_size=spec["batch_size"] // accelerator.num_processes)
        with tempfile.TemporaryDirectory(prefix="alignflow-bench-rank-") as tmp:
            out = run_alignflow(per_process, model, pairs, tokenizer.pad_token_id, MemoryProbe(spec["device"]),
                                Path(tmp), accelerator=accelerator, sharded=LAUNCHED[variant])
    (out_dir / f"rank-{accelerator.process_index}.json").write_text(json.dumps(out))
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    worker(Path(sys.argv[1]), Path(sys.argv[2]))
