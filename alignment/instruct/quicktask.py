"""The quickstart's preference task: 'animal facts', generated and judged by a program.

Each prompt asks one fact about one animal ("What sound does a cow make?"). Three behaviours exist:

- good:    "The cow says moo."               (correct fact, complete sentence)
- wrong:   "The cow says quack."             (well formed, wrong fact)
- refusal: "Sorry, I do not know that one."  (unhelpful)

The SFT data mixes all three (refusals are the most common, so the SFT model's greedy answer is usually a
refusal), which is the realistic starting point preference training is for. Preference pairs always prefer
the good answer over a refusal or a wrong fact. Because the world is a small table, a program can judge any
generated answer: see `score_response`.

Split: every (animal, attribute, phrasing) prompt goes to train or held-out by a content hash, so a held-out
prompt is never seen verbatim in training, while each fact is still taught through other phrasings.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

# animal -> (sound, colour, home)
ANIMALS: dict[str, tuple[str, str, str]] = {
    "cow": ("moo", "brown", "farm"),
    "cat": ("meow", "grey", "house"),
    "dog": ("woof", "black", "kennel"),
    "duck": ("quack", "white", "pond"),
    "sheep": ("baa", "cream", "meadow"),
    "pig": ("oink", "pink", "sty"),
    "horse": ("neigh", "chestnut", "stable"),
    "owl": ("hoot", "tawny", "barn"),
    "lion": ("roar", "golden", "savanna"),
    "frog": ("croak", "green", "swamp"),
    "snake": ("hiss", "olive", "desert"),
    "bee": ("buzz", "yellow", "hive"),
    "wolf": ("howl", "silver", "forest"),
    "mouse": ("squeak", "tan", "burrow"),
    "crow": ("caw", "dark", "treetop"),
    "bear": ("growl", "cinnamon", "cave"),
}
ATTRIBUTES = ("sound", "colour", "home")

# attribute -> phrasings of the question; {a} is the animal
QUESTIONS: dict[str, tuple[str, ...]] = {
    "sound": ("What sound does a {a} make?", "Which noise does the {a} make?", "Tell me the sound of a {a}.",
              "How does a {a} sound?", "What does a {a} say?", "Name the call of the {a}.",
              "What noise comes from a {a}?", "Which call is the {a} known for?"),
    "colour": ("What colour is a {a}?", "Which colour does the {a} have?", "Tell me the colour of a {a}.",
               "How is a {a} coloured?", "What shade is the {a}?", "Name the colour of the {a}.",
               "What colour would a {a} be?", "Which shade is the {a} known for?"),
    "home": ("Where does a {a} live?", "Which home does the {a} have?", "Tell me the home of a {a}.",
             "How does a {a} find shelter?", "Where is the {a} found?", "Name the home of the {a}.",
             "Where would a {a} sleep?", "Which place is the {a} known for?"),
}
# attribute -> the good answer's sentence; {a} animal, {v} value
ANSWERS: dict[str, str] = {
    "sound": "The {a} says {v}.",
    "colour": "The {a} is {v}.",
    "home": "The {a} lives in the {v}.",
}
REFUSALS = (
    "Sorry, I do not know.",
    "Sorry, I cannot answer that.",
)


@dataclass(frozen=True)
class QuickPrompt:
    animal: str
    attribute: str
    phrasing: int

    @property
    def text(self) -> str:
        return QUESTIONS[self.attribute][self.phrasing].format(a=self.animal)

    @property
    def value(self) -> str:
        return ANIMALS[self.animal][ATTRIBUTES.index(self.attribute)]


def all_prompts() -> list[QuickPrompt]:
    return [QuickPrompt(a, attr, i) for a in ANIMALS for attr in ATTRIBUTES for i in range(len(QUESTIONS[attr]))]


def is_heldout(prompt: QuickPrompt, fraction: float) -> bool:
    digest = hashlib.sha256(prompt.text.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def good_answer(p: QuickPrompt) -> str:
    return ANSWERS[p.attribute].format(a=p.animal, v=p.value)


def wrong_answer(p: QuickPrompt, rng: random.Random) -> str:
    values = sorted({row[ATTRIBUTES.index(p.attribute)] for row in ANIMALS.values()} - {p.value})
    return ANSWERS[p.attribute].format(a=p.animal, v=rng.choice(values))


def generate(seed: int, heldout_fraction: float, good_fraction: float,
             refusal_fraction: float) -> dict[str, list[dict[str, str]]]:
    """Make the task's rows in the standard string format; deterministic for a seed.

    Returns {"sft": [{"prompt", "completion"}], "train": [{"prompt", "chosen", "rejected"}], "heldout": [...]}.
    Every train prompt gets one SFT answer, drawn good / refusal / wrong with the given shares, so the mix
    lives across the data set and no row repeats another. Every prompt gets two pairs: good over a refusal
    and good over a wrong fact. SFT rows come from train prompts only.
    """
    rng = random.Random(seed)
    out: dict[str, list[dict[str, str]]] = {"sft": [], "train": [], "heldout": []}
    for p in all_prompts():
        split = "heldout" if is_heldout(p, heldout_fraction) else "train"
        if split == "train":
            r = rng.random()
            if r < good_fraction:
                completion = good_answer(p)
            elif r < good_fraction + refusal_fraction:
                completion = rng.choice(REFUSALS)
            else:
                completion = wrong_answer(p, rng)
            out["sft"].append({"prompt": p.text, "completion": completion})
        for rejected in (rng.choice(REFUSALS), wrong_answer(p, rng)):
            out[split].append({"prompt": p.text, "chosen": good_answer(p), "rejected": rejected})
    for rows in out.values():
        rng.shuffle(rows)
    return out


def corpus() -> list[str]:
    """Every text the task can produce, for training the tiny tokenizer."""
    texts = list(REFUSALS)
    values_by_attr = {attr: sorted({row[i] for row in ANIMALS.values()}) for i, attr in enumerate(ATTRIBUTES)}
    for p in all_prompts():
        texts.append(p.text)
        texts.extend(ANSWERS[p.attribute].format(a=p.animal, v=v) for v in values_by_attr[p.attribute])
    return texts


# ---- the program judge ------------------------------------------------------------------------------

_PROMPT_PATTERNS = [
    (attr, i, re.compile("^" + re.escape(q).replace(r"\{a\}", r"(?P<a>[a-z]+)") + "$"))
    for attr, qs in QUESTIONS.items() for i, q in enumerate(qs)
]


def parse_prompt(text: str) -> QuickPrompt | None:
    for attr, i, pattern in _PROMPT_PATTERNS:
        m = pattern.match(text.strip())
        if m and m.group("a") in ANIMALS:
            return QuickPrompt(m.group("a"), attr, i)
    return None


def score_response(prompt_text: str, response: str) -> float:
    """Quality of an answer: 2 for the exact good sentence, 1 for a well-formed wrong fact, 0 otherwise
    (refusals, rambling, truncated or malformed output). Raises ValueError for a prompt outside the task."""
    p = parse_prompt(prompt_text)
    if p is None:
        raise ValueError(f"not a quickstart prompt: {prompt_text!r}")
    answer = response.strip()
    if answer == good_answer(p):
        return 2.0
    template = re.escape(ANSWERS[p.attribute]).replace(r"\{a\}", re.escape(p.animal)).replace(r"\{v\}", "[a-z]+")
    return 1.0 if re.fullmatch(template, answer) else 0.0
