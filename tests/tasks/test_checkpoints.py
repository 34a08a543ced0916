"""Checkpoints mirrored to a real S3 server on loopback (tasks/checkpoints.py): the newest complete local
checkpoint is published with its manifest, S3 keeps the newest two, an incomplete folder is never restored,
and a machine without local checkpoints gets the newest one back. The whole kill-a-worker story runs on the
stack in tests/integration/test_stack.py."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from alignment.config import load_config
from alignment.training.trainer import latest_checkpoint
from storage import folders
from tasks.checkpoints import CheckpointMirror, mirrored_checkpoints, remote_steps, restore, s3_checkpoints_on
from tests.s3fixture import S3Server


def write_checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    """What the trainer leaves: a folder of state files, trainer_state.json last (renamed into place)."""
    folder = root / (f"step-{step:07d}" if complete else f".tmp-step-{step:07d}")
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step % 256]) * 1000)
    (folder / "optimizer.bin").write_bytes(b"opt" * step)
    (folder / "trainer_state.json").write_text(json.dumps({"step": step, "metrics": {"loss": 1.0 / step}}))
    return folder


def test_mirror_publishes_the_newest_and_keeps_two(s3_env: S3Server, tmp_path: Path) -> None:
    root, uri = tmp_path / "checkpoints", f"s3://{s3_env.bucket}/stages/dpo-{uuid.uuid4().hex}/checkpoints"
    mirror = CheckpointMirror(root, uri)
    assert mirror.publish_newest() is None  # nothing yet
    write_checkpoint(root, 20, complete=False)  # being written: not published
    assert mirror.publish_newest() is None
    client = s3_env.client()
    for step in (20, 40, 60):
        write_checkpoint(root, step) if step != 20 else (root / ".tmp-step-0000020").rename(root / "step-0000020")
        assert mirror.publish_newest() == step
        assert mirror.publish_newest() is None  # already there
    assert remote_steps(client, uri) == [40, 60]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_env.bucket, Prefix=uri.split("/", 3)[3])["Contents"]]
    assert not any("/step-0000020/" in k for k in keys)  # pruned whole, not just its manifest


def test_restore_takes_the_newest_complete_one_only_when_newer(s3_env: S3Server, tmp_path: Path) -> None:
    uri = f"s3://{s3_env.bucket}/stages/sft-{uuid.uuid4().hex}/checkpoints"
    worker = tmp_path / "worker" / "checkpoints"
    for step in (20, 40):
        folders.publish_dir(write_checkpoint(worker, step), f"{uri}/step-{step:07d}")
    # A newer folder without its manifest (the uploader was killed mid-way) is not a checkpoint.
    b, prefix = uri.removeprefix("s3://").split("/", 1)
    s3_env.client().put_object(Bucket=b, Key=f"{prefix}/step-0000060/model.safetensors", Body=b"partial")

    fresh = tmp_path / "fresh" / "checkpoints"  # another machine: no local checkpoints
    fresh.mkdir(parents=True)
    assert restore(fresh, uri) == 40
    ckpt = latest_checkpoint(fresh)
    assert ckpt is not None and ckpt.name == "step-0000040"
    for name in ("model.safetensors", "optimizer.bin", "trainer_state.json"):
        assert (ckpt / name).read_bytes() == (worker / "step-0000040" / name).read_bytes()
    assert not list(fresh.glob(".tmp*"))
    assert restore(fresh, uri) is None  # local is as new

    ahead = tmp_path / "ahead" / "checkpoints"
    write_checkpoint(ahead, 80)
    assert restore(ahead, uri) is None  # local is newer: kept, nothing downloaded
    assert [p.name for p in ahead.iterdir()] == ["step-0000080"]


def test_mirrored_checkpoints_is_off_in_process_unless_asked(s3_env: S3Server, tmp_path: Path) -> None:
    assert not s3_checkpoints_on(load_config(None, []))
    assert s3_checkpoints_on(load_config(None, ["training.pool=gpu"]))
    assert not s3_checkpoints_on(load_config(None, ["training.pool=gpu", "training.s3_checkpoints=false"]))
    cfg = load_config(None, ["training.s3_checkpoints=true"])
    stage = tmp_path / f"orpo-{uuid.uuid4().hex}"
    with pytest.raises(RuntimeError, match="non-finite"):  # a failed stage leaves its last checkpoint in S3
        with mirrored_checkpoints(cfg, stage) as restored:
            assert restored is None
            write_checkpoint(stage / "checkpoints", 10)
            raise RuntimeError("non-finite loss at step 11")
    elsewhere = tmp_path / "elsewhere" / stage.name  # the same stage key on another machine
    with mirrored_checkpoints(cfg, elsewhere) as restored:
        assert restored == 10
        assert latest_checkpoint(elsewhere / "checkpoints").name == "step-0000010"
