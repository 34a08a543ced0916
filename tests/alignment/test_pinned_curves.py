"""Invariant: short, seeded SFT and DPO training curves of the tiny Llama (hidden 32, 2 layers) on the
quickstart data, pinned in tests/alignment/data/pinned_curves.json (house style 12, as TRL's
tests/invariant).

Each curve is 8 optimizer steps from the same seeded model (lr 1e-3, 2 warm-up steps then cosine, batch 4,
one thread); per step the trainer's logged loss and gradient norm (and, for DPO, the reward margin) must
match the pinned values to atol = rtol = 1e-5. Float noise passes: the run is bitwise repeatable on one
machine, and swapping the matmul kernel (torch's F.linear for alignment/kernels/cpu_matmul.py's oneDNN path) moves
no value by more than 1 % of the tolerance. Any change of the maths fails: a learning rate 0.1 % off moves
values by 2-19x the tolerance; 1 % off, beta 0.1 -> 0.11 or 3 warm-up steps instead of 2 by 20-5600x.

DPO's reference is the starting model, so its first loss is -log sigmoid(0) = ln 2 = 0.693147 and its first
margin 0, whatever beta: a hand-computed anchor checked apart from the pinned file. (The second step's are
too: warm-up starts at lr 0, so the first step leaves the weights as they were.)

The curves are CPU ones (skipped where CUDA is visible: the trainer would train there). When a change of
the maths is intended, regenerate the file and say why in the commit. Both the reference pass and the training
run the default runtime plan of a CPU stage (alignment/kernels/runtime_plan.py), as the pipeline's stages do. To regenerate:

    .venv/bin/python -m tests.alignment.test_pinned_curves
"""

from __future__ import annotations

import functools
import json
import math
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import PreTrainedTokenizerFast

from alignment.config import OptimConfig, TrainingConfig
from alignment.data.tokenization import encode_pairs, encode_sft
from alignment.instruct import quicktask
from alignment.kernels.runtime_plan import plan_for
from alignment.models.tiny import build_model, train_tokenizer
from alignment.stages import as_conversational
from alignment.training.logprobs import collate_sft, reference_logps
from alignment.training.objectives import method_plan, sft_objective
from alignment.training.tracking import InMemoryLogger
from alignment.training.trainer import train

PINNED = Path(__file__).parent / "data" / "pinned_curves.json"
OPTIM = OptimConfig(learning_rate=1e-3, warmup_ratio=0.25, lr_scheduler="cosine", batch_size=4, max_steps=8,
                    log_every=1, save_every=100)
BETA = 0.1
ROWS = 32  # rows of each kind: 8 steps of 4 see every row once
PINNED_METRICS = {"sft": ("loss", "grad_norm"), "dpo": ("loss", "grad_norm", "rewards/margins")}
ATOL = RTOL = 1e-5


def tokenizer() -> PreTrainedTokenizerFast:
    return train_tokenizer(quicktask.corpus(), 1024)


def tiny_model(tok: PreTrainedTokenizerFast) -> torch.nn.Module:
    return build_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_position_embeddings=128, seed=0)


def quick_data() -> dict[str, list[dict[str, str]]]:
    return quicktask.generate(seed=0, heldout_fraction=0.2, good_fraction=0.35, refusal_fraction=0.6)


def sft_rows(tok: PreTrainedTokenizerFast) -> list[dict[str, list[int]]]:
    rows = [as_conversational(r) for r in quick_data()["sft"][:ROWS]]
    enc = encode_sft(tok, rows, max_tokens=128)
    return [{"input_ids": i, "labels": lab} for i, lab in zip(enc["input_ids"], enc["labels"], strict=True)]


def dpo_rows(tok: PreTrainedTokenizerFast, reference: torch.nn.Module) -> list[dict]:
    """Quickstart pairs with the reference's summed log-probs of chosen and rejected, as the stage adds them."""
    rows = [as_conversational(r) for r in quick_data()["train"][:ROWS]]
    enc = encode_pairs(tok, rows, max_prompt_tokens=96, max_response_tokens=32)
    pairs = [dict(zip(enc, ids, strict=True)) for ids in zip(*enc.values(), strict=True)]
    chosen, rejected = reference_logps(reference, pairs, tok.pad_token_id, batch_size=16,
                                       plan=plan_for(TrainingConfig(), "cpu", "preference"))
    for row, c, r in zip(pairs, chosen, rejected, strict=True):
        row["ref_chosen_logps"], row["ref_rejected_logps"] = c, r
    return pairs


def curve(method: str, *, beta: float = BETA, optim: OptimConfig = OPTIM) -> dict[str, list[float]]:
    """The pinned metrics per step of 8 steps of `method` ("sft" or "dpo") from the seeded tiny model."""
    torch.set_num_threads(1)
    tok = tokenizer()
    model = tiny_model(tok)
    if method == "sft":
        rows, objective = sft_rows(tok), sft_objective
        collate = functools.partial(collate_sft, pad_id=tok.pad_token_id)
    else:
        rows = dpo_rows(tok, tiny_model(tok))  # the reference: the starting model itself
        objective, collate = method_plan("dpo", pad_id=tok.pad_token_id, beta=beta)
    logger = InMemoryLogger()
    with tempfile.TemporaryDirectory() as out:
        train(model, rows, objective=objective, collate=collate, optim=optim, output_dir=Path(out), seed=0,
              logger=logger, plan=plan_for(TrainingConfig(), "cpu", "sft" if method == "sft" else "preference"))
    records = [(step, m) for step, m in logger.records if step is not None]
    assert [step for step, _ in records] == list(range(1, optim.max_steps + 1))
    return {name: [m[name] for _, m in records] for name in PINNED_METRICS[method]}


def assert_matches_pinned(method: str, got: dict[str, list[float]]) -> None:
    pinned = json.loads(PINNED.read_text())[method]
    assert got.keys() == pinned.keys()
    for name, values in pinned.items():
        assert_close(torch.tensor(got[name], dtype=torch.float64), torch.tensor(values, dtype=torch.float64),
                     atol=ATOL, rtol=RTOL, msg=lambda m, n=name: f"{method} {n} left the pinned curve: {m}")


@pytest.mark.skipif(torch.cuda.is_available(), reason="pinned for CPU arithmetic; the trainer would use the GPU")
@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_curve_matches_the_pinned_one(method: str) -> None:
    got = curve(method)
    assert_matches_pinned(method, got)
    assert min(got["loss"]) < got["loss"][0] - 0.004  # and it is a training curve: the loss fell
    if method == "dpo":
        assert got["loss"][0] == pytest.approx(math.log(2), abs=1e-6)  # policy == reference at step 1
        assert got["rewards/margins"][0] == pytest.approx(0.0, abs=1e-6)


def main() -> None:
    """Rewrite the pinned file from this checkout's code."""
    PINNED.parent.mkdir(parents=True, exist_ok=True)
    curves = {method: curve(method) for method in PINNED_METRICS}
    PINNED.write_text(json.dumps(curves, indent=2) + "\n")
    sys.stdout.write(f"wrote {PINNED}\n")


if __name__ == "__main__":
    main()
