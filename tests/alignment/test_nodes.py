"""Two nodes on loopback (alignment/training/distributed.py launch_training on the head, join_training on node 1;
torchrun's static rendezvous at the head's endpoint), one process each, the policy sharded with FSDP2: the same
per-step losses as one process on the same global batches; node 1 killed mid-run stops the head within the
node timeout with an error naming the node, and both nodes started again resume from the sharded checkpoint
to the uninterrupted run's losses. The Prefect side (one flow run per node on a work pool) is
tests/integration/test_nodes_stack.py."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from alignment.config import ConfigError, NodePlacement, PipelineConfig, TrainingConfig, load_config
from alignment.records import ModelRef, PreparedData, TrainOutput
from alignment.stages import run_preference, run_sft
from alignment.training.distributed import join_training
from alignment.training.tracking import InMemoryLogger
from launcher.processes import free_port
from tests.alignment.test_distributed import COMMON, workspace  # noqa: F401 (fixture)
from tests.alignment.test_sharded import assert_same_losses, sft

TWO_NODES = ["training.num_nodes=2", "training.num_processes=1", "training.sharding=fsdp2",
             "training.pool=nodes", "training.node_timeout_s=30"]


def on_two_nodes(overrides: list[str], stage: str, prepared: PreparedData, base: ModelRef, out: Path,
                 sft_out: TrainOutput | None = None, kill_node1_at: int | None = None) -> tuple[TrainOutput, InMemoryLogger]:
    """Run `stage` on two nodes of this machine: node 1 joins from a thread, the head runs in this one. With
    `kill_node1_at`, node 1's processes are killed (SIGKILL) once the checkpoint of that step is written."""
    endpoint = f"127.0.0.1:{free_port()}"
    cfg = load_config(None, [*COMMON, *overrides, *TWO_NODES])
    head = cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"pool": None, "node": NodePlacement(rank=0, endpoint=endpoint)})})
    node1 = cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"pool": None, "node": NodePlacement(rank=1, endpoint=endpoint)})})
    errors: list[BaseException] = []

    def join() -> None:
        try:
            join_training(stage, node1, prepared=prepared, base=base, sft=sft_out, out_dir=out)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    joiner = threading.Thread(target=join)
    joiner.start()
    if kill_node1_at is not None:
        threading.Thread(target=kill_node1_once, args=(out, kill_node1_at), daemon=True).start()
    logger = InMemoryLogger()
    try:
        if stage == "sft":
            result = run_sft(head, prepared, base, out, logger)
        else:
            result = run_preference(head, prepared, base, sft_out, out, logger)
    finally:
        joiner.join(timeout=120)
    if errors:
        raise errors[0]
    return result, logger


def kill_node1_once(out: Path, step: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "checkpoints" / f"step-{step:07d}").is_dir():
            break
        time.sleep(0.05)
    spec = str(out.resolve() / "launch" / "node-1" / "spec.json")
    for proc in psutil.Process().children(recursive=True):
        try:
            if spec in " ".join(proc.cmdline()):
                proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_nodes_match_one_process_and_a_lost_node_stops_the_head(workspace) -> None:  # noqa: F811
    root, prepared, base = workspace
    one, one_log = sft(["sft.optim.batch_size=4"], prepared, base, root / "n-one")
    two, two_log = on_two_nodes(["sft.optim.batch_size=2"], "sft", prepared, base, root / "n-two")
    assert two.steps == one.steps and two.tokens == one.tokens
    assert_same_losses(one_log, two_log, range(1, one.steps + 1))
    assert (root / "n-two" / "launch" / "node-1" / "stderr.log").is_file()  # each node its own launch folder

    # node 1 lost after step 3's checkpoint: the head fails within the node timeout, naming its node
    out = root / "n-killed"
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"sft training with 1 processes on node [01] of 2 failed"):
        on_two_nodes(["sft.optim.batch_size=2"], "sft", prepared, base, out, kill_node1_at=3)
    print(f"node 1 killed: the head failed after {time.monotonic() - started:.1f} s from the start")
    assert time.monotonic() - started < 150
    assert not (out / "model").exists()
    # both nodes started again: resumed from the sharded checkpoint, the uninterrupted run's losses
    again, again_log = on_two_nodes(["sft.optim.batch_size=2"], "sft", prepared, base, out)
    assert again.resumed_from_step >= 3
    assert_same_losses(two_log, again_log, range(again.resumed_from_step + 1, one.steps + 1))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_dpo_on_two_nodes_matches_one_process(workspace) -> None:  # noqa: F811
    root, prepared, base = workspace
    ref, _ = sft(["sft.optim.batch_size=4", "sft.optim.max_steps=2"], prepared, base, root / "n-dpo-ref")
    dpo = ["dpo.optim.max_steps=3", "dpo.optim.log_every=1", "dpo.optim.learning_rate=1e-3"]
    one_log = InMemoryLogger()
    run_preference(load_config(None, [*COMMON, *dpo, "dpo.optim.batch_size=4"]), prepared, base, ref,
                   root / "n-dpo-one", one_log)
    _, two_log = on_two_nodes([*dpo, "dpo.optim.batch_size=2"], "preference", prepared, base, root / "n-dpo-two",
                              sft_out=ref)
    assert_same_losses(one_log, two_log, range(1, 4))


def test_node_settings_are_checked() -> None:
    assert PipelineConfig().training.num_nodes == 1 and PipelineConfig().training.world_size == 1
    cfg = load_config(None, ["training.num_nodes=2", "training.num_processes=4", "training.pool=gpu"])
    assert cfg.training.world_size == 8
    with pytest.raises(ConfigError, match=r"num_nodes=2 needs training.pool"):
        load_config(None, ["training.num_nodes=2"])
    fields = cfg.training.model_dump()
    with pytest.raises(ValidationError, match=r"node.rank=2 is not a rank of num_nodes=2"):
        TrainingConfig.model_validate({**fields, "node": {"rank": 2, "endpoint": "127.0.0.1:29500"}})
    with pytest.raises(ValidationError, match="endpoint"):
        TrainingConfig.model_validate({**fields, "node": {"rank": 1, "endpoint": "no port"}})
    # sharding counts the processes of every node
    assert load_config(None, ["training.num_nodes=2", "training.pool=gpu", "training.sharding=fsdp2"])
