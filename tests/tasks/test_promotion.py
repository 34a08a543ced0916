"""`alignflow promote`: a human points `champion` at an existing version, recorded with who and why;
promoting twice changes nothing and never creates a version."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows import cli
from tasks.promotion import PromotionError, promote

NAME = "promo-test"


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """A SQLite registry with one model and two versions (sources are plain folders)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.create_registered_model(NAME)
    for i in (1, 2):
        source = tmp_path / f"model{i}"
        source.mkdir()
        client.create_model_version(NAME, source=source.as_uri())
    return uri


def test_promote_records_who_why_and_is_idempotent(registry: str) -> None:
    client = MlflowClient(registry)
    first = promote(registry, NAME, "1", reason="beats v0 on the human eval", user="ada")
    assert first.changed and first.previous_version is None
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    tags = client.get_model_version(NAME, "1").tags
    assert tags["promotion.champion.by"] == "ada"
    assert tags["promotion.champion.reason"] == "beats v0 on the human eval"
    stamp = tags["promotion.champion.at"]

    again = promote(registry, NAME, "1", reason="a second click", user="bob")
    assert not again.changed
    assert client.get_model_version(NAME, "1").tags["promotion.champion.at"] == stamp  # untouched
    assert client.get_model_version(NAME, "1").tags["promotion.champion.by"] == "ada"
    assert len(client.search_model_versions(f"name='{NAME}'")) == 2  # no version was created

    moved = promote(registry, NAME, "2", reason="rollback test", user="ada")
    assert moved.changed and moved.previous_version == "1"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert client.get_model_version(NAME, "2").tags["promotion.champion.previous_version"] == "1"


def test_other_alias(registry: str) -> None:
    promote(registry, NAME, "2", alias="staging", reason="try it", user="ada")
    assert str(MlflowClient(registry).get_model_version_by_alias(NAME, "staging").version) == "2"


@pytest.mark.parametrize(("version", "alias", "reason", "needle"), [
    ("9", "champion", "why", "no version '9'"),
    ("1", "champion", "  ", "needs a reason"),
    ("1", "bad alias", "why", "not valid"),
])
def test_bad_promotions_are_refused(registry: str, version: str, alias: str, reason: str, needle: str) -> None:
    with pytest.raises(PromotionError, match=needle):
        promote(registry, NAME, version, alias=alias, reason=reason, user="ada")


def test_cli_promote_twice(registry: str, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIGNFLOW_USER", "ci-bot")
    argv = ["promote", NAME, "2", "--reason", "manual review passed", "--tracking-uri", registry]
    assert cli.main(argv) == 0
    assert "version 2 is now 'champion'" in capsys.readouterr().out
    assert cli.main(argv) == 0
    assert "already is 'champion': nothing changed" in capsys.readouterr().out
    assert MlflowClient(registry).get_model_version(NAME, "2").tags["promotion.champion.by"] == "ci-bot"
    assert cli.main(["promote", "missing-model", "1", "--reason", "x", "--tracking-uri", registry]) == 2
    assert "error: model 'missing-model' has no version" in capsys.readouterr().err
