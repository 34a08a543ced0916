"""Streamed answers for the arena: the model's chat template applied to the prompt (as MLflow's chat serving
does), `model.generate` on a background thread, decoded text handed out piece by piece
(transformers' TextIteratorStreamer). Both sides of a comparison use the same settings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import torch
from pydantic import BaseModel, Field
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from alignment.data.tokenization import prompt_for_generation


class Sampling(BaseModel):
    """Generation settings of a comparison: shown on the page, identical for both answers."""

    max_new_tokens: int = Field(64, ge=1, le=1024)
    do_sample: bool = False
    temperature: float = Field(0.7, gt=0, le=2.0)
    top_p: float = Field(1.0, gt=0, le=1.0)
    seed: int = 0

    def generate_kwargs(self) -> dict[str, Any]:
        if self.do_sample:
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        return {"do_sample": False}


class _Stop(StoppingCriteria):
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> bool:
        return self.event.is_set()


def stream_answer(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
                  sampling: Sampling, stop: threading.Event | None = None) -> Iterator[str]:
    """Yield the answer's text as it is generated (pieces that concatenate to the decoded answer). Setting
    `stop` ends generation at the next token. Errors of the generating thread are raised here."""
    text = prompt_for_generation(tokenizer, messages)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    stop = stop or threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad():
                model.generate(**ids, max_new_tokens=sampling.max_new_tokens, streamer=streamer,
                               pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                               stopping_criteria=StoppingCriteriaList([_Stop(stop)]), **sampling.generate_kwargs())
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            failure.append(err)
            streamer.end()

    if sampling.do_sample:
        torch.manual_seed(sampling.seed)
    worker = threading.Thread(target=run, name="arena-generate", daemon=True)
    worker.start()
    try:
        yield from streamer
    finally:
        stop.set()
        worker.join(timeout=60)
    if failure:
        raise failure[0]
