"""Grouped-query SDPA on CPU (alignment/attention.py): the same outputs and gradients as transformers' SDPA
on prefix-shared rows (dense non-causal mask), and generation unchanged."""

from __future__ import annotations

import torch
from torch.testing import assert_close

from alignment.attention import NAME, use_gqa_attention
from alignment.logprobs import collate_shared_pairs


def gqa_llama(kv_heads: int = 2) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=kv_heads, intermediate_size=128,
                                        max_position_embeddings=256))


def forward_and_grads(model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits
    (logits.float().sin().sum()).backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


def test_gqa_sdpa_equals_transformers_sdpa_on_prefix_shared_rows() -> None:
    gen = torch.Generator().manual_seed(1)
    rows = [{k: torch.randint(3, 128, (n,), generator=gen).tolist() for k, n in zip(
        ("prompt_ids", "chosen_ids", "rejected_ids"), shape, strict=True)} for shape in ((9, 4, 6), (3, 7, 2))]
    batch = collate_shared_pairs(rows, pad_id=0)
    model = gqa_llama().train()
    assert model.config._attn_implementation == "sdpa"
    ref, ref_grads = forward_and_grads(model, batch)
    use_gqa_attention(model)
    assert model.config._attn_implementation == NAME
    out, grads = forward_and_grads(model, batch)
    valid = (batch["attention_mask"][:, 0].diagonal(dim1=1, dim2=2) == 0)  # every row attends to itself
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert valid.all()
    for g, r in zip(grads, ref_grads, strict=True):
        assert_close(g, r, atol=1e-5, rtol=1e-5)


def test_generation_is_unchanged_and_models_without_grouped_heads_are_left_alone() -> None:
    model = gqa_llama().eval()
    ids = torch.tensor([[5, 9, 17, 3, 44]])
    before = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                            pad_token_id=0)
    use_gqa_attention(model)
    after = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                           pad_token_id=0)
    assert torch.equal(before, after)
    plain = gqa_llama(kv_heads=4)
    use_gqa_attention(plain)
    assert plain.config._attn_implementation == "sdpa"
