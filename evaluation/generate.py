"""Batched greedy generation from chat prompts, identical settings for policy and reference."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from alignment.tokenization import encode_texts, prompt_for_generation


@torch.no_grad()
def generate_responses(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]],
                       *, max_new_tokens: int, batch_size: int, device: torch.device | str = "cpu") -> list[str]:
    """Greedy decoding (deterministic) of one response per chat prompt; stops at the tokenizer's EOS."""
    model.eval()
    pad_id = tokenizer.pad_token_id
    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [prompt_for_generation(tokenizer, p) for p in prompts[start:start + batch_size]]
        ids = encode_texts(tokenizer, chunk)
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)  # left padding
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, width - len(x):] = torch.tensor(x)
            attention[i, width - len(x):] = 1
        generated = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
            do_sample=False, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id,
        )
        for row in generated[:, width:]:
            outputs.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return outputs
