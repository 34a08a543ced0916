"""Multi-process training: the parent launches `python -m alignment.launch STAGE SPEC_JSON` once per device.

`run_sft` / `run_preference` call `launch_training` when `cfg.training.num_processes > 1`. The parent writes a
JSON spec (the config, the input records, the output folder), starts the processes in their own process
group — `accelerate launch` on CUDA (DDP, or FSDP/DeepSpeed through `training.accelerate_config`),
`torchrun` on CPU (gloo; accelerate's own multi-CPU mode wants MPI) — and, while they run, tails the JSONL
metrics file rank 0 writes and forwards every record to its own logger. Rank 0 writes the stage's
`TrainOutput` to a result file, which the parent returns.

Every process runs the same stage function as the in-process path, with its `Accelerator` passed in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator

from alignment.config import PipelineConfig, TrainingConfig
from alignment.models import plain_model
from alignment.tracking import JsonlMetricsLogger, MetricsLogger, NullLogger, read_new_records

if TYPE_CHECKING:
    from alignment.stages import ModelRef, PreparedData, ProgressCallback, TrainOutput

STAGES = ("sft", "preference")
POLL_SECONDS = 0.5
STDERR_TAIL_CHARS = 4000


def make_accelerator(training: TrainingConfig) -> Accelerator:
    """CUDA when available, else CPU (gloo when launched with several processes)."""
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=training.mixed_precision)


def save_trained_model(accelerator: Accelerator, model: torch.nn.Module, tokenizer: Any, out_dir: Path) -> Path:
    """Save the trained model as a Hugging Face directory from the main process only, once every process is
    done: the full state dict is gathered through the accelerator (collective under FSDP/DeepSpeed), the
    model unwrapped (LoRA adapters merged, alignment.models.plain_model), written to a temporary folder and
    renamed."""
    accelerator.wait_for_everyone()
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
    """`accelerate launch` on CUDA, `torchrun` on CPU; both run the module `alignment.launch`."""
    t = cfg.training
    cuda = torch.cuda.is_available() if cuda is None else cuda
    entry = ["-m", "alignment.launch", stage, str(spec_path)]
    if not cuda:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                "--nproc_per_node", str(t.num_processes), *entry]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(t.num_processes),
           "--num_machines", "1", "--mixed_precision", t.mixed_precision, "--dynamo_backend", "no",
           "--main_process_port", str(free_port())]
    if t.accelerate_config:
        if not Path(t.accelerate_config).is_file():
            raise FileNotFoundError(f"training.accelerate_config: no such file {t.accelerate_config}")
        cmd += ["--config_file", str(Path(t.accelerate_config).resolve())]
    else:
        cmd += ["--multi_gpu"]
    return [*cmd, *entry]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_training(stage: str, cfg: PipelineConfig, *, prepared: PreparedData, base: ModelRef,
                    sft: TrainOutput | None = None, out_dir: Path, logger: MetricsLogger,
                    on_log: ProgressCallback | None = None) -> TrainOutput:
    """Run `stage` ("sft" | "preference") in `cfg.training.num_processes` processes and return its output.

    Metrics logged by rank 0 reach `logger` (and `on_log`) while training runs. Raises RuntimeError with the
    tail of the processes' stderr if the launch fails."""
    from alignment.stages import TrainOutput

    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    out_dir = Path(out_dir).resolve()
    work = out_dir / "launch"
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
    threads = str(cfg.run.torch_threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]),
                                                     os.environ.get("PYTHONPATH")) if p)}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
        try:
            rc = forward_until_exit(proc, metrics_path, logger, on_log)
        except BaseException:
            stop_group(proc)
            raise
    if rc != 0:
        raise RuntimeError(f"{stage} training with {cfg.training.num_processes} processes failed (exit {rc}); "
                           f"command: {' '.join(cmd)}\n--- stderr (tail) ---\n{tail(stderr_path)}")
    if not result_path.is_file():
        raise RuntimeError(f"{stage} training exited 0 but wrote no result ({result_path})\n"
                           f"--- stderr (tail) ---\n{tail(stderr_path)}")
    return TrainOutput.model_validate_json(result_path.read_text())


def forward_until_exit(proc: subprocess.Popen, metrics_path: Path, logger: MetricsLogger,
                       on_log: ProgressCallback | None) -> int:
    """Forward new JSONL records until the process exits, then the rest; returns its exit code."""
    offset, last_metrics = 0, {}
    while True:
        rc = proc.poll()
        records, offset = read_new_records(metrics_path, offset)
        for record in records:
            last_metrics = forward_record(record, logger, on_log, last_metrics)
        if rc is not None:
            return rc
        time.sleep(POLL_SECONDS)


def forward_record(record: dict[str, Any], logger: MetricsLogger, on_log: ProgressCallback | None,
                   last_metrics: dict[str, float]) -> dict[str, float]:
    if record.get("kind") == "metrics":
        logger.log_metrics(record["metrics"], step=record.get("step"))
        return record["metrics"]
    if record.get("kind") == "progress" and on_log is not None:
        on_log(record["step"], record["total"], last_metrics)
    return last_metrics


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
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no stderr)"
    return text[-chars:].strip() or "(empty)"


# ---- every process ---------------------------------------------------------------------------------------


def run_worker(stage: str, spec_path: Path) -> None:
    from alignment import stages
    from alignment.runtime import setup_runtime

    spec = json.loads(Path(spec_path).read_text())
    cfg = PipelineConfig.model_validate(spec["config"])
    setup_runtime(cfg.run.seed, cfg.run.torch_threads)
    acc = make_accelerator(cfg.training)
    main = acc.is_main_process
    jsonl = JsonlMetricsLogger(spec["metrics_path"]) if main else None
    logger: MetricsLogger = jsonl or NullLogger()
    on_log = jsonl.log_progress if jsonl else None
    prepared = stages.PreparedData.model_validate(spec["prepared"])
    base = stages.ModelRef.model_validate(spec["base"])
    out_dir = Path(spec["out_dir"])
    if stage == "sft":
        out = stages.run_sft(cfg, prepared, base, out_dir, logger, on_log, accelerator=acc)
    else:
        sft = stages.TrainOutput.model_validate(spec["sft"]) if spec.get("sft") else None
        out = stages.run_preference(cfg, prepared, base, sft, out_dir, logger, on_log, accelerator=acc)
    if main:
        result = Path(spec["result_path"])
        tmp = result.with_suffix(".tmp")
        tmp.write_text(out.model_dump_json(indent=1))
        tmp.replace(result)
    acc.wait_for_everyone()
    acc.end_training()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in STAGES:
        print(f"usage: python -m alignment.launch {{{'|'.join(STAGES)}}} SPEC_JSON", file=sys.stderr)
        return 2
    run_worker(args[0], Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
