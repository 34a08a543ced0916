"""Multi-process training: the parent runs `python -m alignment.worker STAGE SPEC_JSON` once per device.

`run_sft` / `run_preference` call `launch_training` when `cfg.training.num_processes > 1`. The parent writes a
JSON spec (the config, the input records, the output folder) and starts the workers through the launcher
(launcher/processes.py: `accelerate launch` on CUDA — DDP, or FSDP/DeepSpeed through
`training.accelerate_config` — `torchrun` on CPU, in their own process group); while they run it tails the
JSONL metrics file rank 0 writes and forwards every record to its own logger. Rank 0 writes the stage's
`TrainOutput` to a result file, which the parent returns.

Every process runs the same stage function as the in-process path, with its `Accelerator` passed in
(alignment/worker.py); `make_accelerator` and `save_trained_model` are shared by both paths.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from alignment.config import PipelineConfig, TrainingConfig
from alignment.models.loading import plain_model
from alignment.records import ModelRef, PreparedData, ProgressCallback, TrainOutput
from alignment.training.sharding import is_sharded, save_sharded_model
from alignment.training.tracking import MetricsLogger, NullLogger, read_new_records
from launcher.processes import Nodes, distributed_command, run_group, tail, worker_env

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STAGES = ("sft", "preference")
REPO_ROOT = Path(__file__).resolve().parents[2]  # where `alignment.worker` is importable from
WORKER = "alignment.worker"  # the entry point every process runs: `python -m alignment.worker STAGE SPEC_JSON`


def make_accelerator(training: TrainingConfig) -> Accelerator:
    """CUDA when available, else CPU (gloo when launched with several processes). Every collective waits at
    most `training.node_timeout_s` for the other processes, so a process whose peer died (a node lost) fails
    within that time instead of hanging; gloo usually fails at once, when the peer's connection drops."""
    timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=training.node_timeout_s))
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=training.mixed_precision,
                       kwargs_handlers=[timeout])


def save_trained_model(accelerator: Accelerator, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """Save the trained model as a Hugging Face directory from the main process only, once every process is
    done: the full state dict is gathered through the accelerator (collective under FSDP/DeepSpeed), the
    model unwrapped (LoRA adapters merged, alignment.models.loading.plain_model), written to a temporary folder and
    renamed."""
    accelerator.wait_for_everyone()
    if is_sharded(model):  # FSDP2 (training.sharding): full state dict gathered to rank 0's CPU
        save_sharded_model(model, tokenizer, out_dir, accelerator.is_main_process)
        accelerator.wait_for_everyone()
        return out_dir
    unwrapped = accelerator.unwrap_model(model)
    adapted = hasattr(getattr(unwrapped, "_orig_mod", unwrapped), "merge_and_unload")  # LoRA (single/DDP)
    state_dict = None if adapted else accelerator.get_state_dict(model)
    if state_dict is not None:  # a compiled model's names carry its wrapper's prefix
        state_dict = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
    if accelerator.is_main_process:
        tmp = out_dir.with_name(f".tmp-{out_dir.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        plain_model(unwrapped).save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    accelerator.wait_for_everyone()
    return out_dir


# ---- parent ----------------------------------------------------------------------------------------------


def build_command(stage: str, cfg: PipelineConfig, spec_path: Path, *, cuda: bool | None = None) -> list[str]:
    """`accelerate launch` on CUDA, `torchrun` on CPU; both run the module `alignment.worker`."""
    t = cfg.training
    nodes = None if t.node is None else Nodes(count=t.num_nodes, rank=t.node.rank, endpoint=t.node.endpoint,
                                              timeout_s=round(t.node_timeout_s))
    return distributed_command(["-m", WORKER, stage, str(spec_path)], num_processes=t.num_processes,
                               cuda=torch.cuda.is_available() if cuda is None else cuda,
                               mixed_precision=t.mixed_precision, accelerate_config=t.accelerate_config, nodes=nodes)


def launch_training(stage: str, cfg: PipelineConfig, *, prepared: PreparedData, base: ModelRef,
                    sft: TrainOutput | None = None, out_dir: Path, logger: MetricsLogger,
                    on_log: ProgressCallback | None = None) -> TrainOutput:
    """Run `stage` ("sft" | "preference") in `cfg.training.num_processes` processes and return its output.

    On the head node of a multi-node stage (`cfg.training.node.rank` 0) these processes meet the other nodes'
    (started by `join_training` there) at the head's endpoint, and the head's rank-0 process, global rank 0,
    writes the output. Metrics logged by rank 0 reach `logger` (and `on_log`) while training runs. Raises
    RuntimeError with the tail of the processes' stderr if the launch fails."""
    node = cfg.training.node
    if node is not None and node.rank != 0:
        raise ValueError(f"node {node.rank} of a multi-node stage joins the head's training: join_training")
    result_path = _run_processes(stage, cfg, prepared=prepared, base=base, sft=sft, out_dir=out_dir, logger=logger,
                                 on_log=on_log)
    if not result_path.is_file():
        raise RuntimeError(f"{stage} training exited 0 but wrote no result ({result_path})\n"
                           f"--- stderr (tail) ---\n{tail(result_path.with_name('stderr.log'))}")
    return TrainOutput.model_validate_json(result_path.read_text())


def join_training(stage: str, cfg: PipelineConfig, *, prepared: PreparedData, base: ModelRef,
                  sft: TrainOutput | None = None, out_dir: Path) -> None:
    """On node `cfg.training.node.rank` > 0 of a multi-node stage: run this node's processes of the head's
    training (they rendezvous at `cfg.training.node.endpoint`) and return once they are done; `out_dir` is the
    stage folder every node shares, where the head's rank 0 writes the outputs. Raises RuntimeError naming the
    node when its processes fail (a peer lost, the rendezvous timed out)."""
    node = cfg.training.node
    if node is None or node.rank == 0:
        raise ValueError("join_training runs on a node of rank > 0 (training.node); the head runs launch_training")
    _run_processes(stage, cfg, prepared=prepared, base=base, sft=sft, out_dir=out_dir, logger=NullLogger(),
                   on_log=None)


def _run_processes(stage: str, cfg: PipelineConfig, *, prepared: PreparedData, base: ModelRef,
                   sft: TrainOutput | None, out_dir: Path, logger: MetricsLogger,
                   on_log: ProgressCallback | None) -> Path:
    """Start this machine's processes of `stage` and wait for them; returns where global rank 0 writes its
    result. Each node keeps its launch files (spec, logs, metrics) in its own folder of the shared stage folder."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    out_dir = Path(out_dir).resolve()
    node = cfg.training.node
    work = out_dir / "launch" if node is None else out_dir / "launch" / f"node-{node.rank}"
    work.mkdir(parents=True, exist_ok=True)
    metrics_path, result_path = work / "metrics.jsonl", work / "result.json"
    stdout_path, stderr_path = work / "stdout.log", work / "stderr.log"
    for stale in (metrics_path, result_path):
        stale.unlink(missing_ok=True)
    spec = {"config": cfg.model_dump(mode="json"), "prepared": prepared.model_dump(mode="json"),
            "base": base.model_dump(mode="json"), "sft": sft.model_dump(mode="json") if sft else None,
            "out_dir": str(out_dir), "metrics_path": str(metrics_path), "result_path": str(result_path)}
    spec_path = work / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    cmd = build_command(stage, cfg, spec_path)
    rc = run_group(cmd, env=worker_env(cfg.run.torch_threads, REPO_ROOT), stdout_path=stdout_path, stderr_path=stderr_path,
                   on_poll=MetricsForwarder(metrics_path, logger, on_log))
    if rc != 0:
        where = "" if node is None else f" on node {node.rank} of {cfg.training.num_nodes}"
        raise RuntimeError(f"{stage} training with {cfg.training.num_processes} processes{where} failed (exit {rc}); "
                           f"command: {' '.join(cmd)}\n--- stderr (tail) ---\n{tail(stderr_path)}")
    return result_path


class MetricsForwarder:
    """Called on every poll of the launched group: forward the JSONL records rank 0 wrote since the last call."""

    def __init__(self, path: Path, logger: MetricsLogger, on_log: ProgressCallback | None) -> None:
        self.path, self.logger, self.on_log = path, logger, on_log
        self.offset, self.last_metrics = 0, {}

    def __call__(self) -> None:
        records, self.offset = read_new_records(self.path, self.offset)
        for record in records:
            self.last_metrics = forward_record(record, self.logger, self.on_log, self.last_metrics)


def forward_record(record: dict[str, Any], logger: MetricsLogger, on_log: ProgressCallback | None,
                   last_metrics: dict[str, float]) -> dict[str, float]:
    if record.get("kind") == "metrics":
        logger.log_metrics(record["metrics"], step=record.get("step"))
        return record["metrics"]
    if record.get("kind") == "progress" and on_log is not None:
        on_log(record["step"], record["total"], last_metrics)
    return last_metrics
