"""The training loop on a very small Llama (hidden 32, 2 layers) and quickstart SFT rows: resume after a kill,
gradient-accumulation invariance, non-finite losses, determinism."""

from __future__ import annotations

import collections
import functools
import re
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from alignment.config import OptimConfig
from alignment.data.tokenization import IGNORE_INDEX
from alignment.models.tiny import build_model
from alignment.training.logprobs import collate_sft
from alignment.training.objectives import StepOutput, sft_objective
from alignment.training.tracking import InMemoryLogger
from alignment.training.trainer import (
    NonFiniteLossError,
    TrainResult,
    batch_indices,
    epoch_order,
    latest_checkpoint,
    plan_steps,
    train,
)

OPTIM = OptimConfig(learning_rate=1e-3, warmup_ratio=0.25, lr_scheduler="cosine", batch_size=4, max_steps=8,
                    log_every=1, save_every=100)


class SimulatedKill(Exception):
    """Stands in for the process dying mid-run."""


class FailingObjective:
    """sft_objective that, on call number `at` (1-based), raises SimulatedKill or multiplies the loss by
    `poison` (NaN/inf)."""

    def __init__(self, at: int, poison: float | None = None) -> None:
        self.at, self.poison, self.calls = at, poison, 0

    def __call__(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        self.calls += 1
        out = sft_objective(model, batch)
        if self.calls == self.at:
            if self.poison is None:
                raise SimulatedKill(f"killed at call {self.calls}")
            return StepOutput(out.loss * self.poison, out.metrics)
        return out


def make_model(tok) -> torch.nn.Module:
    return build_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)


def fit(tok, rows, optim: OptimConfig, out: Path, objective=sft_objective,
        seed: int = 0) -> tuple[torch.nn.Module, TrainResult, InMemoryLogger]:
    model, logger = make_model(tok), InMemoryLogger()
    result = train(model, rows, objective=objective, collate=functools.partial(collate_sft, pad_id=tok.pad_token_id),
                   optim=optim, output_dir=out, seed=seed, logger=logger)
    return model, result, logger


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, atol: float) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert_close(sa[name], sb[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def deterministic_records(logger: InMemoryLogger) -> list[tuple[int | None, dict[str, float]]]:
    """Logged metrics without the wall-clock ones."""
    return [(step, {k: v for k, v in m.items() if k != "tokens_per_sec"}) for step, m in logger.records]


def checkpoint_names(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_resume_after_kill_matches_uninterrupted_run(quick_tokenizer, sft_rows, tmp_path) -> None:
    """8 steps straight == (save every 4, killed during step 6, restarted with a fresh model): the restart
    resumes from step 4 (model, optimizer, scheduler, RNG and data position) and ends at the same weights."""
    tok, rows = quick_tokenizer, sft_rows[:16]
    straight, straight_result, straight_log = fit(tok, rows, OPTIM, tmp_path / "straight")
    assert straight_result.resumed_from_step == 0 and straight_result.steps == 8

    optim = OPTIM.model_copy(update={"save_every": 4})
    killer = FailingObjective(at=6)
    with pytest.raises(SimulatedKill):
        fit(tok, rows, optim, tmp_path / "killed", objective=killer)
    assert killer.calls == 6
    assert checkpoint_names(tmp_path / "killed") == ["step-0000004"]

    resumed, result, log = fit(tok, rows, optim, tmp_path / "killed")
    assert result.resumed_from_step == 4 and result.steps == 8
    assert_same_weights(resumed, straight, atol=1e-6)
    assert not torch.equal(straight.state_dict()["model.layers.0.mlp.up_proj.weight"],
                           make_model(tok).state_dict()["model.layers.0.mlp.up_proj.weight"])  # it trained
    # steps 5..8 log the same metrics as the uninterrupted run (same lr schedule position, same batches)
    assert deterministic_records(log) == deterministic_records(straight_log)[4:]
    assert checkpoint_names(tmp_path / "killed") == ["step-0000004", "step-0000008"]


def test_rerun_of_a_finished_training_still_reports_its_final_loss(quick_tokenizer, sft_rows, tmp_path) -> None:
    """The rerun trains no step (it resumes at the end) and reports the first run's last metrics, read back
    from the final checkpoint, not an empty or recomputed dict."""
    optim = OPTIM.model_copy(update={"max_steps": 2})
    _, first, first_log = fit(quick_tokenizer, sft_rows[:8], optim, tmp_path)
    _, again, again_log = fit(quick_tokenizer, sft_rows[:8], optim, tmp_path)
    assert first.resumed_from_step == 0 and [step for step, _ in first_log.records] == [1, 2]
    assert again.resumed_from_step == 2 and again.steps == 2
    assert again_log.records == []  # nothing trained, nothing logged again
    assert first.final_metrics["loss"] == first_log.records[-1][1]["loss"]
    assert again.final_metrics == first.final_metrics


def test_gradient_accumulation_invariance(quick_tokenizer, sft_rows, tmp_path) -> None:
    """4x1, 2x2 and 1x4 see the same 12 rows in the same order over 3 steps. With rows of equal length and
    equal answer length, the mean of per-micro-batch token means equals the full-batch token mean, so the
    accumulated gradients, and the weights, agree up to float rounding."""
    shapes = collections.Counter((len(r["input_ids"]), sum(t != IGNORE_INDEX for t in r["labels"])) for r in sft_rows)
    shape, count = shapes.most_common(1)[0]
    assert count >= 12
    rows = [r for r in sft_rows
            if (len(r["input_ids"]), sum(t != IGNORE_INDEX for t in r["labels"])) == shape][:12]
    models = {}
    for batch_size, accum in [(4, 1), (2, 2), (1, 4)]:
        optim = OPTIM.model_copy(update={"batch_size": batch_size, "grad_accum_steps": accum, "max_steps": 3})
        models[batch_size], result, _ = fit(quick_tokenizer, rows, optim, tmp_path / f"b{batch_size}")
        assert result.steps == 3
    assert_same_weights(models[2], models[4], atol=1e-5)
    assert_same_weights(models[1], models[4], atol=1e-5)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_loss_stops_training_and_keeps_complete_checkpoints(quick_tokenizer, sft_rows, tmp_path,
                                                                       poison: float) -> None:
    optim = OPTIM.model_copy(update={"save_every": 2})
    with pytest.raises(NonFiniteLossError, match=r"at step 5\b"):
        fit(quick_tokenizer, sft_rows[:16], optim, tmp_path, objective=FailingObjective(at=5, poison=poison))
    names = checkpoint_names(tmp_path)
    assert names == ["step-0000002", "step-0000004"]  # nothing half-written, nothing from the bad step
    for name in names:
        assert re.fullmatch(r"step-\d{7}", name)
        assert (tmp_path / "checkpoints" / name / "trainer_state.json").is_file()
    assert latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "step-0000004"


def test_non_finite_loss_in_a_later_micro_batch_names_the_optimizer_step(quick_tokenizer, sft_rows,
                                                                         tmp_path) -> None:
    """grad_accum 2: call 6 is the second micro-batch of optimizer step 3."""
    optim = OPTIM.model_copy(update={"batch_size": 2, "grad_accum_steps": 2})
    with pytest.raises(NonFiniteLossError, match=r"at step 3\b"):
        fit(quick_tokenizer, sft_rows[:16], optim, tmp_path, objective=FailingObjective(at=6, poison=float("nan")))


def test_same_seed_gives_identical_metrics(quick_tokenizer, sft_rows, tmp_path) -> None:
    optim = OPTIM.model_copy(update={"max_steps": 4})
    _, _, first = fit(quick_tokenizer, sft_rows[:16], optim, tmp_path / "a")
    _, _, second = fit(quick_tokenizer, sft_rows[:16], optim, tmp_path / "b")
    _, _, other = fit(quick_tokenizer, sft_rows[:16], optim, tmp_path / "c", seed=1)
    assert [step for step, _ in first.records] == [1, 2, 3, 4]
    assert deterministic_records(first) == deterministic_records(second)
    assert [m["loss"] for _, m in other.records] != [m["loss"] for _, m in first.records]  # seed sets data order


def test_empty_rows_are_refused(quick_tokenizer, tmp_path) -> None:
    with pytest.raises(ValueError, match="no training rows"):
        fit(quick_tokenizer, [], OPTIM, tmp_path)


def test_plan_steps_and_batch_indices() -> None:
    """10 rows, batch 4 -> 2 micro-batches per epoch (the last partial one dropped); 3 epochs with accum 2
    -> ceil(3 * 2 / 2) = 3 steps. Each epoch is a seeded permutation: no row repeats inside an epoch."""
    optim = OptimConfig(batch_size=4, grad_accum_steps=2, epochs=3.0)
    assert plan_steps(10, optim) == (3, 2)
    assert plan_steps(10, optim.model_copy(update={"max_steps": 7})) == (7, 2)
    epoch0 = batch_indices(0, 10, 4, 2, seed=0) + batch_indices(1, 10, 4, 2, seed=0)
    assert len(set(epoch0)) == 8 and set(epoch0) <= set(range(10))
    assert batch_indices(0, 10, 4, 2, seed=0) == batch_indices(0, 10, 4, 2, seed=0)
    assert batch_indices(2, 10, 4, 2, seed=0) != batch_indices(0, 10, 4, 2, seed=0)  # a new epoch reshuffles


def test_length_grouping_keeps_every_row_and_groups_similar_lengths() -> None:
    """200 rows of lengths 0..199, steps of 8 rows: each step's rows come from one length-sorted window,
    so their spread is small; every row appears exactly once; the order is seeded and batches are shuffled."""
    lengths = list(range(200))
    order = epoch_order(0, 200, 8, seed=3, lengths=lengths)
    assert sorted(order) == list(range(200))
    steps = [order[i:i + 8] for i in range(0, 200, 8)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in steps) / len(steps)
    random_order = epoch_order(0, 200, 8, seed=3)
    random_spread = sum(max(b) - min(b) for b in (random_order[i:i + 8] for i in range(0, 200, 8))) / 25
    assert spread < 0.2 * random_spread, (spread, random_spread)
    assert order == epoch_order(0, 200, 8, seed=3, lengths=lengths)
    assert order != epoch_order(1, 200, 8, seed=3, lengths=lengths)
    assert [min(b) for b in steps] != sorted(min(b) for b in steps)  # not simply shortest first


def test_grouped_steps_do_not_depend_on_processes_or_accumulation() -> None:
    lengths = [(i * 37) % 101 for i in range(96)]

    def step_rows(batch: int, world: int, accum: int, step: int) -> set[int]:
        rows = set()
        for micro in range(step * accum, (step + 1) * accum):
            for rank in range(world):
                rows |= set(batch_indices(micro, 96, batch, 96 // (batch * world), 0, rank, world, lengths, accum))
        return rows

    for step in range(3):
        assert step_rows(8, 1, 1, step) == step_rows(4, 2, 1, step) == step_rows(2, 2, 2, step)


def test_cpu_memory_choices_train_to_the_same_weights(quick_tokenizer, sft_rows, tmp_path, monkeypatch) -> None:
    """On CPU the trainer uses torch's fused AdamW, trims the heap after each step and, with activation
    checkpointing, zeroes gradients in place instead of freeing them: the same weights as foreach AdamW with
    freed gradients (to float rounding), over 8 steps."""
    import alignment.training.trainer as trainer

    assert trainer.adamw_implementation(torch.device("cpu")) == {"fused": True}
    assert trainer.adamw_implementation(torch.device("meta")) == {}
    model, _, _ = fit(quick_tokenizer, sft_rows, OPTIM, tmp_path / "lean")
    checkpointed = make_model(quick_tokenizer)
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert trainer.keeps_grads(checkpointed) and not trainer.keeps_grads(model)
    train(checkpointed, sft_rows, objective=sft_objective,
          collate=functools.partial(collate_sft, pad_id=quick_tokenizer.pad_token_id), optim=OPTIM,
          output_dir=tmp_path / "kept", seed=0, logger=InMemoryLogger())
    monkeypatch.setattr(trainer, "adamw_implementation", lambda device: {"foreach": True})
    monkeypatch.setattr(trainer, "keeps_grads", lambda model: False)
    monkeypatch.setattr(trainer, "release_free_memory", lambda device: None)
    plain, _, _ = fit(quick_tokenizer, sft_rows, OPTIM, tmp_path / "plain")
    assert_same_weights(model, plain, atol=1e-6)
    checkpointed.activation_checkpointing_disable()
    assert_same_weights(checkpointed, plain, atol=1e-6)
