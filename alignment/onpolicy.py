"""On-policy preference pairs: sample several answers per prompt from the model being aligned, score each
with a pluggable scorer, and pair a better answer over a worse one.

Pairs from the policy's own samples are what on-policy / "self-rewarding" DPO recipes use (e.g. the
rejection-sampling pairs of Llama 2, arXiv 2307.09288 §3.2.2; RLHFlow's iterative DPO): the rejected answer is
one the model really gives, so the loss moves probability away from its actual mistakes. Per prompt: the
chosen answer is the best-scoring one (the shortest among equals: brevity breaks ties), the rejected the
worst-scoring one; a prompt whose answers all score within `min_gap` of each other yields no pair and is
counted as dropped. Nothing here loads a model or knows about tracking: the stage function (alignment/stages.py)
hands in the answers and the scorer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from alignment.data import Message, read_jsonl
from alignment.instructions import verify


class Scorer(Protocol):
    """Scores answers to prompts; higher is better. `name` is logged."""

    name: str

    def score_many(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]: ...


class VerifierScorer:
    """The instruction checker (alignment/instructions.py): 1 for an answer that follows every instruction of
    its prompt, plus half its partial credit (how close it came), so even among failing answers the closer
    one ranks higher."""

    name = "verifier"

    def score_many(self, prompts: Sequence[list[Message]], responses: Sequence[str]) -> list[float]:
        return [verifier_score(last_user_text(p), r) for p, r in zip(prompts, responses, strict=True)]


def verifier_score(prompt: str, response: str) -> float:
    result = verify(prompt, response)
    return float(result.passed) + 0.5 * result.degree


def last_user_text(prompt: list[Message]) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def best_over_worst(answers: Sequence[str], scores: Sequence[float], min_gap: float = 0.0) -> tuple[int, int] | None:
    """Indices (chosen, rejected): the best score (shortest answer among the best, then the first), over the
    worst score (the first among the worst); None when best - worst <= min_gap or the two answers are equal."""
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
    if len(answers) < 2:
        return None
    top, bottom = max(scores), min(scores)
    if top - bottom <= min_gap:
        return None
    chosen = min((i for i, s in enumerate(scores) if s == top), key=lambda i: (len(answers[i]), i))
    rejected = next(i for i, s in enumerate(scores) if s == bottom)
    if answers[chosen].strip() == answers[rejected].strip():
        return None
    return chosen, rejected


@dataclass
class PairReport:
    """Counts of one split's pairing, and the samples' pass rate per instruction kind."""

    prompts: int = 0
    pairs: int = 0
    dropped_no_gap: int = 0
    samples: int = 0
    passed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def metrics(self, split: str) -> dict[str, float]:
        out = {f"onpolicy/{split}/prompts": float(self.prompts), f"onpolicy/{split}/pairs": float(self.pairs),
               f"onpolicy/{split}/dropped_no_gap": float(self.dropped_no_gap),
               f"onpolicy/{split}/samples": float(self.samples)}
        total_seen = sum(self.seen.values())
        if total_seen:
            out[f"onpolicy/{split}/pass_rate"] = sum(self.passed.values()) / total_seen
        for kind in sorted(self.seen):
            out[f"onpolicy/{split}/pass_rate/{kind}"] = self.passed[kind] / self.seen[kind]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "pairs": self.pairs, "dropped_no_gap": self.dropped_no_gap,
                "samples": self.samples, "passed": dict(self.passed), "seen": dict(self.seen)}


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


def make_pairs(prompts: Sequence[list[Message]], answers: Sequence[Sequence[str]], scores: Sequence[Sequence[float]],
               *, min_gap: float = 0.0) -> tuple[list[dict[str, Any]], list[dict[str, Any]], PairReport]:
    """(pair rows in the standard conversational format, one sample record per answer, the report)."""
    rows, samples, report = [], [], PairReport()
    for prompt, prompt_answers, prompt_scores in zip(prompts, answers, scores, strict=True):
        report.prompts += 1
        text = last_user_text(prompt)
        for answer, score in zip(prompt_answers, prompt_scores, strict=True):
            result = verify(text, answer)
            for kind, ok in result.per_kind.items():
                report.seen[kind] += 1
                report.passed[kind] += int(ok)
            samples.append({"prompt": text, "answer": answer, "score": score, "passed": result.passed})
            report.samples += 1
        picked = best_over_worst(prompt_answers, prompt_scores, min_gap)
        if picked is None:
            report.dropped_no_gap += 1
            continue
        chosen, rejected = picked
        rows.append({"prompt": prompt,
                     "chosen": [{"role": "assistant", "content": prompt_answers[chosen]}],
                     "rejected": [{"role": "assistant", "content": prompt_answers[rejected]}]})
        report.pairs += 1
    return rows, samples, report
