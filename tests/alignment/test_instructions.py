"""Verifiable instructions (alignment/instruct/instructions.py): every checker on hand-written pass and fail cases, the
degree's range and its agreement with the strict verdict, parsing every template back, and the task
generator's split hygiene, determinism and balance."""

from __future__ import annotations

import re
from collections import Counter
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignment.instruct import instructions
from alignment.instruct.instructions import (
    KINDS,
    QUESTIONS,
    Instruction,
    InstructionPrompt,
    check,
    count_bullets,
    count_words,
    degree,
    generate_task,
    is_heldout_question,
    parse_instructions,
    verify,
)

WORD_LIMIT = Instruction("word_limit", 5)
KEYWORD = Instruction("keyword", "water")
LOWER = Instruction("lowercase")
UPPER = Instruction("uppercase")
FIRST = Instruction("first_word", "Sure")
END = Instruction("end_phrase", "Hope this helps.")
NO_COMMAS = Instruction("no_commas")
BULLETS = Instruction("bullets", 3)
JSON = Instruction("json")
ONE_OF_EACH = (WORD_LIMIT, KEYWORD, LOWER, UPPER, FIRST, END, NO_COMMAS, BULLETS, JSON)


def test_one_example_instruction_per_kind() -> None:
    assert tuple(i.kind for i in ONE_OF_EACH) == KINDS


# ---- checkers: (instruction, response, expected verdict) --------------------------------------------------

CASES = [
    # word_limit 5: \w+ runs, so "don't" is 2 words
    (WORD_LIMIT, "Keep it in water.", True),
    (WORD_LIMIT, "  one two three four five  ", True),
    (WORD_LIMIT, "one two three four five six", False),
    (WORD_LIMIT, "I don't know it all", False),  # I, don, t, know, it, all = 6
    (WORD_LIMIT, "...", False),  # no word at all: nothing answered
    # keyword "water": whole word, any case
    (KEYWORD, "Put the stems in water.", True),
    (KEYWORD, "WATER them daily", True),
    (KEYWORD, "Fresh water, cold.", True),
    (KEYWORD, "Keep them watered.", False),  # part of another word
    (KEYWORD, "Use a waterproof bag.", False),
    (KEYWORD, "Keep them cool.", False),
    # lowercase: no capital letter, at least one cased letter; digits and punctuation are fine
    (LOWER, "keep it cool, 3 days max!", True),
    (LOWER, "keep it cool, I say", False),
    (LOWER, "123 ...", False),
    (LOWER, "straße über café", True),
    # uppercase: no lowercase letter, at least one cased letter
    (UPPER, "KEEP IT COOL. NO. 42!", True),
    (UPPER, "  YES, 100 %  \n", True),
    (UPPER, "KEEP IT COOl", False),
    (UPPER, "42!", False),
    # first_word "Sure": first run of letters/digits, after markdown, quotes or punctuation; any case
    (FIRST, "Sure, here you go.", True),
    (FIRST, "  **Sure!** Here you go.", True),
    (FIRST, '"sure" is my answer', True),
    (FIRST, "# Sure\nText", True),
    (FIRST, "Surely, yes.", False),
    (FIRST, "Yes. Sure.", False),
    # end_phrase "Hope this helps.": exact end, any case, whitespace runs count as one space
    (END, "Keep it cool. Hope this helps.", True),
    (END, "Keep it cool.\nhope   this helps.  \n", True),
    (END, "Keep it cool. Hope this helps", False),  # full stop missing
    (END, "Hope this helps. Keep it cool.", False),
    (END, "Keep it cool. **Hope this helps.**", False),
    # no_commas: ASCII and full-width commas
    (NO_COMMAS, "Keep it cool and dry.", True),
    (NO_COMMAS, "Keep it cool, dry.", False),
    (NO_COMMAS, "保持凉爽，干燥", False),
    # bullets 3: lines starting with "* " or "- " (after indentation), mixed markers count together
    (BULLETS, "* one\n* two\n* three", True),
    (BULLETS, "Here you go:\n- one\n- two\n- three\n", True),
    (BULLETS, "* one\n  - two\n\t* three", True),
    (BULLETS, "* one\n* two", False),
    (BULLETS, "* one\n* two\n* three\n* four", False),
    (BULLETS, "1. one\n2. two\n3. three", False),  # a numbered list is not bullets
    (BULLETS, "**one**\n*two*\n---\n* \n* three", False),  # bold, italics, a rule, an empty bullet: 1 bullet
    # json: the whole response (optionally fenced) is an object with "answer"
    (JSON, '{"answer": "Keep it cool."}', True),
    (JSON, '  {"answer": "x", "note": 1}\n', True),
    (JSON, '```json\n{"answer": "Keep it cool."}\n```', True),
    (JSON, '```JSON\n{"answer": 3}\n```', True),
    (JSON, '```\n{"answer": "x"}\n```', True),
    (JSON, '{"reply": "Keep it cool."}', False),
    (JSON, '["answer"]', False),
    (JSON, 'Here it is: {"answer": "x"}', False),
    (JSON, '{"answer": "x",}', False),
]


@pytest.mark.parametrize(("instruction", "response", "expected"), CASES)
def test_check_on_hand_written_cases(instruction: Instruction, response: str, expected: bool) -> None:
    assert check(instruction, response) is expected
    assert (degree(instruction, response) == 1.0) is expected


@pytest.mark.parametrize("instruction", ONE_OF_EACH, ids=KINDS)
@pytest.mark.parametrize("response", ["", "   ", "\n\t\n"])
def test_a_blank_response_fails_every_instruction(instruction: Instruction, response: str) -> None:
    assert not check(instruction, response)
    assert degree(instruction, response) == 0.0


DEGREES = [
    (WORD_LIMIT, "one two three four five six seven eight nine ten", 0.5),  # 5 / 10
    (KEYWORD, "Keep them watered.", 0.5),  # inside another word
    (KEYWORD, "Keep them cool.", 0.0),
    (LOWER, "Keep it", 5 / 6),  # 5 of 6 cased letters lowercase
    (UPPER, "KEEP it", 4 / 6),
    (LOWER, "1, 2, 3", 0.0),  # no cased letter
    (FIRST, "Yes. Sure.", 0.5),  # the word, in the wrong place
    (FIRST, "Surely.", 0.0),
    (END, "Hope this helps. Keep it cool.", 0.5),  # the phrase, not at the end
    (NO_COMMAS, "a, b, c", 1 / 3),  # 1 / (1 + 2)
    (BULLETS, "* one", 1 / 3),  # 1 / (1 + |1 - 3|)
    (BULLETS, "* 1\n* 2\n* 3\n* 4\n* 5", 1 / 3),
    (JSON, '{"reply": "x"}', 0.5),  # valid JSON of another shape
    (JSON, '"just a string"', 0.5),
    (JSON, "Keep it cool.", 0.0),
]


@pytest.mark.parametrize(("instruction", "response", "expected"), DEGREES)
def test_degree_on_hand_written_cases(instruction: Instruction, response: str, expected: float) -> None:
    assert degree(instruction, response) == pytest.approx(expected)


def test_counting_helpers() -> None:
    assert count_words("Don't stop, 2 go!") == 5  # Don, t, stop, 2, go
    assert count_bullets("* a\n- b\n-c\n*d\n  * e\n") == 3


# pieces that the checkers react to, so random joins often pass or nearly pass
PIECES = st.sampled_from([*'aZé ,，*-#\n\t."{}:13', '"answer"', "water", "Sure", "Hope this helps.", "```json",
                          "```", "* item\n"])
RESPONSE_STRINGS = st.one_of(st.text(max_size=40), st.lists(PIECES, max_size=30).map("".join))


@settings(max_examples=300, deadline=None)
@given(response=RESPONSE_STRINGS)
def test_degree_is_in_unit_interval_and_one_exactly_when_check_passes(response: str) -> None:
    for instruction in ONE_OF_EACH:
        d = degree(instruction, response)
        assert 0.0 <= d <= 1.0
        assert (d == 1.0) == check(instruction, response)


@settings(max_examples=200, deadline=None)
@given(response=st.text(alphabet=st.characters(max_codepoint=0x17F), max_size=40))
def test_case_checks_agree_with_whole_string_case_mapping(response: str) -> None:
    """On Latin text the per-character rule equals IFEval's `response == response.lower()` (plus a letter)."""
    has_letter = any(c.isalpha() and c.lower() != c.upper() for c in response)
    assert check(LOWER, response) == (has_letter and response == response.lower())
    assert check(UPPER, response) == (has_letter and response == response.upper())


# ---- instructions and parsing -------------------------------------------------------------------------------


def test_texts_follow_the_fixed_templates() -> None:
    assert WORD_LIMIT.text() == "Answer in at most 5 words."
    assert KEYWORD.text() == 'Include the word "water" in your answer.'
    assert END.text() == 'End your answer with the exact phrase "Hope this helps.".'
    assert BULLETS.text() == 'Answer with exactly 3 bullet points, each on its own line starting with "* ".'
    assert JSON.text() == 'Wrap your entire answer in JSON: a single object with the key "answer".'


@pytest.mark.parametrize("instruction", ONE_OF_EACH, ids=KINDS)
def test_parse_round_trips_every_kind(instruction: Instruction) -> None:
    assert parse_instructions(f"How do I keep basil fresh? {instruction.text()}") == [instruction]
    assert Instruction.from_dict(instruction.to_dict()) == instruction


def test_parse_finds_two_instructions_in_order() -> None:
    prompt = f"Why do cats purr? {BULLETS.text()} {KEYWORD.text()}"
    assert parse_instructions(prompt) == [BULLETS, KEYWORD]
    assert parse_instructions("Why do cats purr?") == []


def test_parse_skips_an_invalid_argument() -> None:
    assert parse_instructions("Answer in at most 0 words.") == []


@pytest.mark.parametrize(("kind", "arg"), [("word_limit", 0), ("word_limit", "5"), ("bullets", True),
                                           ("keyword", "two words"), ("lowercase", "x"),
                                           ("end_phrase", 'say "hi"'), ("end_phrase", "")])
def test_invalid_instructions_are_refused(kind: str, arg: object) -> None:
    with pytest.raises(ValueError):
        Instruction(kind, arg)  # type: ignore[arg-type]


def test_unknown_kind_names_it_and_lists_the_kinds() -> None:
    with pytest.raises(ValueError, match=r"'shouting'.*word_limit, keyword"):
        Instruction("shouting")


def test_verify_judges_every_instruction_of_a_prompt() -> None:
    prompt = f"Why do cats purr? {NO_COMMAS.text()} {LOWER.text()}"
    good = verify(prompt, "they purr when calm")
    assert good.passed and good.degree == 1.0
    assert good.kinds == ("no_commas", "lowercase") and good.per_kind == {"no_commas": True, "lowercase": True}
    half = verify(prompt, "They purr, mostly.")  # no_commas 1/2; lowercase: 13 of 14 letters
    assert not half.passed
    assert half.degree == pytest.approx((0.5 + 13 / 14) / 2)
    assert half.per_kind == {"no_commas": False, "lowercase": False}


def test_verify_on_a_prompt_without_instructions() -> None:
    assert verify("Why do cats purr?", "They are happy.") == instructions.Verification(False, 0.0, (), {})


# ---- questions ----------------------------------------------------------------------------------------------


def content_words(text: str) -> set[str]:
    stop = {"how", "do", "i", "what", "is", "the", "a", "an", "to", "of", "in", "for", "my", "should", "can",
            "why", "does", "are", "be", "on", "at", "with", "you", "it", "when", "make", "between", "and"}
    return set(re.findall(r"[a-z0-9]+", text.lower())) - stop


def test_questions_are_many_distinct_and_well_formed() -> None:
    assert len(QUESTIONS) >= 120
    assert len({q.id for q in QUESTIONS}) == len({q.text for q in QUESTIONS}) == len(QUESTIONS)
    for q in QUESTIONS:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", q.id), q.id
        assert q.text.endswith("?") and q.text.count("?") == 1 and len(q.text.split()) <= 14, q.text
        assert 2 <= len(q.keywords) <= 3
        asked = set(re.findall(r"\w+", q.text.lower()))
        for word in q.keywords:
            Instruction("keyword", word)  # a valid keyword argument
            assert word not in asked, (q.id, word)  # the keyword is not given away by the question


def test_no_two_questions_are_near_duplicates() -> None:
    """Everyday questions differ from each other and from the checkable ones; checkable questions of one form
    ("What is 7 times 8?", "What is 6 times 9?") differ in their numbers only, by design."""
    for a, b in combinations(QUESTIONS, 2):
        if a.answers and b.answers:
            continue
        wa, wb = content_words(a.text), content_words(b.text)
        assert len(wa & wb) / len(wa | wb) < 0.5, (a.text, b.text)


# ---- the task -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def task() -> dict[str, list[InstructionPrompt]]:
    return generate_task(0)


def test_prompt_text_and_row() -> None:
    p = InstructionPrompt("cats-purr", "Why do cats purr?", BULLETS)
    assert p.text == 'Why do cats purr? Answer with exactly 3 bullet points, each on its own line starting with "* ".'
    assert p.to_row() == {"prompt": [{"role": "user", "content": p.text}], "question_id": "cats-purr",
                          "instruction": {"kind": "bullets", "arg": 3}}


def test_generate_task_is_deterministic(task) -> None:
    assert generate_task(0) == task
    assert generate_task(1) != task


def test_splits_are_disjoint_by_question(task) -> None:
    train = {p.question_id for p in task["train"]}
    heldout = {p.question_id for p in task["heldout"]}
    assert not train & heldout
    assert train | heldout == {q.id for q in QUESTIONS}
    assert all(is_heldout_question(qid, 0.25, "0") for qid in heldout)
    assert not any(is_heldout_question(qid, 0.25, "0") for qid in train)
    assert 0.1 < len(heldout) / len(QUESTIONS) < 0.4


def test_every_question_gets_distinct_kinds_and_its_prompt_parses(task) -> None:
    by_question: dict[str, list[str]] = {}
    for p in task["train"] + task["heldout"]:
        by_question.setdefault(p.question_id, []).append(p.instruction.kind)
        assert parse_instructions(p.text) == [p.instruction]
        if p.instruction.kind == "keyword":
            assert p.instruction.arg in next(q.keywords for q in QUESTIONS if q.id == p.question_id)
    assert all(len(kinds) == len(set(kinds)) == 3 for kinds in by_question.values())


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_kinds_are_balanced_in_both_splits(seed: int) -> None:
    for split, prompts in generate_task(seed).items():
        counts = Counter(p.instruction.kind for p in prompts)
        assert set(counts) == set(KINDS), split
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


def test_splits_are_shuffled(task) -> None:
    ids = [p.question_id for p in task["train"]]
    assert ids != sorted(ids)


def test_kinds_can_be_restricted() -> None:
    out = generate_task(3, kinds=["json", "bullets"], per_question=2)
    assert {p.instruction.kind for p in out["train"] + out["heldout"]} == {"json", "bullets"}
    assert len(out["train"]) + len(out["heldout"]) == 2 * len(QUESTIONS)


def test_heldout_is_by_content_hash() -> None:
    assert is_heldout_question("cats-purr", 1.0) and not is_heldout_question("cats-purr", 0.0)
    assert is_heldout_question("cats-purr", 0.5, "x") == is_heldout_question("cats-purr", 0.5, "x")
    assert {is_heldout_question("cats-purr", 0.5, str(s)) for s in range(20)} == {True, False}  # the salt matters


@pytest.mark.parametrize(("kwargs", "message"), [({"kinds": ["json", "shouting"]}, r"'shouting'.*word_limit"),
                                                 ({"kinds": []}, "no instruction kinds"),
                                                 ({"kinds": ["json"], "per_question": 2}, "per_question"),
                                                 ({"heldout_fraction": 1.5}, "fraction")])
def test_generate_task_refuses_bad_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_task(0, **kwargs)


def test_strip_instructions_leaves_the_question() -> None:
    """Contamination is measured on questions: the templates recur in every split by design."""
    from alignment.instruct.instructions import strip_instructions

    prompt = f"How do I keep basil fresh? {Instruction('bullets', 3).text()} {Instruction('keyword', 'water').text()}"
    assert strip_instructions(prompt) == "How do I keep basil fresh?"
    assert strip_instructions("No instruction at all.") == "No instruction at all."
