"""Batching and sequence log-probs on hand-made ids and a fake model with a fixed bigram table."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn
from torch.testing import assert_close

from alignment.data.tokenization import IGNORE_INDEX as X
from alignment.training.logprobs import (
    SequenceLogps,
    collate_pairs,
    collate_sft,
    collate_shared_pairs,
    count_tokens,
    pad_batch,
    reference_logps,
    sequence_logps,
)

T = torch.tensor
LOG2 = math.log(2.0)
PAD = 0

# P[prev][next]: every probability a power of two, so every log-prob is a multiple of log 2.
BIGRAM = T([[1 / 2, 1 / 4, 1 / 4],
            [1 / 4, 1 / 2, 1 / 4],
            [1 / 4, 1 / 4, 1 / 2]])


class BigramModel(nn.Module):
    """logits[b, t] = log P[input_ids[b, t]]: the output at t is the distribution of token t+1."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(BIGRAM.log())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor | None = None) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


def test_pad_batch_right_pads_ids_labels_and_mask() -> None:
    out = pad_batch([[5, 6, 7], [8]], [[X, 6, 7], [8]], pad_id=PAD)
    assert_close(out["input_ids"], T([[5, 6, 7], [8, PAD, PAD]]))
    assert_close(out["attention_mask"], T([[1, 1, 1], [1, 0, 0]]))
    assert_close(out["labels"], T([[X, 6, 7], [8, X, X]]))
    assert all(v.dtype == torch.long for v in out.values())
    assert count_tokens(out) == 4


def test_collate_pairs_chosen_rows_first_then_rejected() -> None:
    """Rows: chosen_1 = [1,2|3], chosen_2 = [6|7,8], rejected_1 = [1,2|4,5], rejected_2 = [6|9]; width 4;
    prompt tokens and padding are masked in labels."""
    rows = [{"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]},
            {"prompt_ids": [6], "chosen_ids": [7, 8], "rejected_ids": [9]}]
    out = collate_pairs(rows, pad_id=PAD)
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert_close(out["input_ids"], T([[1, 2, 3, PAD], [6, 7, 8, PAD], [1, 2, 4, 5], [6, 9, PAD, PAD]]))
    assert_close(out["attention_mask"], T([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]))
    assert_close(out["labels"], T([[X, X, 3, X], [X, 7, 8, X], [X, X, 4, 5], [X, 9, X, X]]))


def test_collate_pairs_carries_reference_logps() -> None:
    rows = [{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3],
             "ref_chosen_logps": -1.5, "ref_rejected_logps": -2.5},
            {"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3],
             "ref_chosen_logps": -0.5, "ref_rejected_logps": -3.0}]
    out = collate_pairs(rows, pad_id=PAD)
    assert_close(out["ref_chosen_logps"], T([-1.5, -0.5]))
    assert_close(out["ref_rejected_logps"], T([-2.5, -3.0]))
    assert out["input_ids"].shape == (4, 2)


def test_collate_sft_pads_input_ids_and_labels() -> None:
    out = collate_sft([{"input_ids": [1, 2], "labels": [X, 2]}, {"input_ids": [3], "labels": [X]}], pad_id=PAD)
    assert_close(out["input_ids"], T([[1, 2], [3, PAD]]))
    assert_close(out["labels"], T([[X, 2], [X, X]]))


def test_sequence_logps_matches_hand_computation() -> None:
    """Row A: ids [0, 1, 2], labels [-, 1, 2]: log P[0][1] + log P[1][2] = log 1/4 + log 1/4 = -4 log 2, 2 tokens.
    Row B: ids [2, 2, pad], labels [-, 2, -]: log P[2][2] = log 1/2 = -log 2, 1 token (padding ignored).
    (Misaligned by one, row A would read log P[1][1] + log P[2][2] = -2 log 2 instead.)"""
    batch = pad_batch([[0, 1, 2], [2, 2]], [[X, 1, 2], [X, 2]], pad_id=PAD)
    out = sequence_logps(BigramModel(), batch)
    assert_close(out.sum, T([-4 * LOG2, -LOG2]))
    assert_close(out.count, T([2, 1]))
    assert_close(out.mean, T([-2 * LOG2, -LOG2]))


def test_sequence_logps_ignores_a_label_on_the_first_position() -> None:
    """Nothing predicts token 0, so a label there cannot count: ids [1, 0], labels [1, 0] -> log P[1][0]
    = log 1/4 = -2 log 2 over 1 token."""
    batch = pad_batch([[1, 0]], [[1, 0]], pad_id=PAD)
    out = sequence_logps(BigramModel(), batch)
    assert_close(out.sum, T([-2 * LOG2]))
    assert_close(out.count, T([1]))


def test_sequence_logps_is_differentiable() -> None:
    model = BigramModel()
    batch = pad_batch([[0, 1, 2]], [[X, 1, 2]], pad_id=PAD)
    sequence_logps(model, batch).sum.sum().backward()
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0


def test_mean_of_an_empty_row_is_zero_not_nan() -> None:
    out = SequenceLogps(sum=T([-3.0, 0.0]), count=T([2, 0]))
    assert_close(out.mean, T([-1.5, 0.0]))


def test_split_halves_the_rows() -> None:
    out = SequenceLogps(sum=T([-1.0, -2.0, -3.0, -4.0]), count=T([1, 2, 3, 4]))
    chosen, rejected = out.split()
    assert_close(chosen.sum, T([-1.0, -2.0]))
    assert_close(chosen.count, T([1, 2]))
    assert_close(rejected.sum, T([-3.0, -4.0]))
    assert_close(rejected.count, T([3, 4]))


def test_reference_logps_per_pair() -> None:
    """Pair 1: prompt [0], chosen [1] -> log P[0][1] = -2 log 2; rejected [0] -> log P[0][0] = -log 2.
    Pair 2: prompt [2], chosen [2, 2] -> 2 log 1/2 = -2 log 2; rejected [1] -> log P[2][1] = -2 log 2.
    batch_size 1 and 2 give the same answer."""
    rows = [{"prompt_ids": [0], "chosen_ids": [1], "rejected_ids": [0]},
            {"prompt_ids": [2], "chosen_ids": [2, 2], "rejected_ids": [1]}]
    for batch_size in (1, 2):
        chosen, rejected = reference_logps(BigramModel(), rows, pad_id=PAD, batch_size=batch_size)
        assert_close(T(chosen), T([-2 * LOG2, -2 * LOG2]))
        assert_close(T(rejected), T([-LOG2, -2 * LOG2]))


def test_collate_shared_pairs_layout() -> None:
    """Pair (prompt [5, 6], chosen [7], rejected [8, 9]) -> one row [5, 6, 7, 8, 9]; the rejected branch
    restarts at position 2; row 2 (prompt [5], chosen [7], rejected [8]) is padded to 5."""
    rows = [{"prompt_ids": [5, 6], "chosen_ids": [7], "rejected_ids": [8, 9], "ref_chosen_logps": -1.0,
             "ref_rejected_logps": -2.0},
            {"prompt_ids": [5], "chosen_ids": [7], "rejected_ids": [8], "ref_chosen_logps": -3.0,
             "ref_rejected_logps": -4.0}]
    out = collate_shared_pairs(rows, pad_id=PAD)
    assert_close(out["input_ids"], T([[5, 6, 7, 8, 9], [5, 7, 8, PAD, PAD]]))
    assert_close(out["position_ids"], T([[0, 1, 2, 2, 3], [0, 1, 1, 0, 0]]))
    # chosen 7 from position 1; rejected 8 from position 1 (the prompt's end), 9 from position 3; row 2
    # (flat offset 5): chosen 7 from 5 + 0, rejected 8 from 5 + 0 too.
    assert out["pred_index"].tolist() == [1, 1, 3, 5, 5]
    assert out["target_ids"].tolist() == [7, 8, 9, 7, 8]
    assert out["segment"].tolist() == [0, 2, 2, 1, 3]  # chosen rows 0..B-1, rejected B..2B-1
    allowed = out["attention_mask"][:, 0] == 0
    assert allowed[0].tolist() == [[True, False, False, False, False],
                                   [True, True, False, False, False],
                                   [True, True, True, False, False],
                                   [True, True, False, True, False],  # 8 sees the prompt, not 7
                                   [True, True, False, True, True]]
    assert allowed[1, 3].tolist() == [False, False, False, True, False]  # padding sees only itself
    assert int(out["num_tokens"]) == 8 and count_tokens(out) == 8
    assert_close(out["ref_rejected_logps"], T([-2.0, -4.0]))


def test_shared_and_concatenated_layouts_give_the_same_logps() -> None:
    """On a real (random) Llama with rotary positions: the prefix-shared row reproduces the log-probs of
    encoding prompt + chosen and prompt + rejected separately."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=64, max_position_embeddings=64))
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(1, 64, (n,), generator=gen).tolist()

    rows = [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)}
            for p, c, r in ((7, 3, 5), (2, 6, 1), (11, 2, 4))]
    concat = sequence_logps(model, collate_pairs(rows, pad_id=PAD))
    shared = sequence_logps(model, collate_shared_pairs(rows, pad_id=PAD))
    assert_close(shared.count, concat.count)
    assert_close(shared.sum, concat.sum, atol=1e-4, rtol=1e-5)


def tiny_llama(vocab: int = 64) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=64))


def random_rows(shapes: tuple[tuple[int, int, int], ...], vocab: int = 64) -> list[dict]:
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(1, vocab, (n,), generator=gen).tolist()

    return [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)} for p, c, r in shapes]


def test_scored_prompt_equals_an_sft_row_over_prompt_and_chosen() -> None:
    """score_prompt adds the prompts' tokens 1..P-1 as a third group; chosen + prompt then equal the log-probs
    of prompt + chosen scored whole (TRL's ORPO NLL term), and chosen/rejected are unchanged."""
    model = tiny_llama()
    rows = random_rows(((7, 3, 5), (2, 6, 1), (11, 2, 4)))
    plain = sequence_logps(model, collate_shared_pairs(rows, pad_id=PAD))
    scored = sequence_logps(model, collate_shared_pairs(rows, pad_id=PAD, score_prompt=True))
    assert plain.prompt is None and scored.prompt is not None
    assert scored.prompt.count.tolist() == [6, 1, 10]
    assert_close(scored.sum, plain.sum)
    whole = sequence_logps(model, collate_sft([{"input_ids": r["prompt_ids"] + r["chosen_ids"],
                                                "labels": r["prompt_ids"] + r["chosen_ids"]} for r in rows], PAD))
    chosen, _ = scored.split()
    assert_close(chosen.count + scored.prompt.count, whole.count)
    assert_close(chosen.sum + scored.prompt.sum, whole.sum, atol=1e-4, rtol=1e-5)


def test_orpo_nll_over_prompt_and_response() -> None:
    """orpo nll_tokens="prompt_and_response": the loss is the token-mean NLL of prompt + chosen plus the same
    odds-ratio term as the response-only variant; with plainly collated batches it refuses clearly."""
    import pytest

    from alignment.training.losses import sft_nll_loss
    from alignment.training.objectives import method_plan

    model = tiny_llama()
    rows = random_rows(((7, 3, 5), (2, 6, 1)))
    resp_obj, resp_collate = method_plan("orpo", pad_id=PAD, lam=0.5)
    full_obj, full_collate = method_plan("orpo", pad_id=PAD, lam=0.5, orpo_nll_tokens="prompt_and_response")
    with torch.no_grad():
        resp, full = resp_obj(model, resp_collate(rows)), full_obj(model, full_collate(rows))
        whole = sequence_logps(model, collate_sft([{"input_ids": r["prompt_ids"] + r["chosen_ids"],
                                                    "labels": r["prompt_ids"] + r["chosen_ids"]} for r in rows], PAD))
    expected_nll = sft_nll_loss(whole.sum, whole.count)
    assert_close(full.metrics["nll_loss"], expected_nll, atol=1e-5, rtol=1e-5)
    assert_close(full.loss - full.metrics["nll_loss"], resp.loss - resp.metrics["nll_loss"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="score_prompt"):
        full_obj(model, resp_collate(rows))


def test_dpo_rpo_term_matches_hand_computation() -> None:
    """RPO (arXiv 2404.19733) through method_plan("dpo", rpo_alpha=...), on the bigram model, prefix-shared rows.
    Pair 1: prompt [0], chosen [1, 2]: log P[0][1] + log P[1][2] = -4 log 2 (2 tokens); rejected [2]: log P[0][2]
    = -2 log 2. Pair 2: prompt [2], chosen [2]: -log 2 (1 token); rejected [0, 0]: log P[2][0] + log P[0][0] = -3 log 2.
    Reference chosen (-3 log 2, -log 2), rejected (-2 log 2, -3 log 2): h = (-log 2 - 0, 0 - 0) = (-log 2, 0).
    beta = 1: -log sigma(-log 2) = log(1 + 2) = log 3; -log sigma(0) = log 2; DPO = (log 3 + log 2) / 2 = 0.8958797.
    NLL as TRL's rpo_alpha: token mean over all chosen tokens, 5 log 2 / 3 = 1.1552453 (the paper's per-pair
    length mean would be (2 log 2 + log 2) / 2 = 1.0397208). alpha = 0.5: 0.8958797 + 0.5776227 = 1.4735024."""
    from alignment.training.objectives import method_plan

    rows = [{"prompt_ids": [0], "chosen_ids": [1, 2], "rejected_ids": [2],
             "ref_chosen_logps": -3 * LOG2, "ref_rejected_logps": -2 * LOG2},
            {"prompt_ids": [2], "chosen_ids": [2], "rejected_ids": [0, 0],
             "ref_chosen_logps": -LOG2, "ref_rejected_logps": -3 * LOG2}]
    plain_obj, collate = method_plan("dpo", pad_id=PAD, beta=1.0)
    rpo_obj, _ = method_plan("dpo", pad_id=PAD, beta=1.0, rpo_alpha=0.5)
    with torch.no_grad():
        plain, rpo = plain_obj(BigramModel(), collate(rows)), rpo_obj(BigramModel(), collate(rows))
    assert_close(plain.loss, T(0.8958797), atol=1e-6, rtol=0)
    assert "nll_loss" not in plain.metrics
    assert_close(rpo.metrics["nll_loss"], T(1.1552453), atol=1e-6, rtol=0)
    assert_close(rpo.loss, T(1.4735024), atol=1e-6, rtol=0)
    assert_close(rpo.metrics["logps/chosen"], T(-2.5 * LOG2))  # the DPO metrics are unchanged
