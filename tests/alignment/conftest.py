"""Shared fixtures for the alignment tests: one thread, a fixed seed, and the quickstart tokenizer (trained
once per session; ~0.1 s, but every module wants it)."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from alignment import quicktask
from alignment.tiny_model import train_tokenizer


@pytest.fixture(autouse=True)
def _single_thread_and_seeded() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    random.seed(0)


@pytest.fixture(scope="session")
def quick_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE with the ChatML template, trained on the quickstart corpus (as the pipeline does)."""
    return train_tokenizer(quicktask.corpus(), 1024)
