"""Degenerate answers: what an instruction checker passes although nothing was answered.

A loop of one word has no commas, a bare "Good luck!" ends with the phrase "Good luck!", the question repeated
back contains its keyword (stack notes, "Instruction checkers pass degenerate replies"). Training pairs must
never choose such an answer, and evaluation counts them for policy and reference alike:

- empty: nothing but whitespace;
- echo: the answer mostly repeats the prompt: at least 80 % of its words (and at least 3) are prompt words in
  the prompt's order (its longest common word subsequence with the prompt), and it adds almost nothing of its
  own — no new word for a question with a short answer ("Mars is the Red Planet." adds "Mars": not an echo),
  fewer than 3 for an everyday how-to question;
- loop: a word n-gram (n = 1..4) repeated back to back 4 times or more ("yes yes yes yes"), or, for 12 words
  or more, fewer than half of its word 3-grams distinct;
- too short: fewer than `min_words` words of its own once what an instruction asks for is taken out (the
  required first word, the required final phrase, the JSON wrapper's key, bullet markers). An answer to a
  question with a checkable answer (alignment/instruct/answers.py) may be one word ("56"), an everyday how-to question
  of the instruction task needs MIN_OPEN_WORDS; `min_words_for` decides by the question.

`distinct_n` is the share of distinct word n-grams (Li et al. 2016, arXiv 1510.03055), reported beside the
flags; a low value alone is not a flag because a short list legitimately repeats words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from alignment.instruct.instructions import EVERYDAY, Instruction, parse_instructions, strip_instructions

WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
MIN_OPEN_WORDS = 6  # an everyday question answered in fewer of its own words has not been answered
MIN_CHECKABLE_WORDS = 1
ECHO_SHARE = 0.8
ECHO_NEW_OPEN_WORDS = 3  # words not in the prompt an everyday question's restatement must add
LOOP_REPEATS = 4
LOOP_MIN_WORDS = 12
LOOP_DISTINCT_3 = 0.5
EVERYDAY_TEXTS = frozenset(q.text for q in EVERYDAY)


def min_words_for(prompt: str) -> int:
    """MIN_OPEN_WORDS for an everyday question of the instruction task, else MIN_CHECKABLE_WORDS (a checkable
    question, or a prompt from other data, whose right length this module cannot know)."""
    return MIN_OPEN_WORDS if strip_instructions(prompt) in EVERYDAY_TEXTS else MIN_CHECKABLE_WORDS


def words(text: str) -> list[str]:
    return [w.lower() for w in WORDS.findall(text)]


@dataclass(frozen=True)
class Assessment:
    empty: bool
    echo: bool
    loop: bool
    too_short: bool
    words: int  # words in the whole answer
    own_words: int  # words once the instruction's required parts are taken out
    distinct_2: float  # share of distinct word bigrams (1.0 for fewer than 2 words)

    @property
    def degenerate(self) -> bool:
        return self.empty or self.echo or self.loop or self.too_short

    def flags(self) -> list[str]:
        return [name for name in ("empty", "echo", "loop", "too_short") if getattr(self, name)]

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "degenerate": self.degenerate}


def distinct_n(tokens: Sequence[str], n: int) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def common_subsequence(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two word lists (O(len(a) * len(b)), both short here)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def is_echo(prompt: str, response: str, *, min_new_words: int = 1) -> bool:
    """At least 3 words, ECHO_SHARE of them the prompt's in its order, and fewer than `min_new_words` words that
    are not in the prompt at all: "Mars is the Red Planet." restates its question but adds the answer."""
    answer, asked = words(response), words(prompt)
    if len(answer) < 3 or common_subsequence(answer, asked) < ECHO_SHARE * len(answer):
        return False
    return len(set(answer) - set(asked)) < min_new_words


def is_loop(response: str) -> bool:
    tokens = words(response)
    for n in range(1, 5):
        for start in range(len(tokens) - n * LOOP_REPEATS + 1):
            gram = tokens[start:start + n]
            if all(tokens[start + k * n:start + (k + 1) * n] == gram for k in range(1, LOOP_REPEATS)):
                return True
    return len(tokens) >= LOOP_MIN_WORDS and distinct_n(tokens, 3) < LOOP_DISTINCT_3


def own_words(response: str, instructions: Sequence[Instruction]) -> list[str]:
    """The answer's words without what its instructions require: the final phrase, the first word, the JSON
    key "answer" (bullet markers and JSON punctuation are not words to begin with)."""
    tokens = words(response)
    for ins in instructions:
        if ins.kind == "end_phrase":
            tail = words(str(ins.arg))
            if tokens[len(tokens) - len(tail):] == tail:
                tokens = tokens[:len(tokens) - len(tail)]
        elif ins.kind == "first_word" and tokens and tokens[0] == str(ins.arg).lower():
            tokens = tokens[1:]
        elif ins.kind == "json" and tokens[:1] == ["answer"]:
            tokens = tokens[1:]
    return tokens


def assess(prompt: str, response: str, *, min_words: int | None = None) -> Assessment:
    """Flags of one answer to one prompt (the user's text, instruction sentences included). `min_words`: the
    fewest words of its own an answer needs (unset: `min_words_for(prompt)` — MIN_OPEN_WORDS for an everyday
    how-to question, MIN_CHECKABLE_WORDS where one word can be the answer). An echo of an everyday question must
    add ECHO_NEW_OPEN_WORDS words of its own to escape the flag, of any other prompt one."""
    tokens = words(response)
    own = own_words(response, parse_instructions(prompt))
    empty = not response.strip()
    minimum = min_words_for(prompt) if min_words is None else min_words
    new_words = ECHO_NEW_OPEN_WORDS if minimum >= MIN_OPEN_WORDS else 1
    return Assessment(empty=empty, echo=not empty and is_echo(prompt, response, min_new_words=new_words),
                      loop=not empty and is_loop(response), too_short=not empty and len(own) < minimum,
                      words=len(tokens), own_words=len(own), distinct_2=distinct_n(tokens, 2))
