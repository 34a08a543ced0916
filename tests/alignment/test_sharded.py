"""Sharded training (training.sharding=fsdp2, alignment/training/sharding.py) on CPU: 2 torchrun processes on gloo with
the policy sharded by FSDP2 against 1 unsharded process on the same global batches (batch 2 x 2 processes ==
batch 4 x 1: `batch_indices` hands rank r the r-th half of the 1-process batch), per step; resume from a sharded
(DCP) checkpoint after a simulated crash, at the same and at another number of processes (2 -> 1), and of an
unsharded run's checkpoint in a sharded run (1 -> 2); DPO and LoRA under sharding; the config's refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from alignment.config import ConfigError, load_config
from alignment.records import ModelRef, PreparedData, TrainOutput
from alignment.stages import run_preference, run_sft
from alignment.training.tracking import InMemoryLogger
from tests.alignment.test_distributed import COMMON, assert_same_weights, workspace  # noqa: F401 (fixture)

LOSS_TOL = 1e-4
SHARDED = ["training.num_processes=2", "training.sharding=fsdp2"]


def losses(logger: InMemoryLogger) -> dict[int, float]:
    return {step: metrics["loss"] for step, metrics in logger.records}


def assert_same_losses(a: InMemoryLogger, b: InMemoryLogger, steps: range) -> float:
    """Per-step losses of `steps` agree within LOSS_TOL; returns the largest difference."""
    la, lb = losses(a), losses(b)
    assert set(steps) <= la.keys() and set(steps) <= lb.keys()
    worst = max(abs(la[s] - lb[s]) for s in steps)
    print(f"steps {steps.start}-{steps.stop - 1}: largest loss difference {worst:.2e}")
    assert worst < LOSS_TOL, {s: (la[s], lb[s]) for s in steps}
    return worst


def crash_after(out_dir: Path, step: int, into: Path) -> None:
    """A run that died right after writing its checkpoint at `step`: that checkpoint alone, no model."""
    shutil.rmtree(into, ignore_errors=True)
    (into / "checkpoints").mkdir(parents=True)
    shutil.copytree(out_dir / "checkpoints" / f"step-{step:07d}", into / "checkpoints" / f"step-{step:07d}")


def sft(cfg_overrides: list[str], prepared: PreparedData, base: ModelRef, out: Path) -> tuple[TrainOutput,
                                                                                             InMemoryLogger]:
    logger = InMemoryLogger()
    return run_sft(load_config(None, [*COMMON, *cfg_overrides]), prepared, base, out, logger), logger


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sharded_sft_matches_one_process_and_resumes_at_any_world_size(workspace) -> None:  # noqa: F811
    root, prepared, base = workspace
    one, one_log = sft(["sft.optim.batch_size=4"], prepared, base, root / "one")
    two, two_log = sft(["sft.optim.batch_size=2", *SHARDED], prepared, base, root / "sharded")
    steps = range(1, one.steps + 1)
    assert two.steps == one.steps
    assert_same_losses(one_log, two_log, steps)
    assert_same_weights(one.model.path, two.model.path, atol=1e-5)  # gathered to rank 0, saved whole
    assert two.tokens == one.tokens
    ckpt = root / "sharded" / "checkpoints" / "step-0000003"
    assert (ckpt / "dcp" / ".metadata").is_file() and (ckpt / "scheduler.pt").is_file()
    assert not (ckpt / "model.safetensors").exists()  # no full copy in a sharded checkpoint

    # 2 -> 2: crashed after step 3, resumed from its sharded checkpoint
    crash_after(root / "sharded", 3, root / "again")
    again, again_log = sft(["sft.optim.batch_size=2", *SHARDED], prepared, base, root / "again")
    assert again.resumed_from_step == 3
    assert_same_losses(two_log, again_log, range(4, one.steps + 1))
    # 2 -> 1: the sharded checkpoint resumed by one unsharded process (DCP without a process group)
    crash_after(root / "sharded", 3, root / "to-one")
    to_one, to_one_log = sft(["sft.optim.batch_size=4"], prepared, base, root / "to-one")
    assert to_one.resumed_from_step == 3
    assert_same_losses(one_log, to_one_log, range(4, one.steps + 1))
    assert_same_weights(one.model.path, to_one.model.path, atol=1e-5)
    assert (root / "to-one" / "checkpoints" / "step-0000006" / "model.safetensors").is_file()  # its own format
    # 1 -> 2: an unsharded run's checkpoint (accelerate's format) resumed sharded
    crash_after(root / "one", 3, root / "to-two")
    to_two, to_two_log = sft(["sft.optim.batch_size=2", *SHARDED], prepared, base, root / "to-two")
    assert to_two.resumed_from_step == 3
    assert_same_losses(one_log, to_two_log, range(4, one.steps + 1))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sharded_dpo_and_lora_match_one_process(workspace) -> None:  # noqa: F811
    """DPO against reference log-probs computed before the policy is sharded (rank 0 writes the cache, the
    other rank reads it), with LoRA adapters sharded with their layers and merged into the saved model, and
    activation checkpointing inside the sharded layers (the same values)."""
    root, prepared, base = workspace
    ref, _ = sft(["sft.optim.batch_size=4", "sft.optim.max_steps=2"], prepared, base, root / "dpo-ref")
    dpo = ["run.torch_threads=1", "dpo.optim.max_steps=3", "dpo.optim.log_every=1", "dpo.optim.learning_rate=1e-3",
           "training.lora.r=4"]
    one_log, two_log = InMemoryLogger(), InMemoryLogger()
    one = run_preference(load_config(None, [*dpo, "dpo.optim.batch_size=4"]), prepared, base, ref,
                         root / "dpo-one", one_log)
    sharded = [*dpo, "dpo.optim.batch_size=2", *SHARDED, "training.gradient_checkpointing=true"]
    two = run_preference(load_config(None, sharded), prepared, base, ref, root / "dpo-two", two_log)
    assert_same_losses(one_log, two_log, range(1, 4))
    margins = [(m1["rewards/margins"], m2["rewards/margins"]) for (_, m1), (_, m2) in
               zip(one_log.records, two_log.records, strict=True)]
    assert all(abs(a - b) < LOSS_TOL for a, b in margins), margins
    assert_same_weights(one.model.path, two.model.path, atol=1e-5)  # adapters merged in both
    assert not any("lora" in p.name for p in Path(two.model.path).iterdir())


def test_sharding_needs_several_processes_and_refuses_what_it_does_not_support() -> None:
    assert load_config(None, SHARDED).training.sharding == "fsdp2"
    assert load_config(None, [*SHARDED, "training.lora.r=8", "training.mixed_precision=bf16"])
    for extra, need in [(["training.num_processes=1"], r"num_nodes x num_processes > 1"),
                        (["training.compile=true"], "compile=false"),
                        (["training.mixed_precision=fp16"], "mixed_precision no or bf16"),
                        (["training.accelerate_config=infra/accelerate/fsdp.yaml"], "no accelerate_config")]:
        with pytest.raises(ConfigError, match=rf"training.*sharding=fsdp2 needs {need}"):
            load_config(None, [*SHARDED, *extra])
    with pytest.raises(ConfigError, match="training.sharding"):
        load_config(None, ["training.sharding=fsdp1"])
