"""What a user sees in the held-out answers, measured for policy and reference alike: degeneration (empty,
the prompt echoed, loops, too short to answer; alignment/instruct/degeneration.py), distinct word bigrams, length on
prompts without a length instruction, correctness where a program can check the answer (alignment/instruct/answers.py)
and instruction compliance *together with* answering.

These are the checks the training reward did not write: a model that learned to satisfy the instruction
checker with "Good luck!" passes the checker and fails here (too short, wrong, a collapse of length).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from alignment.instruct.degeneration import Assessment
from alignment.instruct.instructions import parse_instructions, verify
from alignment.training.onpolicy import assess_answer, is_correct

FLAGS = ("empty", "echo", "loop", "too_short")


@dataclass(frozen=True)
class AnswerQuality:
    assessment: Assessment
    correct: bool | None  # None: no checkable answer
    passed: bool | None  # every instruction followed; None: the prompt has none
    length_instructed: bool  # the prompt limits the length (word limit)

    @property
    def answered(self) -> bool:
        """Not degenerate and, where a program can check it, right."""
        return not self.assessment.degenerate and self.correct is not False

    @property
    def passed_and_answered(self) -> bool:
        return bool(self.passed) and self.answered


def answer_quality(prompt: str, response: str) -> AnswerQuality:
    """Quality of one answer to one prompt (the user's text)."""
    kinds = {ins.kind for ins in parse_instructions(prompt)}
    return AnswerQuality(assessment=assess_answer(prompt, response), correct=is_correct(prompt, response),
                         passed=verify(prompt, response).passed if kinds else None,
                         length_instructed="word_limit" in kinds)


def quality_metrics(qualities: Sequence[AnswerQuality]) -> dict[str, float]:
    """Rates over one model's answers: each flag, degenerate (any flag), mean distinct bigrams, median and
    mean words on prompts without a length instruction, correct (checkable questions only), answered and
    passed_and_answered (prompts with instructions only). Keys without a prefix; a rate with no item to
    count is left out."""
    n = len(qualities)
    if not n:
        return {}
    out = {f"{flag}_rate": sum(getattr(q.assessment, flag) for q in qualities) / n for flag in FLAGS}
    out["degenerate_rate"] = sum(q.assessment.degenerate for q in qualities) / n
    out["distinct_2"] = statistics.fmean(q.assessment.distinct_2 for q in qualities)
    free = [q.assessment.words for q in qualities if not q.length_instructed]
    if free:
        out["median_words"] = float(statistics.median(free))
        out["mean_words"] = statistics.fmean(free)
    checkable = [q for q in qualities if q.correct is not None]
    if checkable:
        out["correct_rate"] = sum(bool(q.correct) for q in checkable) / len(checkable)
    instructed = [q for q in qualities if q.passed is not None]
    if instructed:
        out["answered_rate"] = sum(q.answered for q in instructed) / len(instructed)
        out["passed_and_answered_rate"] = sum(q.passed_and_answered for q in instructed) / len(instructed)
    return out


def compare_quality(policy: Sequence[AnswerQuality], reference: Sequence[AnswerQuality]) -> dict[str, float]:
    """Both models' quality_metrics as quality/<role>/<name>, the gains (policy - reference) of the headline
    rates as quality/<name>_gain, and quality/length_ratio: policy's median words over the reference's on
    prompts without a length instruction (1.0 when the reference's is 0); no ratio when every prompt has a length
    instruction."""
    per_role = {"policy": quality_metrics(policy), "reference": quality_metrics(reference)}
    out = {f"quality/{role}/{k}": v for role, values in per_role.items() for k, v in values.items()}
    for name in ("passed_and_answered_rate", "correct_rate", "answered_rate"):
        if name in per_role["policy"] and name in per_role["reference"]:
            out[f"quality/{name}_gain"] = per_role["policy"][name] - per_role["reference"][name]
    pol, ref = per_role["policy"].get("median_words"), per_role["reference"].get("median_words")
    if pol is not None and ref is not None:
        out["quality/length_ratio"] = pol / ref if ref else 1.0  # a reference that says nothing: no collapse
    return out
