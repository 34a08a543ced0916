"""The generated 'animal facts' task: determinism, split hygiene, pair labels and the program judge."""

from __future__ import annotations

import pytest

from alignment.instruct import quicktask
from alignment.instruct.quicktask import (
    REFUSALS,
    generate,
    good_answer,
    is_heldout,
    parse_prompt,
    score_response,
)

ARGS = {"heldout_fraction": 0.2, "good_fraction": 0.35, "refusal_fraction": 0.6}


@pytest.fixture(scope="module")
def task() -> dict[str, list[dict[str, str]]]:
    return generate(seed=0, **ARGS)


def prompts_of(rows: list[dict[str, str]]) -> set[str]:
    return {r["prompt"] for r in rows}


def test_generate_is_deterministic_for_a_seed(task) -> None:
    assert generate(seed=0, **ARGS) == task
    assert generate(seed=1, **ARGS) != task


def test_split_sizes_follow_the_settings(task) -> None:
    all_prompts = quicktask.all_prompts()
    heldout = [p for p in all_prompts if is_heldout(p, 0.2)]
    n_train = len(all_prompts) - len(heldout)
    assert len(all_prompts) == len(quicktask.ANIMALS) * sum(len(q) for q in quicktask.QUESTIONS.values())
    assert len(set(all_prompts)) == len({p.text for p in all_prompts}) == len(all_prompts)
    assert 0.1 < len(heldout) / len(all_prompts) < 0.3  # a hash split, roughly the asked fraction
    assert len(task["sft"]) == n_train  # one SFT answer per train prompt
    assert len(task["train"]) == 2 * n_train
    assert len(task["heldout"]) == 2 * len(heldout)


def test_sft_rows_come_only_from_train_prompts(task) -> None:
    for row in task["sft"]:
        p = parse_prompt(row["prompt"])
        assert p is not None and not is_heldout(p, 0.2)
    assert prompts_of(task["sft"]) == prompts_of(task["train"])


def test_heldout_prompts_never_appear_in_training(task) -> None:
    heldout = prompts_of(task["heldout"])
    assert heldout
    assert heldout.isdisjoint(prompts_of(task["train"]))
    assert heldout.isdisjoint(prompts_of(task["sft"]))
    assert all(is_heldout(parse_prompt(t), 0.2) for t in heldout)


def test_every_pair_prefers_the_good_answer(task) -> None:
    for row in task["train"] + task["heldout"]:
        good = good_answer(parse_prompt(row["prompt"]))
        assert row["chosen"] == good
        assert row["rejected"] != row["chosen"]
        assert score_response(row["prompt"], row["chosen"]) == 2.0
        assert score_response(row["prompt"], row["rejected"]) < 2.0


def test_each_prompt_pairs_good_over_a_refusal_and_over_a_wrong_fact(task) -> None:
    rejected: dict[str, list[float]] = {}
    for row in task["train"] + task["heldout"]:
        rejected.setdefault(row["prompt"], []).append(score_response(row["prompt"], row["rejected"]))
    assert len(rejected) == len(quicktask.all_prompts())
    assert all(sorted(scores) == [0.0, 1.0] for scores in rejected.values())
    refusals = [r for r in task["train"] + task["heldout"] if r["rejected"] in REFUSALS]
    assert len(refusals) == len(rejected)


def test_sft_mixture_extremes() -> None:
    """good_fraction=1 -> every SFT answer is the good one; refusal_fraction=1 -> every one refuses;
    both 0 -> every one is a well-formed wrong fact."""
    args = {**ARGS, "good_fraction": 1.0, "refusal_fraction": 0.0}
    for row in generate(seed=3, **args)["sft"]:
        assert row["completion"] == good_answer(parse_prompt(row["prompt"]))
    args = {**ARGS, "good_fraction": 0.0, "refusal_fraction": 1.0}
    assert {r["completion"] for r in generate(seed=3, **args)["sft"]} <= set(REFUSALS)
    args = {**ARGS, "good_fraction": 0.0, "refusal_fraction": 0.0}
    assert {score_response(r["prompt"], r["completion"]) for r in generate(seed=3, **args)["sft"]} == {1.0}


@pytest.mark.parametrize(("answer", "score"), [
    ("The cow says moo.", 2.0),
    ("  The cow says moo.\n", 2.0),  # surrounding whitespace is stripped
    ("The cow says quack.", 1.0),  # well formed, wrong fact
    ("The cow says zzz.", 1.0),
    ("Sorry, I do not know.", 0.0),  # refusal
    ("The cow says moo. The cow says moo.", 0.0),  # rambling
    ("The cow says moo. It is brown.", 0.0),
    ("The cow says", 0.0),  # truncated
    ("The cow says moo", 0.0),  # no full stop
    ("The cat says moo.", 0.0),  # wrong animal
    ("The cow is brown.", 0.0),  # answers another question
    ("", 0.0),
])
def test_score_response(answer: str, score: float) -> None:
    assert score_response("What sound does a cow make?", answer) == score


def test_score_response_other_attributes_and_phrasings() -> None:
    assert score_response("Where is the owl found?", "The owl lives in the barn.") == 2.0
    assert score_response("Where is the owl found?", "The owl lives in the cave.") == 1.0
    assert score_response("Name the colour of the frog.", "The frog is green.") == 2.0


@pytest.mark.parametrize("prompt", ["What is the capital of France?", "What sound does a unicorn make?", ""])
def test_score_response_refuses_prompts_outside_the_task(prompt: str) -> None:
    with pytest.raises(ValueError, match="not a quickstart prompt"):
        score_response(prompt, "The cow says moo.")
