"""Batched generation from chat prompts: the on-policy sampler and the evaluation's greedy answers.

Prompts are sorted by length and cut into batches of similar length (little left padding); each batch is
decoded with its KV cache by `decode`: the prompt is encoded once (its samples share the prefill), the LM head
runs at the last position only, and a row that reaches EOS leaves the batch (its cache rows are dropped), so
the batch shrinks as rows finish instead of carrying finished rows to the longest answer as `model.generate`
does. Greedy answers equal `model.generate`'s token for token; sampling applies the same warpers
(temperature, top-k from the generation config, 50 by default, top-p). Models whose generation config asks
for other logits processors (repetition penalty, ...) or whose cache cannot drop rows go through
`model.generate`. Answers come back in the prompts' order; sampling is seeded per call, so the same call
gives the same answers. `sample_answers` also says whether each answer ended (EOS) or was cut off at
`max_new_tokens`: the on-policy stage never trains on a cut-off answer as the one to imitate.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from transformers import PreTrainedTokenizerBase

from alignment.data.tokenization import encode_texts, prompt_for_generation


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


class Answer(NamedTuple):
    text: str
    finished: bool  # the model ended its turn (EOS) within max_new_tokens; False: cut off


def generate(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], *,
             max_new_tokens: int, batch_size: int, num_samples: int = 1, do_sample: bool = False,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
             device: torch.device | str = "cpu", stats: GenerationStats | None = None) -> list[list[str]]:
    """`num_samples` answers per chat prompt (greedy when not `do_sample`): answers[i][j] is prompt i's j-th.

    `batch_size` counts sequences (prompts x samples) generated together."""
    answers = sample_answers(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             num_samples=num_samples, do_sample=do_sample, temperature=temperature, top_p=top_p,
                             seed=seed, device=device, stats=stats)
    return [[a.text for a in row] for row in answers]


@torch.no_grad()
def sample_answers(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[list[dict]], *,
                   max_new_tokens: int, batch_size: int, num_samples: int = 1, do_sample: bool = False,
                   temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                   device: torch.device | str = "cpu", stats: GenerationStats | None = None) -> list[list[Answer]]:
    """As `generate`, each answer with whether it ended within `max_new_tokens` (`Answer.finished`)."""
    model.eval()
    stats = stats if stats is not None else GenerationStats()
    pad_id = tokenizer.pad_token_id
    ids = encode_texts(tokenizer, [prompt_for_generation(tokenizer, p) for p in prompts])
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
    per_batch = max(1, batch_size // num_samples)
    answers: list[list[Answer]] = [[] for _ in prompts]
    generator_seed = seed
    own_loop = decodes_itself(model)
    end_ids = turn_end_ids(model, tokenizer)
    for start in range(0, len(order), per_batch):
        chunk = order[start:start + per_batch]
        input_ids, attention = left_padded([ids[i] for i in chunk], pad_id)
        torch.manual_seed(generator_seed)
        generator_seed += 1
        began = time.perf_counter()
        if own_loop:
            new = decode(model, input_ids.to(device), attention.to(device), max_new_tokens=max_new_tokens,
                         eos_id=tokenizer.eos_token_id, pad_id=pad_id, num_samples=num_samples,
                         sampling=(temperature, top_p) if do_sample else None).cpu()
        else:
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
        ended = ended_rows(new, end_ids)
        for row, prompt_index in enumerate(index for index in chunk for _ in range(num_samples)):
            answers[prompt_index].append(Answer(tokenizer.decode(new[row], skip_special_tokens=True).strip(),
                                                bool(ended[row])))
    return answers


# generation-config fields that add logits processors `decode` does not apply (unset / neutral values listed)
OTHER_PROCESSORS = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,),
                    "min_length": (None, 0), "min_new_tokens": (None, 0), "suppress_tokens": (None,),
                    "begin_suppress_tokens": (None,), "sequence_bias": (None,), "forced_bos_token_id": (None,),
                    "forced_eos_token_id": (None,), "exponential_decay_length_penalty": (None,), "min_p": (None,),
                    "typical_p": (None, 1.0), "epsilon_cutoff": (None, 0.0), "eta_cutoff": (None, 0.0),
                    "encoder_repetition_penalty": (None, 1.0), "renormalize_logits": (None, False),
                    "watermarking_config": (None,), "top_h": (None,)}


def decodes_itself(model: torch.nn.Module) -> bool:
    """Whether `decode` reproduces `model.generate` for this model: a decoder-only transformers model whose
    generation config adds no logits processors beyond temperature / top-k / top-p."""
    config = getattr(model, "config", None)
    gen = getattr(model, "generation_config", None)
    if config is None or gen is None or getattr(config, "is_encoder_decoder", False):
        return False
    return all(getattr(gen, name, None) in neutral for name, neutral in OTHER_PROCESSORS.items())


def decode(model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, *, max_new_tokens: int,
           eos_id: int | None, pad_id: int, num_samples: int = 1,
           sampling: tuple[float, float] | None = None, top_k: int | None = None) -> torch.Tensor:
    """New tokens (B * num_samples, max_new_tokens) for left-padded prompts (B, T), padded with `pad_id`
    after each row's EOS; rows i * num_samples .. (i + 1) * num_samples - 1 are prompt i's samples.

    One prefill per prompt (its cache repeated for the samples); then one token a step for the rows still
    running: a row that emits EOS is dropped from the batch and its KV cache. Greedy when `sampling` is
    None, else (temperature, top_p) with the generation config's top_k (default 50), as `model.generate`, or
    `top_k` when given (0: none, sampling from the model's own distribution)."""
    positions = (attention.long().cumsum(-1) - 1).masked_fill(attention == 0, 0)  # as model.generate's
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                logits_to_keep=1)
    cache, logits = out.past_key_values, out.logits[:, -1].float()  # (B, V)
    next_pos = positions[:, -1] + 1  # (B,)
    if num_samples > 1:
        cache.batch_repeat_interleave(num_samples)
        logits, attention, next_pos = (t.repeat_interleave(num_samples, dim=0) for t in (logits, attention, next_pos))
    rows = logits.shape[0]
    result = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
    alive = torch.arange(rows, device=input_ids.device)  # original row of each running row
    pick = sampler(model, *sampling, top_k=top_k) if sampling is not None else None
    width = max_new_tokens
    for step in range(max_new_tokens):
        token = pick(logits) if pick is not None else logits.argmax(dim=-1)  # (b,)
        result[alive, step] = token
        if step == max_new_tokens - 1:
            break
        if eos_id is not None and bool((token == eos_id).any()):
            keep = (token != eos_id).nonzero().squeeze(1)
            if keep.numel() == 0:
                width = step + 1  # as model.generate: as wide as the longest answer
                break
            cache.batch_select_indices(keep)
            alive, token, attention, next_pos = alive[keep], token[keep], attention[keep], next_pos[keep]
        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=1)
        out = model(input_ids=token[:, None], attention_mask=attention, position_ids=next_pos[:, None],
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits[:, -1].float()
        next_pos = next_pos + 1
    return result[:, :width]


def sampler(model: torch.nn.Module, temperature: float, top_p: float, top_k: int | None = None):
    """logits (b, V) -> sampled tokens (b,), through model.generate's warpers in its order (`top_k` None: the
    generation config's, 50 by default; 0: no top-k)."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    if top_k is None:
        top_k = getattr(model.generation_config, "top_k", None)
        top_k = 50 if top_k is None else top_k
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))

    def pick(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(None, logits)
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)

    return pick


def left_padded(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) input ids padded on the left and their attention mask."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        attention[i, width - len(x):] = 1
    return input_ids, attention


def ended_rows(new: torch.Tensor, eos_ids: int | Iterable[int] | None) -> torch.Tensor:
    """(B,) bool: the row emitted one of `eos_ids` (padding after EOS is the pad id, which may equal EOS: still
    ended); a row that filled all its new tokens without one was cut off. No EOS id: every row counts as ended."""
    ids = [eos_ids] if isinstance(eos_ids, int) else [i for i in (eos_ids or ()) if i is not None]
    if not ids:
        return torch.ones(new.shape[0], dtype=torch.bool)
    return torch.isin(new, torch.tensor(ids, dtype=new.dtype)).any(dim=1)


def turn_end_ids(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids that end a turn: the tokenizer's EOS and the generation config's (some chat models end a turn with
    another token, listed there: Gemma's <end_of_turn>, Phi-3's <|end|>)."""
    ids = [tokenizer.eos_token_id]
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    return [i for i in dict.fromkeys(ids) if isinstance(i, int)]


def generated_lengths(new: torch.Tensor, eos_id: int | None, pad_id: int | None) -> torch.Tensor:
    """(B,) tokens each row generated, up to and including its first EOS (padding after it not counted)."""
    if eos_id is None:
        return (new != pad_id).sum(dim=1) if pad_id is not None else torch.full((new.shape[0],), new.shape[1])
    is_eos = new == eos_id
    first = torch.where(is_eos.any(dim=1), is_eos.float().argmax(dim=1) + 1, torch.full_like(new[:, 0], new.shape[1]))
    return first
