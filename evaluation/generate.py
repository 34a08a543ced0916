"""Greedy answers from chat prompts, identical settings for policy and reference (alignment/models/generation.py:
length-sorted batches, KV cache, each row stopped at EOS)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from alignment.models.generation import generate


def generate_responses(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]],
                       *, max_new_tokens: int, batch_size: int, device: torch.device | str = "cpu") -> list[str]:
    """Greedy decoding (deterministic) of one response per chat prompt; stops at the tokenizer's EOS."""
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       device=device)
    return [a[0] for a in answers]
