"""Shared fixtures for the alignment tests: one thread, a fixed seed, and the quickstart tokenizer (trained
once per session; ~0.1 s, but every module wants it)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from alignment.data.tokenization import encode_sft
from alignment.instruct import quicktask
from alignment.models.tiny import train_tokenizer


@pytest.fixture(autouse=True)
def _single_thread_and_seeded() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture(scope="session")
def quick_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with the ChatML template, trained on the quickstart corpus (as the pipeline does)."""
    return train_tokenizer(quicktask.corpus(), 1024)


@pytest.fixture(scope="module")
def sft_rows(quick_tokenizer) -> list[dict[str, list[int]]]:
    """Quickstart SFT rows as the SFT stage builds them (user + assistant, loss on the answer)."""
    data = quicktask.generate(seed=0, heldout_fraction=0.2, good_fraction=0.35, refusal_fraction=0.6)
    rows = [{"messages": [*([{"role": "system", "content": r["system"]}] if r.get("system") else []),
                          {"role": "user", "content": r["prompt"]},
                          {"role": "assistant", "content": r["completion"]}]} for r in data["sft"]]
    enc = encode_sft(quick_tokenizer, rows, max_tokens=128)
    return [{"input_ids": i, "labels": lab} for i, lab in zip(enc["input_ids"], enc["labels"], strict=True)]
