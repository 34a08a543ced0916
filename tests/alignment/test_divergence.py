"""estimate_kl (alignment/training/divergence.py): zero for a model against itself (a copy, or LoRA's adapters off), the
hand-computed value for a policy that always ends at once against a uniform reference, and the adapters-off
reference equal to a loaded copy of the base model."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM

from alignment.config import LoraSettings, TrainingConfig
from alignment.models.loading import prepare_for_training
from alignment.training.divergence import estimate_kl
from tests.alignment.test_trainer import make_model

PROMPTS = [[{"role": "user", "content": text}] for text in
           ("What do cats eat?", "Where do owls live?", "How fast is a horse?", "Do fish sleep?", "Why?")]


def test_a_model_against_itself_is_zero(quick_tokenizer) -> None:
    policy = make_model(quick_tokenizer)
    kl = estimate_kl(policy, copy.deepcopy(policy), quick_tokenizer, PROMPTS, max_new_tokens=12, seed=3,
                     batch_size=2)
    assert kl.per_prompt == (0.0,) * len(PROMPTS) and kl.mean == 0.0
    assert len(PROMPTS) <= kl.tokens <= 12 * len(PROMPTS)


def test_fresh_lora_adapters_against_adapters_off_is_zero(quick_tokenizer) -> None:
    """LoRA's B starts at zero: the adapted model is the base, so KL against the adapters-off model is 0."""
    policy = prepare_for_training(make_model(quick_tokenizer), TrainingConfig(lora=LoraSettings(r=4, alpha=8.0)))
    kl = estimate_kl(policy, None, quick_tokenizer, PROMPTS, max_new_tokens=12, seed=3, batch_size=4,
                     disable_adapter=True)
    assert_close(torch.tensor(kl.per_prompt), torch.zeros(len(PROMPTS)), atol=1e-5, rtol=0)


def constant_model(tok, eos_logit: float) -> LlamaForCausalLM:
    """A Llama (vocabulary 1024) whose next-token distribution is the same everywhere: every embedding row is the ones vector,
    the layers add nothing (o_proj, down_proj zero), so the last hidden state is RMSNorm(ones) = ones; the
    (untied) head is zero but for EOS's row, which gives EOS the logit `eos_logit` and every other token 0."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=1024, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    with torch.no_grad():
        model.model.embed_tokens.weight.fill_(1.0)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.eos_token_id].fill_(eos_logit / 16)
    return model


def test_policy_that_always_stops_against_a_uniform_reference(quick_tokenizer) -> None:
    """Policy: p(EOS) = e^50 / (e^50 + V - 1) = 1 - O(1e-19), so every sample is [EOS], one token. Reference:
    uniform, q = 1/V. Each prompt's estimate is log p(EOS) - log q(EOS) = log V - log(1 + (V - 1) e^-50) = log V
    (V = 1024 = 2^10: 10 log 2 = 6.9314718), which is also the exact KL(p || q) to float precision."""
    vocab = 1024  # the models' vocabulary (the tokenizer's ids are fewer)
    policy, reference = constant_model(quick_tokenizer, 50.0), constant_model(quick_tokenizer, 0.0)
    kl = estimate_kl(policy, reference, quick_tokenizer, PROMPTS, max_new_tokens=8, seed=0, batch_size=2)
    assert kl.tokens == len(PROMPTS)
    assert_close(torch.tensor(kl.per_prompt), torch.full((len(PROMPTS),), math.log(vocab)), atol=1e-5, rtol=0)
    assert_close(torch.tensor(kl.mean), torch.tensor(6.9314718), atol=1e-5, rtol=0)


def test_adapters_off_is_the_base_model_and_the_seed_fixes_the_answers(quick_tokenizer) -> None:
    base = make_model(quick_tokenizer)
    reference = copy.deepcopy(base)
    policy = prepare_for_training(base, TrainingConfig(lora=LoraSettings(r=4, alpha=8.0)))
    with torch.no_grad():  # move the adapters away from zero
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    policy.train()
    state = torch.random.get_rng_state()
    off = estimate_kl(policy, None, quick_tokenizer, PROMPTS, max_new_tokens=10, seed=5, batch_size=3,
                      disable_adapter=True)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert policy.training  # its mode restored
    loaded = estimate_kl(policy, reference, quick_tokenizer, PROMPTS, max_new_tokens=10, seed=5, batch_size=3)
    assert off.tokens == loaded.tokens
    assert_close(torch.tensor(off.per_prompt), torch.tensor(loaded.per_prompt), atol=1e-4, rtol=1e-5)
    assert any(abs(v) > 1e-3 for v in off.per_prompt)


def test_reference_or_adapters_off_not_both(quick_tokenizer) -> None:
    model = make_model(quick_tokenizer)
    with pytest.raises(ValueError, match="not both"):
        estimate_kl(model, None, quick_tokenizer, PROMPTS, max_new_tokens=2, seed=0, batch_size=2)
    with pytest.raises(ValueError, match="peft model"):
        estimate_kl(model, None, quick_tokenizer, PROMPTS, max_new_tokens=2, seed=0, batch_size=2,
                    disable_adapter=True)
