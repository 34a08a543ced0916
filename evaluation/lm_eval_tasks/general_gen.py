"""Data and scoring of `alignflow_general_gen`: the questions of `alignflow_general_mc` (general_knowledge.py:
capitals, small additions, very common facts) answered in free text (greedy, lm-eval `generate_until`) and
scored by program. The multiple-choice task only compares the log-likelihoods of 4 given answers, so a model
that stopped answering in free text (a reward-hacked policy that says almost nothing) can keep its accuracy
there; here it scores near 0.

Each document is {"id", "question", "answer", "aliases"}: the same ids, questions and order as the
multiple-choice task, the gold answer, and every string accepted for it (the answer itself first; digits and
words for numbers, "Washington" for "Washington, D.C.", "Sun" for "The Sun", "water" for "In water", ...).

Metrics per answer (`process_results`), on normalised text (`normalise`: lowercase, accents and apostrophes
dropped, other punctuation a space, number words as digits, so "Twenty-four" == "twenty four" == "24"):

- contains:    some alias occurs in the answer as whole words ("The capital of France is Paris." for Paris).
               The headline metric (evaluation/benchmarks.py MAIN_METRIC_ORDER). Its limitation: an answer that
               lists several candidates ("Paris or Rome") passes, and so would a question echoed back if it held
               its own answer; no question here does (tests/evaluation/test_general_gen.py checks it).
- exact_match: the whole answer equals an alias ("Paris", "Paris.", "twelve" for 12).
- answered:    the answer is not empty (after normalising: "...." is empty) and is not a refusal ("I don't
               know", "I'm sorry, I can't ...") — right or wrong.

Regenerate the committed data after a change here or in general_knowledge.py:
`python -m evaluation.lm_eval_tasks.general_gen` (tests/evaluation/test_general_gen.py checks the committed
file equals what this module makes now).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

from evaluation.lm_eval_tasks import general_knowledge
from evaluation.lm_eval_tasks.alignflow_tasks import DATA_DIR, to_jsonl

TASK = "alignflow_general_gen"
DATA_FILE = "general_gen.jsonl"

# accepted forms beyond the answer and its number forms, by document id (hand-written)
EXTRA_ALIASES: dict[str, tuple[str, ...]] = {
    "capital-united-states": ("Washington", "Washington DC"),
    "capital-ukraine": ("Kiev",),
    "fact-nearest-star": ("Sun",),
    "fact-fish-home": ("water", "sea", "ocean", "oceans", "rivers", "lakes"),
    "fact-water-boils": ("100",),
    "fact-romeo-author": ("Shakespeare",),
    "fact-hearing-organ": ("ear",),
    "fact-baby-dog": ("pup",),
    "fact-largest-ocean": ("Pacific Ocean",),
}

UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_UNIT_VALUE = {w: i for i, w in enumerate(UNITS)}
_TENS_VALUE = {w: 10 * i for i, w in enumerate(TENS) if w}

# the start of a refusal, on normalised text (apostrophes dropped: "don't" -> "dont")
_REFUSAL = re.compile(
    r"^(?:(?:im |i am )?sorry |i apologi[sz]e )?(?:but )?"
    r"(?:i (?:dont|do not|really dont) know|(?:im|i am) not sure|(?:i cannot|i cant|i can not|im unable to"
    r"|i am unable to|i wont|i will not) (?:answer|help|provide|say|tell)"
    r"|i (?:dont|do not) have (?:that |this |the |any )?(?:information|answer|knowledge)|as an ai|no idea"
    r"|not sure|unknown)\b")
_ONLY_APOLOGY = re.compile(r"^(?:(?:im |i am )?sorry|i apologi[sz]e)$")


# ---- documents ------------------------------------------------------------------------------------------------


def number_words(n: int) -> str:
    """0..999 in words, hyphen-free: 24 -> "twenty four", 100 -> "one hundred", 105 -> "one hundred five"."""
    if not 0 <= n <= 999:
        raise ValueError(f"number_words covers 0..999, got {n}")
    if n < 20:
        return UNITS[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else f" {UNITS[n % 10]}")
    rest = n % 100
    return f"{UNITS[n // 100]} hundred" + ("" if rest == 0 else f" {number_words(rest)}")


def number_aliases(answer: str) -> list[str]:
    """The other spellings of an answer that holds a number: "12" -> ["twelve"], "Twenty-four" ->
    ["twenty four", "24"], "100 degrees" -> ["one hundred degrees"]; [] for an answer without one."""
    words = _ascii(answer).lower().replace("-", " ")
    digits = " ".join(_numbers_to_digits(words.split()))
    if digits == words:  # no number words: spell out the digits instead
        spelled = re.sub(r"\b\d+\b", lambda m: number_words(int(m.group())), answer)
        return [spelled] if spelled != answer else []
    return [a for a in dict.fromkeys([words, digits]) if a != answer.lower()]


def aliases_for(doc_id: str, answer: str) -> list[str]:
    return list(dict.fromkeys([answer, *number_aliases(answer), *EXTRA_ALIASES.get(doc_id, ())]))


def build_docs() -> list[dict[str, Any]]:
    """The multiple-choice task's questions, in its order, with the gold answer and its aliases."""
    docs = []
    for mc in general_knowledge.build_docs():
        answer = mc["choices"][mc["label"]]
        docs.append({"id": mc["id"], "question": mc["question"], "answer": answer,
                     "aliases": aliases_for(mc["id"], answer)})
    return docs


def write(data_dir: Path = DATA_DIR) -> Path:
    path = data_dir / DATA_FILE
    path.write_text(to_jsonl(build_docs()), encoding="utf-8")
    return path


# ---- scoring ---------------------------------------------------------------------------------------------------


def _ascii(text: str) -> str:
    """Accents dropped ("Bogotá" -> "Bogota", "Reykjavík" -> "Reykjavik"); other characters kept ("°")."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def _parse_number(tokens: list[str], i: int) -> tuple[int, int] | None:
    """(value, next index) of the number words starting at tokens[i]: "twenty four", "one hundred (and) five",
    "hundred"; None if tokens[i] starts none."""
    def below_100(j: int) -> tuple[int, int] | None:
        if j < len(tokens) and tokens[j] in _UNIT_VALUE:
            return _UNIT_VALUE[tokens[j]], j + 1
        if j < len(tokens) and tokens[j] in _TENS_VALUE:
            value = _TENS_VALUE[tokens[j]]
            if j + 1 < len(tokens) and tokens[j + 1] in _UNIT_VALUE and 0 < _UNIT_VALUE[tokens[j + 1]] < 10:
                return value + _UNIT_VALUE[tokens[j + 1]], j + 2
            return value, j + 1
        return None

    head = below_100(i)
    if head is None:
        return (100, i + 1) if tokens[i] == "hundred" else None
    value, j = head
    if j < len(tokens) and tokens[j] == "hundred" and 0 < value < 10:
        value, j = value * 100, j + 1
        k = j + 1 if j < len(tokens) and tokens[j] == "and" else j
        tail = below_100(k)
        if tail is not None and tail[0] > 0:
            value, j = value + tail[0], tail[1]
    return value, j


def _numbers_to_digits(tokens: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(tokens):
        parsed = _parse_number(tokens, i)
        if parsed is None:
            out.append(tokens[i])
            i += 1
        else:
            out.append(str(parsed[0]))
            i = parsed[1]
    return out


def normalise(text: str) -> str:
    """Lowercase words separated by single spaces: accents and apostrophes dropped ("don't" -> "dont"), dotted
    abbreviations joined ("D.C." -> "dc"), every other non-alphanumeric character a space, digits split from
    letters ("100°C" and "100C" -> "100 c", "H2O" -> "h 2 o"), number words as digits ("Twenty-four" -> "24",
    "one hundred degrees" -> "100 degrees")."""
    text = _ascii(text).lower()
    text = re.sub(r"['\u2019`]", "", text)
    text = re.sub(r"\b([a-z])\.(?=[a-z]\b)", r"\1", text)
    text = re.sub(r"(?<=[a-z])(?=[0-9])|(?<=[0-9])(?=[a-z])", " ", re.sub(r"[^a-z0-9]+", " ", text))
    return " ".join(_numbers_to_digits(text.split()))


def contains_alias(answer: str, aliases: list[str]) -> bool:
    """Some alias occurs in the answer as whole words, after `normalise` on both."""
    padded = f" {normalise(answer)} "
    return any(alias and f" {alias} " in padded for alias in map(normalise, aliases))


def matches_alias(answer: str, aliases: list[str]) -> bool:
    """The whole answer equals an alias after `normalise` (so a trailing full stop and case do not count)."""
    norm = normalise(answer)
    return bool(norm) and norm in {normalise(a) for a in aliases}


def is_refusal(answer: str) -> bool:
    norm = normalise(answer)
    return bool(_REFUSAL.match(norm) or _ONLY_APOLOGY.match(norm))


def score(answer: str, aliases: list[str]) -> dict[str, float]:
    return {"contains": float(contains_alias(answer, aliases)), "exact_match": float(matches_alias(answer, aliases)),
            "answered": float(bool(normalise(answer)) and not is_refusal(answer))}


# ---- hook named in alignflow_general_gen.yaml (`!function general_gen.process_results`) ------------------------


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval's per-document hook: the greedy answer (already cut at the task's stop strings) scored against
    the document's aliases."""
    return score(results[0], doc["aliases"])


if __name__ == "__main__":
    print(f"{TASK}: {write()}")
