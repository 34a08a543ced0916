"""The program judge on hand-made answers (good = 2 > well-formed wrong fact = 1 > refusal/other = 0)."""

from __future__ import annotations

import pytest

from evaluation.judges import ProgramJudge, last_user_message, make_judge

SYSTEM = {"role": "system", "content": "You answer questions about animals."}
PROMPT = [SYSTEM, {"role": "user", "content": "What sound does a cow make?"}]
GOOD, WRONG, REFUSAL = "The cow says moo.", "The cow says quack.", "Sorry, I do not know."


@pytest.mark.parametrize(("policy", "reference", "verdict"), [
    (GOOD, REFUSAL, "win"),
    (GOOD, WRONG, "win"),
    (WRONG, REFUSAL, "win"),
    (GOOD, GOOD, "tie"),
    (REFUSAL, "Sorry, I cannot answer that.", "tie"),  # both score 0
    (WRONG, "The cow says woof.", "tie"),  # both well-formed wrong facts
    (REFUSAL, GOOD, "loss"),
    (WRONG, GOOD, "loss"),
    ("The cow says moo. The cow says moo.", WRONG, "loss"),  # rambling scores 0
])
def test_program_judge_verdicts(policy: str, reference: str, verdict: str) -> None:
    assert ProgramJudge().compare(PROMPT, policy, reference) == verdict


def test_program_judge_reads_the_last_user_turn() -> None:
    prompt = [*PROMPT, {"role": "assistant", "content": GOOD},
              {"role": "user", "content": "Where does a duck live?"}]
    judge = ProgramJudge()
    assert judge.compare(prompt, "The duck lives in the pond.", GOOD) == "win"
    assert judge.score(prompt, "The duck lives in the pond.") == 2.0
    assert judge.score(prompt, "The duck lives in the barn.") == 1.0
    assert last_user_message(prompt) == "Where does a duck live?"


def test_program_judge_refuses_foreign_prompts() -> None:
    with pytest.raises(ValueError, match="not a quickstart prompt"):
        ProgramJudge().compare([{"role": "user", "content": "Write a poem."}], GOOD, WRONG)
    with pytest.raises(ValueError, match="no user message"):
        ProgramJudge().compare([SYSTEM], GOOD, WRONG)


def test_make_judge() -> None:
    judge = make_judge("program")
    assert isinstance(judge, ProgramJudge) and judge.name == "program"
    with pytest.raises(ValueError, match="unknown judge 'gpt'"):
        make_judge("gpt")
