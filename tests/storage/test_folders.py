"""Stage folders and models through a real S3 server on loopback: publish, materialise, verify; a base
model given as an s3:// URI."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from alignment.config import load_config
from alignment.models.loading import fingerprint_model, load_causal_lm
from alignment.stages import build_base_model, prepare_data
from storage import folders
from tests.s3fixture import S3Server


def tiny_model(tmp_path: Path) -> Path:
    cfg = load_config(None, ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                             "model.tiny.num_layers=1", "model.tiny.num_heads=2"])
    prepared = prepare_data(cfg, tmp_path / "data")
    return Path(build_base_model(cfg, prepared, tmp_path / "base-abc").path)


def test_publish_then_materialize_round_trips_and_verifies(s3_env: S3Server, tmp_path: Path) -> None:
    folder = tmp_path / "sft-123" / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
    uri = f"s3://{s3_env.bucket}/stages/{uuid.uuid4().hex}/model"
    assert folders.publish_dir(folder, uri) == uri
    local = Path(folders.materialize(uri))
    assert (local / "a.txt").read_text() == "alpha" and (local / "sub" / "b.bin").read_bytes() == bytes(range(256))
    # A corrupted cached copy is replaced on the next materialise.
    (local / "a.txt").write_text("tampered")
    assert (Path(folders.materialize(uri)) / "a.txt").read_text() == "alpha"
    assert folders.materialize(str(folder)) == str(folder)  # local paths pass through


def test_incomplete_published_folder_is_refused(s3_env: S3Server) -> None:
    uri = f"s3://{s3_env.bucket}/stages/{uuid.uuid4().hex}/model"
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=uri.split("/", 3)[3] + "/x.txt", Body=b"x")
    with pytest.raises(FileNotFoundError, match="not a complete published folder"):
        folders.materialize(uri)


def test_base_model_from_an_s3_uri(s3_env: S3Server, tmp_path: Path) -> None:
    local = tiny_model(tmp_path)
    prefix = f"models/{uuid.uuid4().hex}/tiny"
    client = s3_env.client()
    for path in local.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), s3_env.bucket, f"{prefix}/{path.relative_to(local).as_posix()}")
    cfg = load_config(None, [f"model.name_or_path=s3://{s3_env.bucket}/{prefix}"])
    ref = build_base_model(cfg, prepare_data(cfg, tmp_path / "d2"), tmp_path / "unused")
    assert Path(ref.path).is_dir() and ref.fingerprint == fingerprint_model(str(local))
    assert load_causal_lm(ref.path).config.hidden_size == 32


def test_reference_logps_are_computed_once_and_shared_through_s3(s3_env: S3Server, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run in another output folder (or on another worker) takes the reference log-probs from S3
    instead of running the reference model again; without S3 it computes them itself."""
    from alignment import stages

    cfg = load_config(None, ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                             "model.tiny.num_layers=1", "model.tiny.num_heads=2", f"run.seed={uuid.uuid4().int % 1000}"])
    calls = []
    real = stages.reference.reference_logps
    monkeypatch.setattr(stages.reference, "reference_logps", lambda *a, **k: calls.append(1) or real(*a, **k))

    def annotated(folder: Path) -> list[dict]:
        prepared = prepare_data(cfg, folder / "data")
        reference = build_base_model(cfg, prepared, folder / "base")
        return stages.reference_annotated_pairs(cfg, prepared, reference, "train")

    first = annotated(tmp_path / "run1")
    assert len(calls) == 1
    second = annotated(tmp_path / "run2")  # same content, another folder: no local cache there
    assert len(calls) == 1
    assert [(r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in second] == [
        (r["ref_chosen_logps"], r["ref_rejected_logps"]) for r in first]
    keys = [o["Key"] for o in s3_env.client().list_objects_v2(Bucket=s3_env.bucket, Prefix="reference-logps/")["Contents"]]
    assert len([k for k in keys if k.startswith("reference-logps/train-")]) >= 1

    monkeypatch.delenv("ALIGNFLOW_S3_BUCKET")  # no S3: computed again, locally
    annotated(tmp_path / "run3")
    assert len(calls) == 2
