"""The rounds' criterion and stopping rule (tasks/rounds.py), on hand-made on-policy reports, and the rounds
plot; the rounds themselves run in tests/integration/test_real_model.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment.config import ConfigError, load_config
from alignment.records import ModelRef, PreparedData, TrainOutput
from evaluation.plots import plot_rounds
from tasks.rounds import Round, heldout_score, later_round_config, stops_here


def pairs(passed: dict[str, int], seen: dict[str, int], degenerate: int, samples: int) -> PreparedData:
    split = {"passed": passed, "seen": seen, "degenerate": degenerate, "samples": samples}
    return PreparedData(dir="d", fingerprint="f", counts={"train": 5},
                        report={"onpolicy": {"splits": {"heldout": split, "train": {}}}})


def policy(loss: float = 0.5) -> TrainOutput:
    return TrainOutput(model=ModelRef(path="m", fingerprint="x"), method="dpo", steps=1, resumed_from_step=0,
                       final_metrics={"loss": loss}, seconds=1.0, tokens=1)


def test_the_criterion_is_the_pass_rate_less_the_degenerate_rate() -> None:
    # 6 of 10 instruction checks passed, 2 of 8 samples degenerate: 0.6 - 0.25
    assert heldout_score(pairs({"case": 2, "words": 4}, {"case": 4, "words": 6}, 2, 8)) == pytest.approx(0.35)
    assert heldout_score(pairs({}, {}, 0, 8)) is None  # no instruction was checked
    assert heldout_score(PreparedData(dir="d", fingerprint="f", counts={}, report={})) is None  # not on-policy data


def test_a_round_is_kept_only_when_its_policy_raised_the_criterion() -> None:
    assert not stops_here(Round(1, pairs({}, {}, 0, 0), policy(), start_score=0.30, end_score=0.31), 0.0)
    assert stops_here(Round(1, pairs({}, {}, 0, 0), policy(), start_score=0.30, end_score=0.30), 0.0)
    assert stops_here(Round(2, pairs({}, {}, 0, 0), policy(), start_score=0.30, end_score=0.34), 0.05)
    assert not stops_here(Round(2, pairs({}, {}, 0, 0), policy(), start_score=0.30, end_score=0.10), -1.0)
    assert not stops_here(Round(2, pairs({}, {}, 0, 0), policy(), start_score=None, end_score=0.1), 0.0)


def test_later_rounds_start_from_the_previous_policy_and_rounds_need_onpolicy() -> None:
    cfg = load_config(None, ["preference.method=orpo", "orpo.init=base", "onpolicy.enabled=true",
                             "onpolicy.rounds=3"])
    assert later_round_config(cfg).orpo.init == "sft" and cfg.orpo.init == "base"
    with pytest.raises(ConfigError, match="onpolicy.rounds=2 needs onpolicy.enabled=true"):
        load_config(None, ["onpolicy.rounds=2"])
    with pytest.raises(ConfigError, match="onpolicy.rounds"):
        load_config(None, ["onpolicy.enabled=true", "onpolicy.rounds=11"])


def test_rounds_plot(tmp_path: Path) -> None:
    rows = [{"round": 1, "start_score": 0.2, "end_score": 0.3, "kept": True, "kl": 1.5,
             "benchmarks": {"alignflow_general_mc": 0.61, "alignflow_general_gen": 0.58}},
            {"round": 2, "start_score": 0.3, "end_score": 0.25, "kept": False, "kl": 2.5,
             "benchmarks": {"alignflow_general_mc": 0.60, "alignflow_general_gen": 0.55}}]
    path = plot_rounds(rows, tmp_path / "rounds.png", start_benchmarks={"alignflow_general_mc": 0.62})
    assert path is not None and path.stat().st_size > 5000
    import matplotlib.image
    width = matplotlib.image.imread(path).shape[1]
    only_criterion = plot_rounds([{k: r[k] for k in ("round", "start_score", "end_score", "kept")} for r in rows],
                                 tmp_path / "one.png")
    assert only_criterion is not None and matplotlib.image.imread(only_criterion).shape[1] * 2.5 < width  # 3 panels
    assert plot_rounds([{"round": 1, "start_score": None, "end_score": None, "kept": True}], tmp_path / "x.png") is None


def test_a_rounds_row_carries_its_reference_kl_and_benchmarks() -> None:
    original = ModelRef(path="orig", fingerprint="o")
    trained = policy().model_copy(update={"reference": original, "final_metrics": {"loss": 0.4, "saved_kl": 1.25}})
    row = Round(2, pairs({}, {}, 0, 0), trained, start_score=0.1, benchmarks={"mc": 0.6}).row()
    assert (row["reference"], row["kl"], row["benchmarks"], row["pairs"]) == ("orig", 1.25, {"mc": 0.6}, 5)
    assert Round(1, pairs({}, {}, 0, 0), policy(), start_score=None).row()["reference"] is None  # ORPO: none
