"""Judges decide which of two answers to one prompt is better. One interface, several implementations
(the program judge for the quickstart; reward-model and endpoint judges plug in the same way)."""

from __future__ import annotations

from typing import Literal, Protocol

from alignment import quicktask

Verdict = Literal["win", "tie", "loss"]  # from the policy's side


class Judge(Protocol):
    name: str

    def compare(self, prompt: list[dict[str, str]], policy: str, reference: str) -> Verdict: ...


class ProgramJudge:
    """Scores both answers with the quickstart task's checker (correct > well-formed wrong > refusal)."""

    name = "program"

    def compare(self, prompt: list[dict[str, str]], policy: str, reference: str) -> Verdict:
        question = last_user_message(prompt)
        ours, theirs = quicktask.score_response(question, policy), quicktask.score_response(question, reference)
        return "win" if ours > theirs else "loss" if ours < theirs else "tie"

    def score(self, prompt: list[dict[str, str]], response: str) -> float:
        return quicktask.score_response(last_user_message(prompt), response)


def last_user_message(prompt: list[dict[str, str]]) -> str:
    for message in reversed(prompt):
        if message["role"] == "user":
            return message["content"]
    raise ValueError("prompt has no user message")


JUDGES = {"program": ProgramJudge}


def make_judge(name: str) -> Judge:
    if name not in JUDGES:
        raise ValueError(f"unknown judge {name!r}; choose from {sorted(JUDGES)}")
    return JUDGES[name]()
