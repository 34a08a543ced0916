"""Stage functions as plain functions (no Prefect, no MLflow): data preparation and the base model."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment.config import load_config
from alignment.data import DataError, DataValidationError, read_jsonl
from alignment.models.loading import ModelLoadError, fingerprint_model
from alignment.stages import build_base_model, prepare_data


def test_quickstart_strings_and_messages_give_the_same_canonical_data(tmp_path: Path) -> None:
    strings = prepare_data(load_config(None, []), tmp_path / "s")
    messages = prepare_data(load_config(None, ["data.quick.conversational=true"]), tmp_path / "m")
    assert strings.counts == messages.counts
    assert strings.counts["heldout"] > 0 and strings.counts["train"] > strings.counts["heldout"]
    for split in ("sft", "train", "heldout"):
        a = [{k: v for k, v in r.items() if k != "source"} for r in read_jsonl(strings.path(split))]
        b = [{k: v for k, v in r.items() if k != "source"} for r in read_jsonl(messages.path(split))]
        assert a == b, split
    assert strings.fingerprint != ""
    assert sum(strings.report["drops"]["train"]["counts"].values()) == 0  # the generator writes no duplicates


def test_user_files_with_a_bad_row_name_file_row_and_field(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a?", "chosen": "yes", "rejected": "no"}\n'
                     '{"prompt": "b?", "chosen": "", "rejected": "no"}\n')
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "a?", "completion": "yes"}\n')
    cfg = load_config(None, ["data.source=files", f"data.train_path={pairs}", f"data.sft_path={sft}"])
    with pytest.raises(DataValidationError) as err:
        prepare_data(cfg, tmp_path / "out")
    assert "pairs.jsonl" in str(err.value) and "row 1" in str(err.value) and "'chosen'" in str(err.value)
    dropped = load_config(None, ["data.source=files", f"data.train_path={pairs}", f"data.sft_path={sft}",
                                 "data.on_invalid=drop", "data.heldout_fraction=0.5"])
    with pytest.raises(DataError, match="held-out split is empty"):  # one good pair cannot make both train and held-out
        prepare_data(dropped, tmp_path / "out2")


def test_base_model_is_built_once_then_loaded_by_path(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                             "model.tiny.num_layers=1", "model.tiny.num_heads=2"])
    prepared = prepare_data(cfg, tmp_path / "data")
    built = build_base_model(cfg, prepared, tmp_path / "base")
    assert (Path(built.path) / "config.json").is_file() and (Path(built.path) / "model.safetensors").is_file()
    # The same directory given as model.name_or_path takes the hub-id code path (from_pretrained).
    by_path = build_base_model(load_config(None, [f"model.name_or_path={built.path}"]), prepared, tmp_path / "x")
    assert by_path.path == built.path and by_path.fingerprint == fingerprint_model(built.path)
    assert not (tmp_path / "x").exists()


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    from alignment.models.loading import load_tokenizer

    with pytest.raises(ModelLoadError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "nowhere"))


@pytest.mark.parametrize("stage", ["sft", "preference"])
def test_training_stages_run_under_their_cpu_settings(monkeypatch, stage: str) -> None:
    """run_sft / run_preference enter their runtime plan's mmap threshold (training.cpu_mmap_threshold_mib) before
    they load anything and leave it as it was; the plan's onednn_linear is training.onednn_linear, for the stage's
    models only (alignment/kernels/runtime_plan.py: nothing process-wide)."""
    from alignment import stages
    from alignment.kernels import host_memory

    seen: dict[str, object] = {}
    thresholds: list[int] = []
    monkeypatch.delenv(host_memory.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(host_memory, "set_mmap_threshold", lambda n: thresholds.append(n) or True)
    monkeypatch.setattr(stages.training, "_sft_here" if stage == "sft" else "_preference_here",
                        lambda *args: seen.update(thresholds=list(thresholds)))
    cfg = load_config(None, ["training.onednn_linear=false", "training.cpu_mmap_threshold_mib=3"])
    if stage == "sft":
        stages.run_sft(cfg, None, None, Path("unused"), None)
    else:
        stages.run_preference(cfg, None, None, None, Path("unused"), None)
    expected_inside = [] if __import__("torch").cuda.is_available() else [3 * 1024 * 1024]
    assert seen == {"thresholds": expected_inside}
    plan = stages.stage_plan(cfg, stage, "cpu")
    assert not plan.onednn_linear and plan.mmap_threshold_mib == 3
    assert plan.params()["runtime/onednn_linear"] == "false" and plan.params()["runtime/mmap_threshold_mib"] == "3"
    if expected_inside:
        assert thresholds == [3 * 1024 * 1024, host_memory.GLIBC_ADAPTIVE_MAX]


@pytest.mark.parametrize(("stage", "expected_mib"), [("sft", None), ("preference", 1)])
def test_the_default_mmap_threshold_is_for_the_preference_stage(monkeypatch, stage: str, expected_mib: int | None) -> None:
    """training.cpu_mmap_threshold_mib="auto" (the default): DPO/ORPO train under a 1 MiB threshold, SFT under
    glibc's own (docs/performance.md measures both sides of the trade)."""
    from alignment import stages
    from alignment.kernels import host_memory

    thresholds: list[int] = []
    seen: list[list[int]] = []
    monkeypatch.delenv(host_memory.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(host_memory, "set_mmap_threshold", lambda n: thresholds.append(n) or True)
    monkeypatch.setattr(stages.training, "_sft_here" if stage == "sft" else "_preference_here",
                        lambda *args: seen.append(list(thresholds)))
    cfg = load_config(None, [])
    if stage == "sft":
        stages.run_sft(cfg, None, None, Path("unused"), None)
    else:
        stages.run_preference(cfg, None, None, None, Path("unused"), None)
    on_cpu = not __import__("torch").cuda.is_available()
    assert seen == [[expected_mib * 1024 * 1024] if expected_mib and on_cpu else []]
