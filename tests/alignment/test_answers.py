"""Questions with program-checkable answers (alignment/instruct/answers.py) and the degeneration flags
(alignment/instruct/degeneration.py), with hand-checked cases."""

from __future__ import annotations

import pytest

from alignment.instruct.answers import BY_TEXT, CHECKABLE, correct, normalise, words_to_number
from alignment.instruct.degeneration import assess, common_subsequence, distinct_n, is_loop, min_words_for
from alignment.instruct.instructions import QUESTIONS, Instruction, parse_instructions


@pytest.mark.parametrize(("phrase", "value"), [("seven", 7), ("fifty-six", 56), ("one hundred and six", 106),
                                               ("two thousand five hundred", 2500), ("hundred", 100)])
def test_number_words(phrase: str, value: int) -> None:
    assert words_to_number(phrase) == value


def test_normalise_reads_number_words_and_digit_groups() -> None:
    assert normalise("Seven times eight is Fifty-Six.") == "7 times 8 is 56"
    assert normalise("That is 2,000 grams") == "that is 2000 grams"
    assert normalise("pi is 3.14.") == "pi is 3.14"


@pytest.mark.parametrize(("question", "response", "expected"), [
    ("What is 7 times 8?", "56", True),
    ("What is 7 times 8?", "Seven times eight is fifty-six.", True),
    ("What is 7 times 8?", "It is 57.", False),
    ("What is 7 times 8?", "156", False),  # whole numbers only: 56 inside 156 is not an answer
    ("What is 7 times 8?", "Okay.", False),
    ("How many grams are in 2 kilograms?", "There are 2,000 grams.", True),
    ("What is the name of our galaxy?", "We live in the MILKY WAY", True),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted it.", True),
    ("How do I keep basil fresh?", "Put it in water.", None),  # no checkable answer
])
def test_correct(question: str, response: str, expected: bool | None) -> None:
    assert correct(question, response) is expected


def test_checkable_questions_are_in_the_task_with_their_answers() -> None:
    assert len(CHECKABLE) >= 60 and len(BY_TEXT) == len(CHECKABLE)
    by_id = {q.id: q for q in QUESTIONS}
    for item in CHECKABLE:
        assert by_id[item.id].answers == item.answers and item.answers
        assert correct(item.text, " ".join(item.answers)) is True


# ---- degeneration ---------------------------------------------------------------------------------------------

HOWTO = "How do I keep basil fresh?"
GOOD = "Put the stems in a jar of water on the counter and cover the leaves loosely with a bag."


def test_common_subsequence_and_distinct_n() -> None:
    assert common_subsequence("a b c d".split(), "a x c d".split()) == 3
    assert distinct_n("a b a b".split(), 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b): 2 distinct of 3
    assert distinct_n(["a"], 2) == 1.0


@pytest.mark.parametrize(("response", "flags"), [
    (GOOD, []),
    ("", ["empty"]),
    ("   ", ["empty"]),
    ("How do I keep basil fresh?", ["echo"]),
    ("Do not use any commas in your answer.", ["echo"]),
    ("basil basil basil basil basil basil", ["loop"]),
    ("Keep it cool. Keep it cool. Keep it cool. Keep it cool.", ["loop"]),
    ("Zorblax.", ["too_short"]),
    ('- "S"', ["too_short"]),
])
def test_assess_flags(response: str, flags: list[str]) -> None:
    prompt = f"{HOWTO} {Instruction('no_commas').text()}"
    assert assess(prompt, response).flags() == flags


def test_instruction_parts_are_not_an_answer() -> None:
    """The final phrase alone, or the first word alone, leaves nothing of the answer's own."""
    end = f"{HOWTO} {Instruction('end_phrase', 'Good luck!').text()}"
    assert assess(end, "Good luck!").flags() == ["too_short"]
    assert assess(end, f"{GOOD} Good luck!").flags() == []
    first = f"{HOWTO} {Instruction('first_word', 'Sure').text()}"
    assert assess(first, "Sure.").own_words == 0
    json_prompt = f"{HOWTO} {Instruction('json').text()}"
    assert assess(json_prompt, '{"answer": "water"}').flags() == ["too_short"]


def test_a_checkable_question_may_be_answered_in_one_word() -> None:
    prompt = f"What is 7 times 8? {Instruction('word_limit', 10).text()}"
    assert min_words_for(prompt) == 1 and min_words_for(f"{HOWTO} {Instruction('no_commas').text()}") == 6
    assert assess(prompt, "56.", min_words=min_words_for(prompt)).flags() == []
    assert assess(prompt, "56.", min_words=6).flags() == ["too_short"]


def test_a_short_list_is_not_a_loop() -> None:
    assert not is_loop("* water\n* a jar\n* a bag\n* the fridge")


def test_heldout_phrasings_parse_to_the_same_instruction_and_differ_in_words() -> None:
    for kind, arg in [("word_limit", 10), ("keyword", "water"), ("lowercase", None), ("uppercase", None),
                      ("first_word", "Sure"), ("end_phrase", "Good luck!"), ("no_commas", None), ("bullets", 2),
                      ("json", None)]:
        train, held = Instruction(kind, arg), Instruction(kind, arg, "heldout")
        assert train.text() != held.text()
        assert parse_instructions(f"{HOWTO} {held.text()}") == [held]
        assert Instruction.from_dict(held.to_dict()) == held


@pytest.mark.parametrize(("prompt", "response"), [
    ("Which planet is called the Red Planet? Answer in at most 10 words.", "Mars is the Red Planet."),
    ("What is the hardest natural material? Answer in at most 10 words.", "Diamond is the hardest natural material."),
    ("What is the capital of France?", "Paris is the capital of France."),  # a prompt of other data
    (f"{HOWTO} Do not use any commas in your answer.", "To keep basil fresh put the stems in a glass of water."),
])
def test_a_restatement_that_adds_the_answer_is_not_an_echo(prompt: str, response: str) -> None:
    """Found in review: a right one-sentence answer repeats most of its question; it adds the answer, so it is
    not an echo (an everyday question's restatement must add 3 new words)."""
    assert assess(prompt, response).flags() == []


def test_a_restatement_of_an_everyday_question_with_a_word_or_two_added_is_an_echo() -> None:
    prompt = f"Why do people put salt on icy roads? {Instruction('lowercase').text()}"
    echo = "Why do people put salt on icy roads? The answer should be in lowercase letters, with no capital letters."
    assert assess(prompt, echo).flags() == ["echo"]  # adds "the" and "should" only


@pytest.mark.parametrize(("phrase", "digits"), [("between five and six", ["5", "and", "6"]), ("six six", ["6", "6"]),
                                                ("ten twenty", ["10", "20"]), ("twenty-twenty", ["20", "20"]),
                                                ("three thousand and two", ["3002"])])
def test_number_words_combine_only_by_english_grammar(phrase: str, digits: list[str]) -> None:
    """Found in review: "between five and six" was read as 11, the soccer team's answer."""
    from alignment.instruct.answers import numbers_in_words

    assert numbers_in_words(phrase) == digits
    assert correct("How many players does a soccer team have on the field?", f"between {phrase}") is False


@pytest.mark.parametrize("response", ["It is not 56, it is 54.", "56 or 57", "1 2 3 4 5 56 57 58"])
def test_a_hedged_numeric_answer_is_not_right(response: str) -> None:
    assert correct("What is 7 times 8?", response) is False
    assert correct("How many seconds are in 5 minutes?", "5 minutes is 5 * 60 = 300 seconds") is True


def test_no_question_answers_itself() -> None:
    assert [q.text for q in CHECKABLE if correct(q.text, q.text)] == []
