"""Training checkpoints mirrored to S3, so a training stage killed on one machine (a GPU worker lost with its
disk) resumes on another from where it stopped.

The trainer (alignment/training/trainer.py) keeps writing its checkpoints locally under `<stage dir>/checkpoints`,
each folder renamed into place once complete. Here a background thread watches that folder and publishes
the newest complete checkpoint to `s3://<bucket>/stages/<stage>-<key>/checkpoints/step-N/` with the
manifest written last (storage/folders.py), keeping the newest `KEEP_CHECKPOINTS` there too. Training never
waits for an upload; an upload that fails (S3 down) is logged and retried with the next checkpoint. When
training fails (a non-finite loss, say) its last good checkpoint is published before the error goes on. Before
training, `restore` downloads the newest complete S3 checkpoint when it is newer than every local one, and the
trainer resumes from it as from any local checkpoint: weights, optimizer, scheduler, RNG states and the step
(the data order is a function of the step). The stage key is content-based, so a re-run finds the folder.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import MissingContextError

from alignment.config import PipelineConfig
from alignment.training.trainer import KEEP_CHECKPOINTS, latest_checkpoint
from storage import folders
from storage.s3 import make_client, parse_s3_uri

log = logging.getLogger("alignflow.checkpoints")
STEP_DIR = re.compile(r"step-(\d{7})")


def checkpoints_uri(stage_dir: Path) -> str:
    return f"s3://{folders.bucket()}/stages/{stage_dir.name}/checkpoints"


def remote_steps(client: Any, uri: str) -> list[int]:
    """Steps of the complete checkpoints under `uri` (those with a manifest), ascending."""
    b, prefix = parse_s3_uri(uri.rstrip("/") + "/")
    steps = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=b, Prefix=prefix):
        for item in page.get("Contents", []):
            rest = item["Key"][len(prefix):]
            name, _, file = rest.partition("/")
            if file == folders.MANIFEST and (m := STEP_DIR.fullmatch(name)):
                steps.append(int(m.group(1)))
    return sorted(steps)


def local_step(root: Path) -> int:
    ckpt = latest_checkpoint(root)
    return int(ckpt.name.removeprefix("step-")) if ckpt else 0


def restore(root: Path, uri: str, client: Any = None) -> int | None:
    """Download the newest complete checkpoint under `uri` into `root` when it is newer than every local one;
    returns its step, or None when the local checkpoints are as new (or there are none anywhere)."""
    client = client or make_client()
    steps = remote_steps(client, uri)
    if not steps or steps[-1] <= local_step(root):
        return None
    step = steps[-1]
    name = f"step-{step:07d}"
    tmp = root / f".tmp-restore-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    folders.download_published(f"{uri}/{name}", tmp, client)
    shutil.rmtree(root / name, ignore_errors=True)
    tmp.rename(root / name)  # complete, so the trainer may resume from it
    return step


class CheckpointMirror:
    """Publishes each new complete local checkpoint to S3 from a background thread."""

    def __init__(self, root: Path, uri: str, client: Any = None, interval_s: float = 0.5) -> None:
        self.root, self.uri, self.interval_s = root, uri, interval_s
        self.client = client or make_client()
        self.published = set(remote_steps(self.client, uri))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="checkpoint-mirror", daemon=True)

    def start(self) -> CheckpointMirror:
        self._thread.start()
        return self

    def stop(self, publish_last: bool = False) -> None:
        """Stop watching once the upload in progress (if any) is done; with `publish_last`, make sure the
        newest local checkpoint is in S3 before returning."""
        self._stop.set()
        self._thread.join()
        if publish_last:
            try:
                self.publish_newest()
            except Exception as err:
                log.warning("checkpoint upload to %s failed: %s", self.uri, err)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish_newest()
            except Exception as err:  # S3 away: training goes on; the next checkpoint is tried
                log.warning("checkpoint upload to %s failed (will retry with the next one): %s", self.uri, err)

    def publish_newest(self) -> int | None:
        """Upload the newest complete local checkpoint if S3 lacks it; prune S3 to the newest few."""
        ckpt = latest_checkpoint(self.root)
        if ckpt is None:
            return None
        step = int(ckpt.name.removeprefix("step-"))
        if step in self.published:
            return None
        try:
            folders.publish_dir(ckpt, f"{self.uri}/{ckpt.name}", self.client)
        except FileNotFoundError:  # the trainer already replaced it by newer ones
            return None
        self.published.add(step)
        self.prune()
        return step

    def prune(self) -> None:
        """Delete all but the newest KEEP_CHECKPOINTS published checkpoints (manifest first: a folder being
        deleted is never taken for a complete one)."""
        b, prefix = parse_s3_uri(self.uri)
        for step in sorted(self.published)[:-KEEP_CHECKPOINTS]:
            folder = f"{prefix}/step-{step:07d}/"
            keys = [item["Key"] for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=b, Prefix=folder) for item in page.get("Contents", [])]
            keys.sort(key=lambda k: not k.endswith(folders.MANIFEST))
            for key in keys:
                self.client.delete_object(Bucket=b, Key=key)
            self.published.discard(step)


def run_logger() -> Any:
    try:
        return get_run_logger()
    except MissingContextError:
        return log


def s3_checkpoints_on(cfg: PipelineConfig) -> bool:
    """training.s3_checkpoints, or when unset: on for a stage run on a work pool."""
    setting = cfg.training.s3_checkpoints
    return bool(cfg.training.pool) if setting is None else setting


@contextmanager
def mirrored_checkpoints(cfg: PipelineConfig, stage_dir: Path) -> Iterator[int | None]:
    """With S3 checkpoints on: restore the newest S3 checkpoint into the stage's checkpoint folder, then mirror
    new ones while the block trains. Yields the restored step (None: nothing newer in S3, or off)."""
    if not s3_checkpoints_on(cfg):
        yield None
        return
    root, uri = stage_dir / "checkpoints", checkpoints_uri(stage_dir)
    root.mkdir(parents=True, exist_ok=True)
    restored = restore(root, uri)
    if restored is not None:
        run_logger().info("resuming from checkpoint step %d, restored from %s", restored, uri)
    mirror = CheckpointMirror(root, uri).start()
    try:
        yield restored
    except BaseException:
        # Training failed (a non-finite loss, an interrupt): its last good checkpoint goes to S3 before the
        # error propagates. After a success the stage's result is what counts, so no final upload waits.
        mirror.stop(publish_last=True)
        raise
    mirror.stop()
