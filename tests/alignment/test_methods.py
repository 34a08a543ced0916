"""The registry of training methods (alignment/training/objectives.py METHODS) and how the preference stage uses it to
choose its starting model and rows (alignment/stages/training.py)."""

from __future__ import annotations

import pytest

from alignment.config import PipelineConfig
from alignment.records import ModelRef, TrainOutput
from alignment.stages import reference_model, starting_model
from alignment.training.objectives import (
    METHODS,
    mean_over_processes,
    method_plan,
    method_spec,
    sft_objective,
)


def test_dpo_and_kto_use_a_reference_and_every_method_plans() -> None:
    assert {name: m.uses_reference for name, m in METHODS.items()} == {"sft": False, "dpo": True, "orpo": False,
                                                                       "kto": True}
    assert method_plan("sft", pad_id=0)[0] is sft_objective
    for name in METHODS:
        objective, collate = method_plan(name, pad_id=0)
        assert callable(objective) and callable(collate)


def test_an_unknown_method_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown method 'simpo' \(known: sft, dpo, orpo, kto\)"):
        method_spec("simpo")


@pytest.mark.parametrize(("method", "orpo_init", "with_sft", "expected"), [
    ("dpo", "base", True, "sft"),    # DPO starts from (and is held to) the SFT model
    ("dpo", "base", False, "base"),  # no SFT stage: the base model
    ("orpo", "base", True, "base"),  # ORPO's own init setting
    ("orpo", "sft", True, "sft"),
    ("orpo", "sft", False, "base"),
    ("kto", "base", True, "sft"),    # KTO, like DPO, starts from and is held to the SFT model
])
def test_the_starting_model_follows_the_method_and_its_init(method: str, orpo_init: str, with_sft: bool,
                                                             expected: str) -> None:
    cfg = PipelineConfig.model_validate({"preference": {"method": method}, "orpo": {"init": orpo_init}})
    base = ModelRef(path="base", fingerprint="b")
    sft = TrainOutput(model=ModelRef(path="sft", fingerprint="s"), method="sft", steps=1, resumed_from_step=0,
                      final_metrics={}, seconds=0.0, tokens=0) if with_sft else None
    assert starting_model(cfg, base, sft).path == expected


@pytest.mark.parametrize(("round_reference", "expected"), [("previous", "policy-1"), ("original", "base")])
def test_a_later_round_is_held_to_the_previous_policy_or_the_original_model(round_reference: str,
                                                                           expected: str) -> None:
    cfg = PipelineConfig.model_validate({"onpolicy": {"enabled": True, "rounds": 2,
                                                      "round_reference": round_reference}})
    base = ModelRef(path="base", fingerprint="b")
    policy_1 = TrainOutput(model=ModelRef(path="policy-1", fingerprint="p"), method="dpo", steps=1,
                           resumed_from_step=0, final_metrics={}, seconds=0.0, tokens=0, reference=base)
    init = starting_model(cfg, base, policy_1)
    assert init.path == "policy-1"  # every round starts from the previous round's policy
    assert reference_model(cfg, init, policy_1).path == expected
    assert reference_model(cfg, base, None).path == "base"  # round 1: its own start, whatever the setting
    unrecorded = policy_1.model_copy(update={"reference": None})  # e.g. a result cached before references were kept
    if round_reference == "original":
        with pytest.raises(ValueError, match="onpolicy.round_reference=original: the previous round's policy"):
            reference_model(cfg, init, unrecorded)
    orpo = cfg.model_copy(update={"preference": cfg.preference.model_copy(update={"method": "orpo"})})
    assert reference_model(orpo, init, unrecorded).path == "policy-1"  # no reference: the start, for its KL


def test_kto_averages_its_reference_point_over_processes_only_when_several_train() -> None:
    from alignment.config import load_config

    assert load_config(None, ["preference.method=kto", "training.num_processes=2"]).training.world_size == 2
    one, _ = method_plan("kto", pad_id=0)
    two, _ = method_plan("kto", pad_id=0, processes=2)
    # the objective closes over its z0 averaging: none in one process, the all-reduce in several
    assert one.__closure__ is not None and two.__closure__ is not None
    cells = {c.cell_contents for c in two.__closure__ if callable(c.cell_contents)}
    assert mean_over_processes in cells and mean_over_processes not in {
        c.cell_contents for c in one.__closure__ if callable(c.cell_contents)}