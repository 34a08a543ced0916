"""The benchmark's data: token-id rows every trainer sees identically, made deterministically from a seed.

* ``quickstart``: the quickstart's generated "animal facts" pairs (alignment/instruct/quicktask.py), rendered with the
  tiny tokenizer's ChatML template and tokenized by alignflow's own `encode_pairs`, as the pipeline does.
* ``hh``: synthetic pairs with HH-RLHF-like token lengths: a three-turn ChatML prompt (user, assistant, user,
  then the assistant header) whose total length is log-normal with median ~200 and p90 ~460 tokens, and two
  responses, each log-normal with median ~120 and p90 ~250 tokens, ending with ``<|im_end|>\\n``. Token ids
  are drawn from the tokenizer's non-special vocabulary. Lengths are clipped so that prompt + response never
  exceeds ``max_length``: nothing is truncated by any trainer.

Preference rows are ``{"prompt_ids", "chosen_ids", "rejected_ids"}``; SFT rows are made from the same pairs
(prompt + chosen, labels IGNORE_INDEX on the prompt), so SFT trains on the same tokens as the chosen half.
"""

from __future__ import annotations

import math
import random
from typing import Any

from alignment.data.tokenization import IGNORE_INDEX, encode_pairs, encode_texts
from alignment.instruct import quicktask

DATASETS = ("quickstart", "hh")
Z90 = 1.2816  # standard normal 90th percentile
REFERENCE_MAX_LENGTH = 1024  # the HH-like lengths below are stated for this max_length; smaller ones scale down
HH_PROMPT = (200, 460)  # (median, p90) tokens
HH_RESPONSE = (120, 250)


def lognormal_length(rng: random.Random, median: float, p90: float, low: int, high: int) -> int:
    sigma = math.log(p90 / median) / Z90
    return int(min(high, max(low, round(rng.lognormvariate(math.log(median), sigma)))))


def quickstart_pairs(tokenizer: Any, n: int, seed: int, max_length: int) -> list[dict[str, list[int]]]:
    """`n` quickstart train pairs tokenized with the chat template (cycled if the task has fewer)."""
    rows = quicktask.generate(seed, heldout_fraction=0.2, good_fraction=0.35, refusal_fraction=0.6)["train"]
    conversational = [{"prompt": [{"role": "user", "content": r["prompt"]}],
                       "chosen": [{"role": "assistant", "content": r["chosen"]}],
                       "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows]
    enc = encode_pairs(tokenizer, conversational, max_prompt_tokens=max_length, max_response_tokens=max_length)
    pairs = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
             for p, c, r in zip(enc["prompt_ids"], enc["chosen_ids"], enc["rejected_ids"], strict=True)]
    too_long = [p for p in pairs if len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) > max_length]
    if too_long:
        raise ValueError(f"{len(too_long)} quickstart pairs exceed max_length {max_length}")
    return [pairs[i % len(pairs)] for i in range(n)]


def hh_like_pairs(tokenizer: Any, n: int, seed: int, max_length: int) -> list[dict[str, list[int]]]:
    """`n` synthetic pairs with HH-RLHF-like lengths (module docstring), within `max_length`."""
    rng = random.Random(seed)
    special = set(tokenizer.all_special_ids)
    vocab = [i for i in range(len(tokenizer)) if i not in special]
    user_open, asst_open, turn_end = encode_texts(
        tokenizer, ["<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n"])
    scale = min(1.0, max_length / REFERENCE_MAX_LENGTH)
    max_response = max(8, int(max_length * 3 / 8))
    max_prompt = max_length - max_response
    framing = 2 * len(user_open) + 2 * len(asst_open) + 3 * len(turn_end)
    pairs = []
    for _ in range(n):
        prompt_len = lognormal_length(rng, HH_PROMPT[0] * scale, HH_PROMPT[1] * scale, framing + 3, max_prompt)
        body = prompt_len - framing
        first, second = max(1, round(body * 0.5)), max(1, round(body * 0.3))
        third = body - first - second
        if third < 1:
            first, third = first - (1 - third), 1
        prompt = (user_open + words(rng, vocab, first) + turn_end + asst_open + words(rng, vocab, second) + turn_end
                  + user_open + words(rng, vocab, third) + turn_end + asst_open)

        def response() -> list[int]:
            length = lognormal_length(rng, HH_RESPONSE[0] * scale, HH_RESPONSE[1] * scale, len(turn_end) + 1,
                                      max_response)
            return words(rng, vocab, length - len(turn_end)) + turn_end

        pairs.append({"prompt_ids": prompt, "chosen_ids": response(), "rejected_ids": response()})
    return pairs


def words(rng: random.Random, vocab: list[int], k: int) -> list[int]:
    return [rng.choice(vocab) for _ in range(k)]


def build_pairs(name: str, tokenizer: Any, n: int, seed: int, max_length: int) -> list[dict[str, list[int]]]:
    if name == "quickstart":
        return quickstart_pairs(tokenizer, n, seed, max_length)
    if name == "hh":
        return hh_like_pairs(tokenizer, n, seed, max_length)
    raise ValueError(f"unknown benchmark data {name!r}; choose from {', '.join(DATASETS)}")


def sft_rows(pairs: list[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
    """Prompt + chosen as one SFT example; loss on the chosen tokens only."""
    return [{"input_ids": p["prompt_ids"] + p["chosen_ids"],
             "labels": [IGNORE_INDEX] * len(p["prompt_ids"]) + p["chosen_ids"]} for p in pairs]


def pair_tokens(pair: dict[str, list[int]]) -> int:
    """The work unit of a pair: prompt + chosen + rejected tokens (the prompt counted once)."""
    return len(pair["prompt_ids"]) + len(pair["chosen_ids"]) + len(pair["rejected_ids"])


def length_stats(pairs: list[dict[str, list[int]]]) -> dict[str, dict[str, float]]:
    """Percentiles of prompt / chosen / rejected lengths in tokens."""
    out = {}
    for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
        values = sorted(len(p[key]) for p in pairs)
        out[key.removesuffix("_ids")] = {
            "mean": round(sum(values) / len(values), 1),
            **{f"p{q}": float(values[min(len(values) - 1, int(q / 100 * len(values)))]) for q in (10, 50, 90, 99)},
            "max": float(values[-1]),
        }
    return out
