"""On-policy preference pairs: sample several answers per prompt from the model being aligned, score each
with a pluggable scorer, and pair a better answer over a worse one.

Pairs from the policy's own samples are what on-policy / "self-rewarding" DPO recipes use (e.g. the
rejection-sampling pairs of Llama 2, arXiv 2307.09288 §3.2.2; RLHFlow's iterative DPO): the rejected answer is
one the model really gives, so the loss moves probability away from its actual mistakes.

Scoring must not be met without answering (reward hacking: Gao et al. 2023, arXiv 2210.10760). `AssistantScorer`
composes scorers in priority order (by default correctness, then the instruction checker) and puts every
degenerate answer (alignment/instruct/degeneration.py: empty, the prompt echoed, a loop, too short to answer) below all
others, so a degenerate answer is never chosen. Per prompt: the chosen answer is the best-scoring one (the first
among equals: no bonus for brevity), the rejected the worst-scoring one; a prompt whose answers all score within
`min_gap` of each other yields no pair and is counted as dropped. Nothing here loads a model or knows about
tracking: the stage function (alignment/stages/data.py) hands in the answers and the scorer.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alignment.data import Message, read_jsonl
from alignment.instruct.answers import correct
from alignment.instruct.degeneration import Assessment, assess, min_words_for
from alignment.instruct.instructions import parse_instructions, strip_instructions, verify

DEGENERATE = -1.0  # AssistantScorer's score of a degenerate answer: below every other


class Scorer(Protocol):
    """Scores answers to prompts; higher is better. `name` is logged."""

    name: str

    def score_many(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]: ...


class VerifierScorer:
    """The instruction checker (alignment/instruct/instructions.py): 1 for an answer that follows every instruction of
    its prompt, plus half its partial credit (how close it came), so even among failing answers the closer
    one ranks higher. In [0, 1.5]."""

    name = "verifier"

    def score_many(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]:
        return [verifier_score(last_user_text(p), r) for p, r in zip(prompts, responses, strict=True)]


class CorrectnessScorer:
    """1.0 for a right answer to a question a program can check (alignment/instruct/answers.py), 0.0 for a wrong one;
    1.0 for a question with no checkable answer (whether it was answered at all is the degeneration check's
    part). In [0, 1]."""

    name = "correctness"

    def score_many(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]:
        return [float(is_correct(last_user_text(p), r) is not False) for p, r in zip(prompts, responses, strict=True)]


def verifier_score(prompt: str, response: str) -> float:
    result = verify(prompt, response)
    return float(result.passed) + 0.5 * result.degree


def last_user_text(prompt: list[Message]) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def question_of(prompt_text: str) -> str:
    """The question of an instruction-task prompt: its text without the instruction sentences."""
    return strip_instructions(prompt_text)


def is_correct(prompt_text: str, response: str) -> bool | None:
    """Whether the answer to the prompt's question is right; None when the question has no checkable answer."""
    return correct(question_of(prompt_text), response)


def assess_answer(prompt_text: str, response: str) -> Assessment:
    """Degeneration flags of one answer (an everyday question needs a few words; a checkable one, one)."""
    return assess(prompt_text, response, min_words=min_words_for(prompt_text))


class AssistantScorer:
    """Scorers composed in priority order, with degenerate answers last.

    Each part's scores are brought to [0, 1] (the verifier's divided by 1.5; any other part, a reward model's
    unbounded scores or an endpoint's wins, ranked among the answers to the same prompt) and weighted 4^(n-1-i)
    for the i-th of n parts, so a part's full difference outweighs every later part together: with the default
    (correctness, verifier) a right answer that misses the instruction (4 + at most 1/3) beats a wrong one that
    follows it (0 + 1). An answer flagged by `assess_answer` scores DEGENERATE, below any other."""

    def __init__(self, parts: Sequence[Scorer]) -> None:
        if not parts:
            raise ValueError("AssistantScorer needs at least one scorer")
        self.parts = list(parts)
        self.name = "+".join(part.name for part in self.parts)

    def score_many(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]:
        total = [0.0] * len(responses)
        for i, part in enumerate(self.parts):
            weight = 4.0 ** (len(self.parts) - 1 - i)
            for k, value in enumerate(self._unit_scores(part, prompts, responses)):
                total[k] += weight * value
        flags = [assess_answer(last_user_text(p), r) for p, r in zip(prompts, responses, strict=True)]
        return [DEGENERATE if flag.degenerate else score for flag, score in zip(flags, total, strict=True)]

    @staticmethod
    def _unit_scores(part: Scorer, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]:
        scores = list(part.score_many(prompts, responses))
        if isinstance(part, CorrectnessScorer):
            return scores
        if isinstance(part, VerifierScorer):
            return [s / 1.5 for s in scores]
        return rank_within_prompt(prompts, scores)


def rank_within_prompt(prompts: Sequence[list[Message]], scores: Sequence[float]) -> list[float]:
    """Each score as its rank among the scores of the same prompt, in [0, 1] (ties share the mean rank; a
    prompt's only answer gets 0.5)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for k, prompt in enumerate(prompts):
        groups[repr(prompt)].append(k)
    out = [0.5] * len(scores)
    for members in groups.values():
        if len(members) < 2:
            continue
        for k in members:
            below = sum(scores[j] < scores[k] for j in members)
            equal = sum(scores[j] == scores[k] for j in members) - 1
            out[k] = (below + equal / 2) / (len(members) - 1)
    return out


def best_over_worst(answers: Sequence[str], scores: Sequence[float], min_gap: float = 0.0,
                    finished: Sequence[bool] | None = None, match_lengths: bool = False) -> tuple[int, int] | None:
    """Indices (chosen, rejected): the first of the best scores over the first of the worst non-blank answer
    that is not the chosen one in other case or spacing (a blank response is no training text, and the data
    checks refuse a pair whose two answers differ only so: `identical_pair`); None when best - worst <=
    min_gap, the best is DEGENERATE or no other answer is left. No length preference either way.

    `match_lengths`: among the answers tied for the best score and those tied for the worst, the two closest in
    length (words) instead of the first of each — the scores decide which is preferred, the tie-break only
    makes the pair's lengths differ less, so that DPO learns less of "shorter" (or "longer") with the
    preference (the length bias of Park et al. 2024, arXiv 2403.19159, removed in the data rather than the loss).

    `finished[i]` False (answer i was cut off at the token limit): i is never the chosen one — the chat
    template closes a chosen answer with the end of turn, so imitating a cut-off answer teaches the model to
    end its turn mid-answer (TRL's online DPO penalizes such answers, `missing_eos_penalty`, for that reason).
    It may still be the rejected one."""
    if len(answers) != len(scores) or (finished is not None and len(finished) != len(answers)):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores"
                         + ("" if finished is None else f" and {len(finished)} finished flags"))
    written = [i for i, a in enumerate(answers) if a.strip()]
    choosable = [i for i in written if finished is None or finished[i]]
    if len(written) < 2 or not choosable:
        return None
    best = max(scores[i] for i in choosable)
    tops = [i for i in choosable if scores[i] == best]
    pairs = []
    for chosen in tops if match_lengths else tops[:1]:
        others = [i for i in written if same_text(answers[i]) != same_text(answers[chosen])]
        if not others:
            continue
        worst = min(scores[i] for i in others)
        bottoms = [i for i in others if scores[i] == worst]
        pairs += [(scores[r], abs(len(answers[chosen].split()) - len(answers[r].split())) if match_lengths else 0,
                   chosen, r) for r in (bottoms if match_lengths else bottoms[:1])]
    if not pairs:
        return None
    _, _, chosen, rejected = min(pairs)  # the widest score gap first (a repair may hide a worst answer), then length
    if scores[chosen] - scores[rejected] <= min_gap or scores[chosen] == DEGENERATE:
        return None
    return chosen, rejected


def same_text(text: str) -> str:
    """What the data checks compare for `identical_pair`: lower case, runs of whitespace as one space."""
    return " ".join(text.lower().split())


@dataclass
class PairReport:
    """Counts of one split's pairing, the samples' pass rate per instruction kind, how many samples were
    degenerate and how many answered a checkable question right."""

    prompts: int = 0
    pairs: int = 0
    dropped_no_gap: int = 0
    dropped_wrong_chosen: int = 0
    dropped_unfinished: int = 0
    samples: int = 0
    unfinished: int = 0
    degenerate: int = 0
    checkable: int = 0
    correct: int = 0
    repaired_chosen: int = 0
    passed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    free_words: list[int] = field(default_factory=list)  # words of each sample whose prompt sets no word limit

    @property
    def median_words(self) -> float | None:
        return float(statistics.median(self.free_words)) if self.free_words else None

    def metrics(self, split: str) -> dict[str, float]:
        out = {f"onpolicy/{split}/prompts": float(self.prompts), f"onpolicy/{split}/pairs": float(self.pairs),
               f"onpolicy/{split}/dropped_no_gap": float(self.dropped_no_gap),
               f"onpolicy/{split}/dropped_wrong_chosen": float(self.dropped_wrong_chosen),
               f"onpolicy/{split}/dropped_unfinished": float(self.dropped_unfinished),
               f"onpolicy/{split}/samples": float(self.samples),
               f"onpolicy/{split}/repaired_chosen": float(self.repaired_chosen)}
        if self.samples:
            out[f"onpolicy/{split}/degenerate_rate"] = self.degenerate / self.samples
            out[f"onpolicy/{split}/unfinished_rate"] = self.unfinished / self.samples
        if self.checkable:
            out[f"onpolicy/{split}/correct_rate"] = self.correct / self.checkable
        if self.median_words is not None:
            out[f"onpolicy/{split}/median_words"] = self.median_words
        total_seen = sum(self.seen.values())
        if total_seen:
            out[f"onpolicy/{split}/pass_rate"] = sum(self.passed.values()) / total_seen
        for kind in sorted(self.seen):
            out[f"onpolicy/{split}/pass_rate/{kind}"] = self.passed[kind] / self.seen[kind]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "pairs": self.pairs, "dropped_no_gap": self.dropped_no_gap,
                "dropped_wrong_chosen": self.dropped_wrong_chosen, "dropped_unfinished": self.dropped_unfinished,
                "samples": self.samples, "unfinished": self.unfinished, "degenerate": self.degenerate, "checkable": self.checkable,
                "correct": self.correct, "repaired_chosen": self.repaired_chosen, "passed": dict(self.passed),
                "seen": dict(self.seen), "median_words": self.median_words}


def distinct_prompts(path: Path) -> list[list[Message]]:
    """The prompts of a prompt-only (or pair) file, each once, in file order."""
    seen, prompts = set(), []
    for row in read_jsonl(path):
        key = repr(row["prompt"])
        if key not in seen:
            seen.add(key)
            prompts.append(row["prompt"])
    return prompts


def score_answers(scorer: Scorer, prompts: Sequence[list[Message]],
                  answers: Sequence[Sequence[str]]) -> list[list[float]]:
    """Score every answer to every prompt in one `score_many` call; the scores grouped like `answers`."""
    flat = scorer.score_many([p for p, a in zip(prompts, answers, strict=True) for _ in a],
                             [x for a in answers for x in a])
    scores, k = [], 0
    for a in answers:
        scores.append(list(flat[k:k + len(a)]))
        k += len(a)
    return scores


def case_repairs(prompt_text: str, answers: Sequence[str]) -> list[str]:
    """For a prompt asking for all lowercase or all capitals: each answer rewritten by the program to comply
    (its own words, cased as asked), to be scored beside the samples. The model rarely produces these cases
    itself in a few samples, so without a repaired candidate such prompts have no complying answer to choose.
    Other prompts: none."""
    kinds = {ins.kind for ins in parse_instructions(prompt_text)}
    if "lowercase" in kinds and "uppercase" not in kinds:
        return [a.lower() for a in answers if a.lower() != a]
    if "uppercase" in kinds and "lowercase" not in kinds:
        return [a.upper() for a in answers if a.upper() != a]
    return []


def make_pairs(prompts: Sequence[list[Message]], answers: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
               *, min_gap: float = 0.0, sampled: Sequence[int] | None = None,
               require_correct_chosen: bool = False, finished: Sequence[Sequence[bool]] | None = None,
               choose_unfinished: bool = False,
               match_lengths: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]], PairReport]:
    """(pair rows in the standard conversational format, one sample record per answer, the report).
    `sampled[i]`: how many of prompt i's answers the model sampled; those after are program repairs
    (`case_repairs`), scored and pairable but not counted as samples. Unset: all were sampled.
    `finished[i][k]`: whether answer k ended within the token limit (recorded and counted as `unfinished`); a
    cut-off one is never chosen (`best_over_worst`) unless `choose_unfinished`, and a prompt whose pair would
    need one is counted as dropped_unfinished. Unset: all ended.
    `require_correct_chosen`: a question with a checkable answer yields no pair unless the chosen answer is right
    (counted as dropped_wrong_chosen): DPO would otherwise prefer a compliant wrong answer, and RPO's NLL term
    would train on it. `match_lengths`: see `best_over_worst`."""
    rows, samples, report = [], [], PairReport()
    for i, (prompt, prompt_answers, prompt_scores) in enumerate(zip(prompts, answers, scores, strict=True)):
        report.prompts += 1
        text = last_user_text(prompt)
        own = len(prompt_answers) if sampled is None else sampled[i]
        ended = [True] * len(prompt_answers) if finished is None else list(finished[i])
        for k, (answer, score) in enumerate(zip(prompt_answers, prompt_scores, strict=True)):
            result = verify(text, answer)
            right, flags = is_correct(text, answer), assess_answer(text, answer)
            samples.append({"prompt": text, "answer": answer, "score": score, "passed": result.passed,
                            "correct": right, "flags": flags.flags(), "finished": ended[k], "repaired": k >= own})
            if k >= own:
                continue
            report.unfinished += int(not ended[k])
            for kind, ok in result.per_kind.items():
                report.seen[kind] += 1
                report.passed[kind] += int(ok)
            report.samples += 1
            if "word_limit" not in result.per_kind:
                report.free_words.append(flags.words)
            report.degenerate += int(flags.degenerate)
            report.checkable += int(right is not None)
            report.correct += int(bool(right))
        picked = best_over_worst(prompt_answers, prompt_scores, min_gap, None if choose_unfinished else ended,
                                 match_lengths=match_lengths)
        if picked is None:
            unrestricted = best_over_worst(prompt_answers, prompt_scores, min_gap)
            if unrestricted is None:
                report.dropped_no_gap += 1
            elif require_correct_chosen and is_correct(text, prompt_answers[unrestricted[0]]) is False:
                report.dropped_wrong_chosen += 1  # the cut-off answer that would have been chosen is wrong anyway
            else:
                report.dropped_unfinished += 1
            continue
        chosen, rejected = picked
        if require_correct_chosen and is_correct(text, prompt_answers[chosen]) is False:
            report.dropped_wrong_chosen += 1
            continue
        report.repaired_chosen += int(chosen >= own)
        rows.append({"prompt": prompt,
                     "chosen": [{"role": "assistant", "content": prompt_answers[chosen]}],
                     "rejected": [{"role": "assistant", "content": prompt_answers[rejected]}]})
        report.pairs += 1
    return rows, samples, report
