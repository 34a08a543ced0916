"""Held-out evaluation during preference training (alignment/training/heldout.py, dpo/orpo.heldout_eval): the early
stopping decision on hand-checked loss sequences, and DPO on the tiny model evaluated every step, stopped
early, its best weights saved, a re-run resuming as finished."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alignment.config import ConfigError, load_config
from alignment.models.loading import load_causal_lm, load_tokenizer
from alignment.stages import build_base_model, prepare_data, reference_annotated_pairs, run_preference
from alignment.training.heldout import early_stop_decision, pair_metrics
from alignment.training.objectives import method_plan
from alignment.training.tracking import InMemoryLogger

NAN = math.nan


@pytest.mark.parametrize(("losses", "patience", "min_delta", "best", "stop"), [
    ([], 2, 0.0, None, False),                          # nothing evaluated yet
    ([1.0], 1, 0.0, 0, False),                          # the first evaluation is the best so far
    ([1.0, 0.9, 0.95, 0.93], 2, 0.0, 1, True),          # 0.95 and 0.93 are above 0.9: two without improving
    ([1.0, 0.9, 0.95, 0.93], 3, 0.0, 1, False),         # ... but patience 3 waits for one more
    ([1.0, 0.97, 0.96], 2, 0.05, 0, True),              # neither falls below 1.0 - 0.05 = 0.95
    ([1.0, 0.97, 0.96, 0.94], 2, 0.05, 3, False),       # 0.94 < 0.95 improves
    ([1.0, 1.0], 1, 0.0, 0, True),                      # equal is not better
    ([NAN, 2.0, NAN, NAN], 2, 0.0, 1, True),            # a NaN never improves
    ([NAN, NAN], 2, 0.0, None, True),                   # nor is it ever the best
    ([3.0, 4.0, 5.0, 6.0], None, 0.0, 0, False),        # patience unset: never stops
])
def test_early_stop_decision(losses, patience, min_delta, best, stop) -> None:
    decision = early_stop_decision(losses, patience=patience, min_delta=min_delta)
    assert (decision.best_index, decision.stop) == (best, stop)


def test_heldout_eval_is_off_by_default_and_refuses_several_processes() -> None:
    cfg = load_config("configs/quickstart.yaml")
    assert cfg.dpo.heldout_eval.every is None and cfg.orpo.heldout_eval.every is None and cfg.dpo.rpo_alpha == 0.0
    with pytest.raises(ConfigError, match="dpo.heldout_eval runs in one process only"):
        load_config(None, ["dpo.heldout_eval.every=2", "training.num_processes=2"])
    load_config(None, ["orpo.heldout_eval.every=2", "training.num_processes=2"])  # dpo is the method: no check
    with pytest.raises(ConfigError, match=r"dpo.heldout_eval.patience: .*greater than or equal to 1"):
        load_config(None, ["dpo.heldout_eval.patience=0"])


TINY = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1",
        "model.tiny.num_heads=2", "sft.enabled=false"]


def test_dpo_evaluated_every_step_stops_early_and_keeps_its_best_weights(tmp_path: Path) -> None:
    """A huge learning rate pushes the held-out DPO loss up: eval/* is logged at every step, training stops
    `patience` evaluations after the best one, the saved model is the best step's (its held-out loss is the
    one logged there), and a re-run resumes as finished with the same record."""
    cfg = load_config(None, [*TINY, "dpo.optim.max_steps=12", "dpo.optim.learning_rate=1.0",
                             "dpo.optim.warmup_ratio=0.0", "dpo.optim.lr_scheduler=constant_with_warmup",
                             "dpo.optim.batch_size=8", "dpo.optim.log_every=1", "dpo.rpo_alpha=0.01",
                             "dpo.heldout_eval.every=1", "dpo.heldout_eval.max_pairs=8",
                             "dpo.heldout_eval.kl_prompts=3", "dpo.heldout_eval.kl_max_new_tokens=6",
                             "dpo.heldout_eval.patience=2"])
    prepared = prepare_data(cfg, tmp_path / "data")
    base = build_base_model(cfg, prepared, tmp_path / "base")
    logger = InMemoryLogger()
    out = run_preference(cfg, prepared, base, None, tmp_path / "dpo", logger)

    losses = logger.curve("eval/loss")
    stopped = int(out.final_metrics["early_stopped_at_step"])
    best = int(out.final_metrics["best_step"])
    assert [step for step, _ in losses] == list(range(1, stopped + 1))  # every step up to the stop
    assert out.steps == stopped == best + 2 < 12
    assert min(losses, key=lambda s_l: s_l[1])[0] == best
    for name in ("eval/logps/chosen", "eval/logps/rejected", "eval/rewards/margins", "eval/rewards/accuracies",
                 "eval/kl", "eval/nll_loss"):
        assert [step for step, _ in logger.curve(name)] == list(range(1, stopped + 1)), name
    assert all(math.isfinite(v) for _, v in logger.curve("eval/kl"))
    assert out.final_metrics["saved_kl"] == dict(logger.curve("eval/kl"))[best]  # the KL of the model kept
    assert out.reference == base  # DPO without SFT is held to the base model

    # the saved model is the best step's: its held-out loss is the one logged at best_step
    tok = load_tokenizer(out.model.path)
    objective, collate = method_plan("dpo", pad_id=tok.pad_token_id, beta=cfg.dpo.beta, rpo_alpha=0.01)
    rows = reference_annotated_pairs(cfg, prepared, base, "heldout")[:8]
    with torch.no_grad():
        saved = pair_metrics(load_causal_lm(out.model.path).eval(), rows, objective, collate, batch_size=16)
    assert saved["eval/loss"] == pytest.approx(dict(losses)[best], abs=1e-4)

    state = json.loads(next((tmp_path / "dpo" / "checkpoints").glob(f"step-{stopped:07d}/trainer_state.json"))
                       .read_text())
    assert state["stopped_early_at"] == stopped and len(state["evaluator"]["history"]) == stopped
    again = run_preference(cfg, prepared, base, None, tmp_path / "dpo", InMemoryLogger())
    assert again.resumed_from_step == stopped and again.steps == stopped
    assert again.final_metrics["best_step"] == best and again.final_metrics["early_stopped_at_step"] == stopped
    assert again.model.fingerprint == out.model.fingerprint
    assert again.final_metrics["saved_kl"] == out.final_metrics["saved_kl"]  # kept in the checkpoint


def test_orpo_with_lora_is_evaluated_without_early_stopping(tmp_path: Path) -> None:
    """ORPO with LoRA (eval/kl against the adapters switched off), every 2 steps and at the last (5): patience
    unset, so it only evaluates and the last weights are the model; no early_stopped_at_step is recorded."""
    cfg = load_config(None, [*TINY, "preference.method=orpo", "orpo.optim.max_steps=5", "orpo.optim.batch_size=8",
                             "training.lora.r=4", "orpo.heldout_eval.every=2", "orpo.heldout_eval.max_pairs=4",
                             "orpo.heldout_eval.kl_prompts=2", "orpo.heldout_eval.kl_max_new_tokens=4"])
    prepared = prepare_data(cfg, tmp_path / "data")
    base = build_base_model(cfg, prepared, tmp_path / "base")
    logger = InMemoryLogger()
    out = run_preference(cfg, prepared, base, None, tmp_path / "orpo", logger)
    assert [step for step, _ in logger.curve("eval/kl")] == [2, 4, 5]
    assert [step for step, _ in logger.curve("eval/rewards/accuracies")] == [2, 4, 5]
    assert out.steps == 5 and "early_stopped_at_step" not in out.final_metrics
    assert out.final_metrics["eval/loss"] == logger.curve("eval/loss")[-1][1]
    assert out.final_metrics["saved_kl"] == logger.curve("eval/kl")[-1][1] and out.reference is None  # no patience: the last
    assert not (tmp_path / "orpo" / "best").exists()  # no early stopping: no best weights kept


def test_kto_is_evaluated_and_stops_early_on_its_own_loss(tmp_path: Path) -> None:
    """KTO's held-out evaluation scores its unpaired held-out examples (each held-out pair's two answers) against
    the starting model's log-probs, like DPO's pairs; early stopping keeps the best weights."""
    cfg = load_config(None, [*TINY, "preference.method=kto", "kto.optim.max_steps=4", "kto.optim.batch_size=8",
                             "kto.heldout_eval.every=2", "kto.heldout_eval.max_pairs=4", "kto.heldout_eval.kl_prompts=2",
                             "kto.heldout_eval.kl_max_new_tokens=4", "kto.heldout_eval.patience=1"])
    prepared = prepare_data(cfg, tmp_path / "data")
    base = build_base_model(cfg, prepared, tmp_path / "base")
    logger = InMemoryLogger()
    out = run_preference(cfg, prepared, base, None, tmp_path / "kto", logger)
    assert out.method == "kto" and [step for step, _ in logger.curve("eval/loss")][:1] == [2]
    assert all(0.0 <= loss <= 2.0 for _, loss in logger.curve("eval/loss"))  # KTO's loss: weighted 1 - sigmoid
    assert out.final_metrics["best_step"] in (2.0, 4.0) and "kl" in out.final_metrics  # z0 logged in training
