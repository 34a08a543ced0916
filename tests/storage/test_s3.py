"""s3:// sources against a real SeaweedFS S3 server on loopback (the session fixture `s3_server`)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from alignment.data import DataError, load_preferences
from storage import s3
from tests.s3fixture import S3Server, free_ports

ROWS = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    for key in ("AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    return s3_server


@pytest.fixture
def prefix() -> str:
    return f"tests/{uuid.uuid4().hex}"


def test_object_is_downloaded_verified_and_read_with_its_uri(s3_env: S3Server, prefix: str, tmp_path: Path) -> None:
    s3_env.client().put_object(Bucket=s3_env.bucket, Key=f"{prefix}/pairs.jsonl", Body=jsonl(ROWS))
    uri = f"s3://{s3_env.bucket}/{prefix}/pairs.jsonl"
    records, report = load_preferences(uri, cache_dir=tmp_path)
    assert len(records) == 4 and records[0]["source"] == uri and report.formats == {uri: "standard"}
    assert (tmp_path / "s3" / s3_env.bucket / prefix / "pairs.jsonl").read_bytes() == jsonl(ROWS)


def test_prefix_reads_supported_objects_sorted(s3_env: S3Server, prefix: str, tmp_path: Path) -> None:
    client = s3_env.client()
    client.put_object(Bucket=s3_env.bucket, Key=f"{prefix}/b/2.jsonl", Body=jsonl(ROWS[2:]))
    client.put_object(Bucket=s3_env.bucket, Key=f"{prefix}/a.jsonl", Body=jsonl(ROWS[:2]))
    client.put_object(Bucket=s3_env.bucket, Key=f"{prefix}/notes.txt", Body=b"not data")
    client.put_object(Bucket=s3_env.bucket, Key=f"{prefix}/.hidden/x.jsonl", Body=b"broken")
    records, _ = load_preferences(f"s3://{s3_env.bucket}/{prefix}/", cache_dir=tmp_path)
    assert [r["source"].rsplit(prefix, 1)[1] for r in records] == ["/a.jsonl"] * 2 + ["/b/2.jsonl"] * 2
    records, _ = load_preferences(f"s3://{s3_env.bucket}/{prefix}", cache_dir=tmp_path)  # no trailing slash
    assert len(records) == 4


def test_cache_is_reused_until_the_object_changes(s3_env: S3Server, prefix: str, tmp_path: Path) -> None:
    client = s3_env.client()
    key = f"{prefix}/pairs.jsonl"
    client.put_object(Bucket=s3_env.bucket, Key=key, Body=jsonl(ROWS[:1]))
    progress: list[tuple[str, int, int]] = []
    uri = f"s3://{s3_env.bucket}/{key}"
    s3.fetch(uri, tmp_path, progress=lambda *a: progress.append(a))
    assert progress and progress[-1][1] == progress[-1][2] == len(jsonl(ROWS[:1]))
    progress.clear()
    ((_, path),) = s3.fetch(uri, tmp_path, progress=lambda *a: progress.append(a))
    assert progress == []  # size and ETag match: no download
    client.put_object(Bucket=s3_env.bucket, Key=key, Body=jsonl(ROWS))
    s3.fetch(uri, tmp_path, progress=lambda *a: progress.append(a))
    assert progress and path.read_bytes() == jsonl(ROWS)


def test_wrong_keys_missing_objects_and_bad_uris_are_data_errors(
    s3_env: S3Server, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="no such object"):
        load_preferences(f"s3://{s3_env.bucket}/{prefix}/missing.jsonl", cache_dir=tmp_path)
    with pytest.raises(DataError, match="NoSuchBucket"):
        load_preferences(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/x.jsonl", cache_dir=tmp_path)
    with pytest.raises(DataError, match="no bucket"):
        load_preferences("s3:///x.jsonl", cache_dir=tmp_path)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(DataError, match="SignatureDoesNotMatch") as caught:
        load_preferences(f"s3://{s3_env.bucket}/{prefix}/x.jsonl", cache_dir=tmp_path)
    assert caught.value.reason == "bad_file" and "wrong-secret" not in str(caught.value)


def test_unreachable_endpoint_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    with pytest.raises(DataError, match="S3 request failed"):
        load_preferences("s3://bucket/x.jsonl", cache_dir=tmp_path)


def test_mlflow_endpoint_variable_is_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    assert s3.make_client().meta.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:8")
    assert s3.make_client().meta.endpoint_url == "http://127.0.0.1:8"


def test_download_is_verified_and_keys_stay_inside_the_cache(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"abc")
    with pytest.raises(s3.StorageError, match="3 bytes; the object has 4"):
        s3._verify(path, s3.S3Object("b", "f.jsonl", 4, "x"))
    with pytest.raises(s3.StorageError, match="ETag"):
        s3._verify(path, s3.S3Object("b", "f.jsonl", 3, "0" * 32))
    s3._verify(path, s3.S3Object("b", "f.jsonl", 3, "900150983cd24fb0d6963f7d28e17f72"))  # md5("abc")
    s3._verify(path, s3.S3Object("b", "f.jsonl", 3, "0" * 32 + "-2"))  # multipart: size only
    with pytest.raises(s3.StorageError, match="safe relative path"):
        s3.local_path(tmp_path, s3.S3Object("b", "a/../../etc/x.jsonl", 1, "x"))
