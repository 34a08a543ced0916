"""How far a policy has moved from its reference: KL(policy || reference) estimated from the policy's own samples.

The sequence-level KL on a prompt x is KL(pi(.|x) || pi_ref(.|x)) = E_{y ~ pi(.|x)} [log pi(y|x) - log pi_ref(y|x)],
y a whole answer. `estimate_kl` draws one answer per prompt from the policy (temperature 1, no top-k or top-p:
the policy's own distribution, seeded), scores it under both models with the project's log-prob code
(`collate_sft` + `sequence_logps`: sum over the answer's tokens, its EOS included) and averages
sum_t (log pi - log pi_ref) over the prompts: a Monte Carlo estimate of the mean sequence-level KL, unbiased
but noisy with few prompts (a single sample can be negative; the expectation cannot). An answer cut at
max_new_tokens estimates the KL of the first max_new_tokens tokens' distribution (EOS ends a sequence).

The reference is another loaded model, or, for a peft (LoRA) policy, the same model with its adapters off
(`disable_adapter=True`, peft's `disable_adapter()` context): no second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from alignment.data.tokenization import IGNORE_INDEX, encode_texts, prompt_for_generation
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan
from alignment.models.generation import decode, decodes_itself, generated_lengths, left_padded
from alignment.training.logprobs import collate_sft, sequence_logps


@dataclass(frozen=True)
class KLEstimate:
    mean: float  # nats per answer: the mean over prompts of per_prompt
    per_prompt: tuple[float, ...]  # sum_t (log pi - log pi_ref) over the sampled answer of each prompt
    tokens: int  # sampled tokens scored, all prompts


@torch.no_grad()
def estimate_kl(policy: torch.nn.Module, reference: torch.nn.Module | None, tokenizer: PreTrainedTokenizerBase,
                prompts: list[list[dict]], *, max_new_tokens: int, seed: int, batch_size: int,
                disable_adapter: bool = False, plan: RuntimePlan | None = None) -> KLEstimate:
    """Monte Carlo estimate of KL(policy || reference) over chat `prompts` (see the module docstring).

    `reference` is a causal LM with the policy's tokenizer, or None with `disable_adapter=True` for a peft
    policy (the reference is the policy with its adapters off). Both run in eval mode; the policy's training
    mode is restored. The same seed gives the same answers for the same policy. With `plan`, both models are set
    up as it says (alignment/kernels/runtime_plan.py) once the answers are sampled, for the scoring passes."""
    if disable_adapter == (reference is not None):
        raise ValueError("estimate_kl needs a reference model or disable_adapter=True, not both")
    if disable_adapter and not hasattr(policy, "disable_adapter"):
        raise ValueError("disable_adapter=True needs a peft model (one with adapters to disable)")
    if not prompts:
        raise ValueError("estimate_kl needs at least one prompt")
    with eval_mode(policy):
        prompt_ids = encode_texts(tokenizer, [prompt_for_generation(tokenizer, p) for p in prompts])
        answers = sample_answers(policy, tokenizer, prompt_ids, max_new_tokens=max_new_tokens, seed=seed,
                                 batch_size=batch_size)
        rows = [{"input_ids": p + a, "labels": [IGNORE_INDEX] * len(p) + a}
                for p, a in zip(prompt_ids, answers, strict=True)]
        if plan is not None:
            for model in (policy, reference):
                if model is not None:
                    apply_plan(model, plan)
        policy_logps = summed_logps(policy, rows, tokenizer.pad_token_id, batch_size)
        if disable_adapter:
            with policy.disable_adapter():
                reference_logps = summed_logps(policy, rows, tokenizer.pad_token_id, batch_size)
        else:
            with eval_mode(reference):
                reference_logps = summed_logps(reference, rows, tokenizer.pad_token_id, batch_size)
    per_prompt = (policy_logps - reference_logps).tolist()  # (N,) nats per answer
    return KLEstimate(mean=sum(per_prompt) / len(per_prompt), per_prompt=tuple(per_prompt),
                      tokens=sum(len(a) for a in answers))


def sample_answers(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompt_ids: list[list[int]], *,
                   max_new_tokens: int, seed: int, batch_size: int) -> list[list[int]]:
    """One answer's token ids per prompt, sampled from the model's own distribution (temperature 1, no top-k
    or top-p), up to and including its EOS. Prompts are batched by length (little left padding); each batch
    is seeded (seed, seed + 1, ...), so the answers depend on the seed and the batch size only."""
    device = next(model.parameters()).device
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    answers: list[list[int]] = [[] for _ in prompt_ids]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # the caller's RNG untouched
        for number, start in enumerate(range(0, len(order), batch_size)):
            sample_batch(model, [prompt_ids[i] for i in order[start:start + batch_size]],
                         order[start:start + batch_size], answers, max_new_tokens=max_new_tokens,
                         seed=seed + number, pad_id=pad_id, eos_id=eos_id, device=device)
    return answers


def sample_batch(model: torch.nn.Module, prompt_ids: list[list[int]], indices: list[int], answers: list[list[int]],
                 *, max_new_tokens: int, seed: int, pad_id: int, eos_id: int | None, device: torch.device) -> None:
    """Sample one answer for each of `prompt_ids` (one batch) into answers[indices[i]]."""
    input_ids, attention = left_padded(prompt_ids, pad_id)
    input_ids, attention = input_ids.to(device), attention.to(device)
    torch.manual_seed(seed)
    if decodes_itself(model):
        new = decode(model, input_ids, attention, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                     sampling=(1.0, 1.0), top_k=0)
    else:
        out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                             do_sample=True, temperature=1.0, top_k=0, top_p=1.0, pad_token_id=pad_id,
                             eos_token_id=eos_id)
        new = out[:, input_ids.shape[1]:]
    lengths = generated_lengths(new, eos_id, pad_id).tolist()
    for row, index in enumerate(indices):
        answers[index] = new[row, :lengths[row]].tolist()


def summed_logps(model: torch.nn.Module, rows: list[dict], pad_id: int, batch_size: int) -> torch.Tensor:
    """(N,) summed log-probs of each row's labelled tokens (the answers), in fp32 on the CPU."""
    device = next(model.parameters()).device
    sums = []
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in collate_sft(rows[start:start + batch_size], pad_id).items()}
        sums.append(sequence_logps(model, batch).sum.float().cpu())
    return torch.cat(sums)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """The model in eval mode (no dropout) inside, its own mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
