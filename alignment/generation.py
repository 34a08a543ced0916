"""Batched generation from chat prompts: the on-policy sampler and the evaluation's greedy answers.

Prompts are sorted by length and cut into batches of similar length (little left padding), each batch runs
`model.generate` with its KV cache, rows stop at the tokenizer's EOS, and the answers come back in the
prompts' order. Sampling is seeded per call, so the same call gives the same answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from alignment.tokenization import encode_texts, prompt_for_generation


@dataclass
class GenerationStats:
    sequences: int = 0
    new_tokens: int = 0  # generated tokens up to and including each row's EOS
    seconds: float = 0.0
    batches: int = 0
    per_batch: list[float] = field(default_factory=list, repr=False)

    @property
    def tokens_per_sec(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@torch.no_grad()
def generate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], *,
             max_new_tokens: int, batch_size: int, num_samples: int = 1, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             device: torch.device | str = "cpu", stats: GenerationStats | None = None) -> list[list[str]]:
    """`num_samples` answers per chat prompt (greedy when not `do_sample`): answers[i][j] is prompt i's j-th.

    `batch_size` counts sequences (prompts x samples) generated together."""
    model.eval()
    stats = stats if stats is not None else GenerationStats()
    pad_id = tokenizer.pad_token_id
    ids = encode_texts(tokenizer, [prompt_for_generation(tokenizer, p) for p in prompts])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    per_batch = max(1, batch_size // num_samples)
    answers: list[list[str]] = [[] for _ in prompts]
    generator_seed = seed
    for start in range(0, len(order), per_batch):
        chunk = order[start:start + per_batch]
        input_ids, attention = left_padded([ids[i] for i in chunk], pad_id)
        torch.manual_seed(generator_seed)
        generator_seed += 1
        began = time.perf_counter()
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if do_sample else {
            "do_sample": False}
        out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                             max_new_tokens=max_new_tokens, num_return_sequences=num_samples,
                             pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id, **sampling)
        new = out[:, input_ids.shape[1]:].cpu()
        elapsed = time.perf_counter() - began
        stats.seconds += elapsed
        stats.per_batch.append(elapsed)
        stats.batches += 1
        stats.sequences += new.shape[0]
        stats.new_tokens += int(generated_lengths(new, tokenizer.eos_token_id, pad_id).sum())
        for row, prompt_index in enumerate(index for index in chunk for _ in range(num_samples)):
            answers[prompt_index].append(tokenizer.decode(new[row], skip_special_tokens=True).strip())
    return answers


def left_padded(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) input ids padded on the left and their attention mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        attention[i, width - len(x):] = 1
    return input_ids, attention


def generated_lengths(new: torch.Tensor, eos_id: int | None, pad_id: int | None) -> torch.Tensor:
    """(B,) tokens each row generated, up to and including its first EOS (padding after it not counted)."""
    if eos_id is None:
        return (new != pad_id).sum(dim=1) if pad_id is not None else torch.full((new.shape[0],), new.shape[1])
    is_eos = new == eos_id
    first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, torch.full_like(new[:, 0], new.shape[1]))
    return first
