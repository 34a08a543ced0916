"""alignflow's CPU attention (alignment/kernels/attention.py) and packed rows (alignment/logprobs.pack_rows): the same
outputs and gradients as transformers' SDPA on prefix-shared rows (dense non-causal mask), padding masks kept,
generation unchanged, and packed batches scoring what padded ones score."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import alignment.kernels.attention as attention
from alignment.kernels.attention import NAME, SEGMENTS, takes_packed_rows, use_cpu_attention
from alignment.kernels.lm_head import compiled
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan
from alignment.training.logprobs import collate_sft, collate_shared_pairs, pack_rows, sequence_logps


def attention_plan(pack: bool) -> RuntimePlan:
    """The CPU attention, rows packed or padded (the `padded-rows` benchmark variant's difference)."""
    return RuntimePlan(cpu_attention=True, pack_rows=pack)


def gqa_llama(kv_heads: int = 2, tied: bool = False) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=kv_heads, intermediate_size=128,
                                        max_position_embeddings=256, tie_word_embeddings=tied))


def forward_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits
    (logits.float().sin().sum()).backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def pair_rows(shapes: tuple[tuple[int, int, int], ...] = ((9, 4, 6), (3, 7, 2), (5, 1, 1))) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    return [{k: torch.randint(3, 128, (n,), generator=gen).tolist() for k, n in zip(
        ("prompt_ids", "chosen_ids", "rejected_ids"), shape, strict=True)} for shape in shapes]


def sft_rows(rows: list[dict]) -> list[dict]:
    return [{"input_ids": r["prompt_ids"] + r["chosen_ids"],
             "labels": [-100] * len(r["prompt_ids"]) + r["chosen_ids"]} for r in rows]


def test_gqa_sdpa_equals_transformers_sdpa_on_prefix_shared_rows() -> None:
    batch = collate_shared_pairs(pair_rows(((9, 4, 6), (3, 7, 2))), pad_id=0)
    model = gqa_llama().train()
    assert model.config._attn_implementation == "sdpa"
    ref, ref_grads = forward_and_grads(model, batch)
    assert use_cpu_attention(model)
    assert model.config._attn_implementation == NAME
    out, grads = forward_and_grads(model, batch)
    valid = (batch["attention_mask"][:, 0].diagonal(dim1=1, dim2=2) == 0)  # every row attends to itself
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert valid.all()
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_generation_and_left_padded_prompts_are_unchanged(kv_heads: int) -> None:
    """transformers hands a custom attention function no mask unless a mask function is registered for it: a
    left-padded prompt then attended to its padding (logits off by ~0.3 on this model before the fix)."""
    model = gqa_llama(kv_heads).eval()
    ids = torch.tensor([[5, 9, 17, 3, 44]])
    padded = torch.tensor([[0, 0, 0, 7, 8, 9], [4, 5, 6, 7, 8, 9]])
    mask = (padded != 0).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        before = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                do_sample=False, pad_token_id=0)
        logits_before = model(input_ids=padded, attention_mask=mask, position_ids=positions).logits[:, -1]
        assert use_cpu_attention(model)
        after = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                               do_sample=False, pad_token_id=0)
        logits_after = model(input_ids=padded, attention_mask=mask, position_ids=positions).logits[:, -1]
    assert torch.equal(before, after)
    assert_close(logits_after, logits_before, atol=1e-5, rtol=1e-5)


def test_pack_rows_of_an_sft_batch() -> None:
    """Rows of 3 and 5 tokens (T = 5): the packed row holds tokens 0-2 of row 0 and 0-4 of row 1, positions
    restarting, offsets [0, 3, 8]; flat position b * 5 + t moves to offsets[b] + t, padding to -1."""
    batch = collate_sft([{"input_ids": [11, 12, 13], "labels": [11, 12, 13]},
                         {"input_ids": [21, 22, 23, 24, 25], "labels": [21, 22, 23, 24, 25]}], pad_id=0)
    inputs, new_index = pack_rows(batch)
    assert inputs["input_ids"].tolist() == [[11, 12, 13, 21, 22, 23, 24, 25]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4]]
    assert inputs["attention_mask"].tolist() == [[1] * 8]
    assert inputs[SEGMENTS] == ([0, 3, 8], [None, None])
    assert new_index.tolist() == [0, 1, 2, -1, -1, 3, 4, 5, 6, 7]


def test_pack_rows_of_a_prefix_shared_batch_keeps_each_rows_mask_and_positions() -> None:
    rows = pair_rows(((2, 1, 2), (1, 1, 1)))  # rows of 5 and 3 tokens
    batch = collate_shared_pairs(rows, pad_id=0)
    inputs, new_index = pack_rows(batch)
    offsets, masks = inputs[SEGMENTS]
    assert offsets == [0, 5, 8]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 2, 3, 0, 1, 1]]  # rejected restarts after the prompt
    assert torch.equal(masks[0], batch["attention_mask"][0:1, :, :5, :5])
    assert torch.equal(masks[1], batch["attention_mask"][1:2, :, :3, :3])
    assert new_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, -1, -1]


def test_packed_rows_build_no_block_mask() -> None:
    """Restarting position ids with no attention mask read as packed sequences to transformers, which then builds a
    (1, 1, N, N) mask the packed attention never reads; the packed inputs' all-ones mask lets it build none."""
    from transformers.masking_utils import create_causal_mask

    model = gqa_llama()
    use_cpu_attention(model)
    inputs, _ = pack_rows(collate_sft(sft_rows(pair_rows()), 0))
    embeds = torch.zeros(1, inputs["input_ids"].shape[1], 64)

    def mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        return create_causal_mask(config=model.config, inputs_embeds=embeds, attention_mask=attention_mask,
                                  past_key_values=None, position_ids=inputs["position_ids"])

    assert mask(None) is not None  # what an absent mask would cost
    assert mask(inputs["attention_mask"]) is None


def test_batches_without_padding_or_not_right_padded_stay_as_they_are() -> None:
    full = collate_sft([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3, 4], "labels": [3, 4]}], 0)
    assert pack_rows(full) is None
    empty = collate_shared_pairs([{"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}] * 2, 0)
    assert pack_rows(empty) is None
    left = {"input_ids": torch.tensor([[0, 5, 6]]), "attention_mask": torch.tensor([[0, 1, 1]])}
    assert pack_rows(left) is None


@pytest.mark.parametrize("kv_heads", [2, 4])
@pytest.mark.parametrize("layout", ["sft", "shared", "shared-prompt-scored"])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_rows_score_what_padded_rows_score(monkeypatch: pytest.MonkeyPatch, kv_heads: int, layout: str,
                                                  checkpointing: bool) -> None:
    """Summed log-probs and every gradient, packed against padded, tied embeddings, with and without activation
    checkpointing; the packed forward runs one attention call per row."""
    rows = pair_rows()
    batch = collate_sft(sft_rows(rows), 0) if layout == "sft" else collate_shared_pairs(
        rows, 0, score_prompt=layout == "shared-prompt-scored")
    calls = []
    real = attention.packed_sdpa
    monkeypatch.setattr(attention, "packed_sdpa", lambda *a, **k: calls.append(len(a[3][0]) - 1) or real(*a, **k))
    results = []
    for pack in (False, True):
        model = gqa_llama(kv_heads, tied=True).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        out = sequence_logps(apply_plan(model, attention_plan(pack)), batch)
        (out.sum.sum() + (out.prompt.sum.sum() if out.prompt is not None else 0)).backward()
        results.append((out.sum.detach(), out.count, [p.grad.clone() for p in model.parameters()]))
    (padded, padded_count, padded_grads), (packed, packed_count, packed_grads) = results
    assert calls and set(calls) == {3}  # three rows, packed, in every layer's attention (2 layers, recomputed)
    assert torch.equal(packed_count, padded_count)
    assert_close(packed, padded, atol=1e-5, rtol=1e-5)
    for g, r in zip(packed_grads, padded_grads, strict=True):
        assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_packed_rows_with_lora(monkeypatch: pytest.MonkeyPatch) -> None:
    from peft import LoraConfig, get_peft_model

    batch = collate_shared_pairs(pair_rows(), 0)
    calls = []
    real = attention.packed_sdpa
    monkeypatch.setattr(attention, "packed_sdpa", lambda *a, **k: calls.append(1) or real(*a, **k))
    sums = []
    for pack in (False, True):
        torch.manual_seed(3)
        model = get_peft_model(gqa_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                       init_lora_weights=False))
        sums.append(sequence_logps(apply_plan(model, attention_plan(pack)), batch).sum.detach())
    assert calls  # the adapted model took packed rows
    assert_close(sums[1], sums[0], atol=1e-5, rtol=1e-5)


def test_compiled_models_are_recognised_through_ddp_wrappers() -> None:
    model = gqa_llama()
    assert not compiled(model)
    wrapper = torch.nn.Module()
    wrapper._orig_mod = model  # what torch.compile's OptimizedModule holds
    assert compiled(wrapper)
    assert not compiled(torch.nn.DataParallel(model))
    assert compiled(torch.nn.DataParallel(wrapper))


def test_packed_attention_refuses_a_cache_or_several_rows() -> None:
    q = torch.zeros(2, 4, 3, 8)
    with pytest.raises(ValueError, match="packed rows"):
        attention.cpu_sdpa_forward(torch.nn.Module(), q, q, q, None, **{SEGMENTS: ([0, 3], [None])})


def test_models_with_windowed_attention_take_no_packed_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    llama = gqa_llama()
    assert not takes_packed_rows(llama)  # not switched yet
    use_cpu_attention(llama)
    assert takes_packed_rows(llama)
    torch.manual_seed(0)
    windowed = MistralForCausalLM(MistralConfig(vocab_size=128, hidden_size=64, num_hidden_layers=1,
                                                num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                                                sliding_window=4))
    assert use_cpu_attention(windowed)
    assert not takes_packed_rows(windowed)
    meta = gqa_llama().to("meta")  # switched on CPU, then moved off it
    meta.config._attn_implementation = NAME
    assert not takes_packed_rows(meta)
    batch = collate_sft(sft_rows(pair_rows()), 0)
    calls = []
    real = attention.packed_sdpa
    monkeypatch.setattr(attention, "packed_sdpa", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert sequence_logps(apply_plan(windowed, attention_plan(True)), batch).sum.isfinite().all()
    assert not calls  # padded, whatever the plan says
