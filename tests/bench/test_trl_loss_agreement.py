"""alignflow's losses equal TRL's on the same fixed batches: same initial weights, same token ids, no training.

The policy is the tiny model with seeded noise added to every weight and the reference is the unperturbed
model, so DPO's log-ratios are far from zero (at policy == reference every DPO loss is ln 2 on both sides,
which would prove nothing). Batches are consecutive rows of the quickstart pairs and of the HH-like pairs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from tests.bench import require_trl

require_trl(module_level=True)

import torch  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from bench.pairs import build_pairs  # noqa: E402
from bench.probe import load_model  # noqa: E402
from bench.trainers import BenchOptions, save_tiny_model  # noqa: E402
from bench.trial import alignflow_batch_losses, compare_losses, perturbed_copy  # noqa: E402
from bench.trl_side import batch_losses, make_trainer  # noqa: E402

BATCH, BATCHES, MAX_LENGTH, TOLERANCE = 4, 3, 256, 1e-3
BETA, LAM = 0.1, 0.5
DATA = ("quickstart", "hh")


@pytest.fixture(scope="module")
def bench_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.set_num_threads(1)
    model_dir = save_tiny_model(tmp_path_factory.mktemp("bench-loss") / "model", BenchOptions(max_length=MAX_LENGTH))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = {name: build_pairs(name, tokenizer, BATCH * BATCHES, seed=0, max_length=MAX_LENGTH) for name in DATA}
    return {"model_dir": model_dir, "tokenizer": tokenizer, "pairs": pairs}


def both_losses(setup: dict[str, Any], tmp_path: Path, method: str, variant: str, data: str) -> dict[str, Any]:
    model_dir, tokenizer, pairs = setup["model_dir"], setup["tokenizer"], setup["pairs"][data]

    def policy() -> torch.nn.Module:
        model = load_model(str(model_dir), "cpu")
        perturbed_copy(model, seed=0)
        return model

    ours = alignflow_batch_losses(method, policy(), load_model(str(model_dir), "cpu"), pairs, tokenizer.pad_token_id,
                                  BATCH, BATCHES, beta=BETA, lam=LAM)
    trainer = make_trainer(method, variant, policy(), tokenizer, pairs, tmp_path, steps=BATCHES, batch_size=BATCH,
                           learning_rate=1e-4, seed=0, max_length=MAX_LENGTH, beta=BETA, lam=LAM,
                           ref_model=load_model(str(model_dir), "cpu") if method == "dpo" else None)
    return compare_losses(method, ours, batch_losses(trainer, method, BATCH, BATCHES))


@pytest.mark.parametrize("data", DATA)
@pytest.mark.parametrize(("method", "variant"), [("dpo", "trl"), ("dpo", "trl-precompute"), ("sft", "trl")])
def test_loss_matches_trl(bench_setup: dict[str, Any], tmp_path: Path, method: str, variant: str, data: str) -> None:
    """DPO (sigmoid, beta 0.1; TRL with its reference model each step, and with precomputed reference log-probs)
    and SFT (token-mean NLL over completion tokens, TRL's completion_only_loss) agree within 1e-3."""
    out = both_losses(bench_setup, tmp_path, method, variant, data)
    assert out["max_abs_diff"] <= TOLERANCE, out
    if method == "dpo":  # the policy really differs from the reference
        assert any(abs(loss - math.log(2)) > 0.01 for loss in out["trl"]), out


@pytest.mark.parametrize("data", DATA)
def test_orpo_loss_matches_trl(bench_setup: dict[str, Any], tmp_path: Path, data: str) -> None:
    """ORPO, lambda 0.5 (TRL's ORPOConfig.beta), NLL term over prompt + response (orpo.nll_tokens=
    "prompt_and_response", TRL's definition): the NLL term and the whole loss agree within 1e-3."""
    out = both_losses(bench_setup, tmp_path, "orpo", "trl", data)
    assert out["max_abs_diff_nll_term"] <= TOLERANCE, out
    assert out["max_abs_diff"] <= TOLERANCE, out
