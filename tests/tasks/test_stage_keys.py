"""Which settings re-run a cached stage: tasks.stages.stage_keys. A setting that changes what a stage produces
must change its key (else a stale model is reused); one that only changes where or how fast it runs must not
(else a finished stage is trained again for nothing)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from alignment.config import load_config
from tasks.stages import stage_keys

# stage_keys reads only the inputs' fingerprints
PREPARED = SimpleNamespace(fingerprint="data-1")
BASE = SimpleNamespace(fingerprint="base-1")
SFT = SimpleNamespace(model=SimpleNamespace(fingerprint="sft-1"), method="sft", reference=None)


def keys(*overrides: str) -> dict[str, str]:
    return stage_keys(load_config(None, list(overrides)), PREPARED, BASE, SFT)


@pytest.mark.parametrize("override", [
    "training.pool=gpu",
    "training.s3_checkpoints=true",
    "training.cpu_mmap_threshold_mib=null",
    "training.cpu_mmap_threshold_mib=8",
])
def test_placement_and_allocator_settings_keep_every_key(override: str) -> None:
    assert keys(override) == keys()


@pytest.mark.parametrize("override", [
    "training.gradient_checkpointing=true",
    "training.onednn_linear=false",
    "training.mixed_precision=bf16",
    "run.seed=7",
])
def test_settings_of_the_computation_change_both_training_keys(override: str) -> None:
    # onednn_linear (another kernel) and mixed_precision round differently; gradient checkpointing measured the
    # same losses (docs/performance.md) but recomputes through other code, so it stays in the key: a stale model
    # costs more than a retrained stage
    before, after = keys(), keys(override)
    assert after["sft"] != before["sft"]
    assert after["dpo"] != before["dpo"]


def test_a_dpo_setting_changes_only_the_dpo_key() -> None:
    before, after = keys(), keys("dpo.beta=0.5")
    assert after["dpo"] != before["dpo"]
    assert {k: v for k, v in after.items() if k != "dpo"} == {k: v for k, v in before.items() if k != "dpo"}


def test_the_sft_model_feeds_the_preference_key() -> None:
    other = stage_keys(load_config(None, []), PREPARED, BASE, SimpleNamespace(model=SimpleNamespace(fingerprint="sft-2"), method="sft", reference=None))
    assert other["dpo"] != keys()["dpo"]
    assert other["sft"] == keys()["sft"]


def test_a_later_round_held_to_the_original_model_has_its_own_key() -> None:
    # round 2 starts from round 1's policy; held to round 1's reference it trains against other log-probs
    policy_1 = SimpleNamespace(model=SimpleNamespace(fingerprint="policy-1"), method="dpo",
                               reference=SimpleNamespace(fingerprint="base-1"))
    on = ["onpolicy.enabled=true", "onpolicy.rounds=2"]
    previous = stage_keys(load_config(None, [*on, "onpolicy.round_reference=previous"]), PREPARED, BASE, policy_1)
    original = stage_keys(load_config(None, [*on, "onpolicy.round_reference=original"]), PREPARED, BASE, policy_1)
    assert original["dpo"] != previous["dpo"]
    # round 1 (no earlier policy) is the same under both settings
    assert (stage_keys(load_config(None, [*on, "onpolicy.round_reference=original"]), PREPARED, BASE, SFT)["dpo"]
            == keys(*on, "onpolicy.round_reference=previous")["dpo"])


def test_the_rounds_settings_leave_the_onpolicy_key_alone() -> None:
    # raising onpolicy.rounds from 1 to 2 reuses round 1's sampling (10 minutes on the real model)
    from tasks.stages import UNKEYED_ONPOLICY

    assert UNKEYED_ONPOLICY == {"rounds", "round_reference", "round_gates", "round_min_gain"}
