"""The rounds' criterion and stopping rule (tasks/rounds.py), on hand-made on-policy reports, and the rounds
plot; the rounds themselves run in tests/integration/test_real_model.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from alignment.config import ConfigError, load_config
from alignment.records import ModelRef, PreparedData, TrainOutput
from evaluation.plots import plot_rounds
from tasks import rounds as rounds_module
from tasks.rounds import Round, heldout_score, iterate_rounds, later_round_config, length_ratio, stops_here


def pairs(passed: dict[str, int], seen: dict[str, int], degenerate: int, samples: int,
          median_words: float | None = None) -> PreparedData:
    split = {"passed": passed, "seen": seen, "degenerate": degenerate, "samples": samples,
             "median_words": median_words}
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


def test_round_gates_hold_benchmarks_and_sample_length_to_the_original_and_skip_what_was_not_measured() -> None:
    from evaluation.gates import round_gates

    gates = round_gates(benchmarks={"mc": (0.55, 0.61), "gen": (0.59, 0.60)}, max_benchmark_regression=0.05,
                        length_ratio=0.4, min_length_ratio=0.5)
    assert [(g.name, g.passed) for g in gates] == [("benchmark_regression.gen", True),
                                                    ("benchmark_regression.mc", False), ("length_ratio", False)]
    assert round_gates(benchmarks=None, max_benchmark_regression=0.05, length_ratio=None, min_length_ratio=0.5) == []
    assert length_ratio(pairs({}, {}, 0, 8, median_words=12.0), pairs({}, {}, 0, 8, median_words=30.0)) == 0.4
    assert length_ratio(pairs({}, {}, 0, 8), pairs({}, {}, 0, 8, median_words=30.0)) is None


class FakeRounds:
    """iterate_rounds with its stages replaced: each sampling returns the next prepared pairs, each training a
    new policy m<r>, benchmarks come from a table by model path."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, sampled: list[PreparedData], bench: dict[str, float]) -> None:
        self.sampled, self.trained = list(sampled), 0
        monkeypatch.setattr(rounds_module, "get_run_logger", lambda: __import__("logging").getLogger("test"))
        monkeypatch.setattr(rounds_module, "onpolicy", lambda *a: self.sampled.pop(0))
        monkeypatch.setattr(rounds_module, "train_preference", self.train)
        monkeypatch.setattr(rounds_module, "headline_benchmarks",
                            lambda cfg, models, ctx: [{"mc": bench[m.path]} for m in models])
        monkeypatch.setattr(rounds_module, "record_rounds", lambda *a: None)

    def train(self, *_a: object) -> TrainOutput:
        self.trained += 1
        return policy().model_copy(update={"model": ModelRef(path=f"m{self.trained + 1}", fingerprint="y")})


def run_rounds(rounds: int, *extra: str) -> tuple[Round, list[Round]]:
    cfg = load_config(None, ["onpolicy.enabled=true", f"onpolicy.rounds={rounds}",
                             "promotion.max_benchmark_regression=0.05", "promotion.min_length_ratio=0.5", *extra])
    first = Round(1, pairs({"k": 1}, {"k": 10}, 0, 10, median_words=30.0),
                  policy().model_copy(update={"model": ModelRef(path="m1", fingerprint="x")}), start_score=0.1)
    return iterate_rounds(cfg, first.pairs, ModelRef(path="base", fingerprint="b"), first,
                          ModelRef(path="base", fingerprint="b"), None)


def test_a_later_round_whose_policy_loses_general_ability_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeRounds(monkeypatch, [pairs({"k": 3}, {"k": 10}, 0, 10, median_words=28.0)],
               {"base": 0.60, "m1": 0.59, "m2": 0.50})
    kept, every = run_rounds(2)
    assert kept.number == 1 and [(r.number, r.kept, r.failed_gates) for r in every] == [
        (1, True, []), (2, False, ["benchmark_regression.mc"])]
    assert every[0].length_ratio == pytest.approx(28 / 30) and every[1].benchmarks == {"mc": 0.50}


def test_rounds_stop_before_building_on_a_policy_whose_answers_collapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRounds(monkeypatch, [pairs({"k": 5}, {"k": 10}, 0, 10, median_words=12.0)],
                      {"base": 0.60, "m1": 0.60})
    kept, every = run_rounds(3)
    # round 1's policy raised the criterion but its samples are 0.4 of the original's length: no round 2
    assert fake.trained == 0 and kept.number == 1 and every[0].failed_gates == ["length_ratio"]


def test_rounds_that_pass_every_gate_all_stand(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeRounds(monkeypatch, [pairs({"k": 3}, {"k": 10}, 0, 10, median_words=29.0)], {"base": 0.60, "m1": 0.60,
                                                                                      "m2": 0.58})
    kept, every = run_rounds(2)
    assert kept.number == 2 and all(r.kept and not r.failed_gates for r in every)


def test_without_round_gates_only_the_criterion_stops_the_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeRounds(monkeypatch, [pairs({"k": 5}, {"k": 10}, 0, 10, median_words=12.0)], {"base": 0.60, "m1": 0.40,
                                                                                      "m2": 0.30})
    kept, every = run_rounds(2, "onpolicy.round_gates=false")
    assert kept.number == 2 and [r.failed_gates for r in every] == [[], []] and every[1].benchmarks == {"mc": 0.30}
