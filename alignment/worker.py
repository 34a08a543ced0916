"""The entry point of every process of a multi-process training run (alignment/training/distributed.py starts it):
`python -m alignment.worker {sft|preference} SPEC_JSON`. It runs the same stage function as the in-process
path, with this process's `Accelerator`; rank 0 writes the metrics file and the result record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignment import stages
from alignment.config import PipelineConfig
from alignment.records import ModelRef, PreparedData, TrainOutput
from alignment.runtime import setup_runtime
from alignment.training.distributed import STAGES, make_accelerator
from alignment.training.tracking import JsonlMetricsLogger, MetricsLogger, NullLogger


def run_worker(stage: str, spec_path: Path) -> None:
    spec = json.loads(Path(spec_path).read_text())
    cfg = PipelineConfig.model_validate(spec["config"])
    setup_runtime(cfg.run.seed, cfg.run.torch_threads)
    acc = make_accelerator(cfg.training)
    main = acc.is_main_process
    jsonl = JsonlMetricsLogger(spec["metrics_path"]) if main else None
    logger: MetricsLogger = jsonl or NullLogger()
    on_log = jsonl.log_progress if jsonl else None
    prepared = PreparedData.model_validate(spec["prepared"])
    base = ModelRef.model_validate(spec["base"])
    out_dir = Path(spec["out_dir"])
    if stage == "sft":
        out = stages.run_sft(cfg, prepared, base, out_dir, logger, on_log, accelerator=acc)
    else:
        sft = TrainOutput.model_validate(spec["sft"]) if spec.get("sft") else None
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
        print(f"usage: python -m alignment.worker {{{'|'.join(STAGES)}}} SPEC_JSON", file=sys.stderr)
        return 2
    run_worker(args[0], Path(args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
