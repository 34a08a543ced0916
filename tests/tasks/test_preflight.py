"""Service preflight: a missing or refusing service is named, with its address and the fix, in seconds."""

from __future__ import annotations

import time
from collections import namedtuple
from pathlib import Path

import pytest

from alignment.config import load_config
from flows.stack import free_ports
from tasks import preflight
from tests.s3fixture import S3Server


def closed_url() -> str:
    return f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there


def test_unreachable_mlflow_server_is_named_quickly(tmp_path: Path) -> None:
    url = closed_url()
    cfg = load_config(None, [f"tracking.uri={url}", f"run.output_dir={tmp_path}"])
    started = time.monotonic()
    with pytest.raises(preflight.ServiceError, match=f"MLflow tracking server at {url} is not reachable"):
        preflight.check_mlflow(cfg)
    assert time.monotonic() - started < 10


def test_unreachable_prefect_api_is_named() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = closed_url() + "/api"
    with temporary_settings(updates={PREFECT_API_URL: url}), pytest.raises(
            preflight.ServiceError, match=f"Prefect API at {url} is not reachable.*alignflow stack up"):
        preflight.check_prefect()


def test_s3_wrong_keys_and_missing_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ALIGNFLOW_S3_BUCKET", s3_server.bucket)
    preflight.check_s3()  # the right keys pass
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(preflight.ServiceError, match="refused the credentials"):
        preflight.check_s3()


def test_unreachable_s3_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_url()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", url)
    monkeypatch.setenv("ALIGNFLOW_S3_BUCKET", "alignflow")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    started = time.monotonic()
    with pytest.raises(preflight.ServiceError, match=f"S3 at {url} is not reachable"):
        preflight.check_s3()
    assert time.monotonic() - started < 10


def test_low_disk_space_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda _: usage(10, 10, 100 << 20))
    with pytest.raises(preflight.ServiceError, match="only 0.10 GiB free"):
        preflight.check_disk(load_config(None, [f"run.output_dir={tmp_path}/new/run"]))


def test_embedded_default_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    for key in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    with temporary_settings(updates={PREFECT_API_URL: None}):
        assert preflight.check_services(load_config(None, [f"run.output_dir={tmp_path}"])) < 10


def test_cli_reports_a_dead_service_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from flows.cli import main

    url = closed_url()
    started = time.monotonic()
    code = main(["run", "--no-stack", "--set", f"tracking.uri={url}", "--set", f"run.output_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 10
    assert err.startswith(f"error: preflight: MLflow tracking server at {url}") and "Traceback" not in err


@pytest.mark.parametrize("setting", ["training.pool=gpu", "training.s3_checkpoints=true"])
def test_training_through_s3_without_s3_is_refused(monkeypatch: pytest.MonkeyPatch, setting: str) -> None:
    for key in ("AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL", "ALIGNFLOW_S3_BUCKET"):
        monkeypatch.delenv(key, raising=False)
    preflight.check_s3(load_config(None, []))  # in process, local checkpoints: no S3 needed
    with pytest.raises(preflight.ServiceError, match=f"{setting.split('=')[0]} needs S3"):
        preflight.check_s3(load_config(None, [setting]))
