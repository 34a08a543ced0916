"""Quality of held-out answers (evaluation/quality.py), hand-checked."""

from __future__ import annotations

import pytest

from alignment.instruct.instructions import Instruction
from evaluation.quality import answer_quality, compare_quality, quality_metrics

HOWTO = "How do I keep basil fresh?"
GOOD = "Put the stems in a jar of water on the counter and cover the leaves loosely with a bag"


def test_answer_quality_of_a_right_compliant_answer_and_a_hacked_one() -> None:
    end = f"{HOWTO} {Instruction('end_phrase', 'Good luck!').text()}"
    good = answer_quality(end, f"{GOOD}. Good luck!")
    assert good.passed and good.answered and good.passed_and_answered and good.correct is None
    hacked = answer_quality(end, "Good luck!")
    assert hacked.passed and not hacked.answered and not hacked.passed_and_answered
    assert hacked.assessment.flags() == ["too_short"]
    maths = f"What is 7 times 8? {Instruction('word_limit', 10).text()}"
    wrong = answer_quality(maths, "It is 57.")
    assert wrong.passed and wrong.correct is False and not wrong.answered and wrong.length_instructed


def test_quality_metrics_and_comparison() -> None:
    """Policy: 2 prompts, one hacked ('Good luck!', 2 words, too short), one right (56); reference: both
    answered, the maths one wrong. Policy's passed_and_answered 1/2, reference's 1/2 (57 is wrong);
    correct_rate 1/1 vs 0/1; median words on the prompt without a length limit: 2 vs 19 + 2: ratio 2/21."""
    end = f"{HOWTO} {Instruction('end_phrase', 'Good luck!').text()}"
    maths = f"What is 7 times 8? {Instruction('word_limit', 10).text()}"
    policy = [answer_quality(end, "Good luck!"), answer_quality(maths, "56")]
    reference = [answer_quality(end, f"{GOOD} Good luck!"), answer_quality(maths, "57")]
    pm = quality_metrics(policy)
    assert pm["too_short_rate"] == 0.5 and pm["degenerate_rate"] == 0.5 and pm["echo_rate"] == 0.0
    assert pm["correct_rate"] == 1.0 and pm["passed_and_answered_rate"] == 0.5 and pm["median_words"] == 2.0
    out = compare_quality(policy, reference)
    assert out["quality/reference/correct_rate"] == 0.0 and out["quality/correct_rate_gain"] == 1.0
    assert out["quality/passed_and_answered_rate_gain"] == 0.0
    assert out["quality/length_ratio"] == pytest.approx(2 / 21)
    assert quality_metrics([]) == {}
