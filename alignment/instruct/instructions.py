"""Verifiable instructions in the style of IFEval (Zhou et al. 2023, "Instruction-Following Evaluation for Large
Language Models", arXiv 2311.07911), attached to everyday questions and checked by a program.

A prompt is an everyday question plus one instruction sentence from a fixed template per kind ("How do I keep
basil fresh? Answer in at most 20 words."). Because the templates are fixed, `parse_instructions` recovers the
instructions from any prompt text, and `verify` judges a response to it: `check` gives IFEval's strict verdict,
`degree` a partial credit in [0, 1] (1.0 exactly when `check` passes) for graded rewards.

The checkers are written here, stdlib only, on purpose: lm_eval's ifeval checkers import nltk, which tries to
download its tokenizer data (punkt) on first use and so fails or hangs offline. Where IFEval tokenises words with
nltk's `RegexpTokenizer(r"\\w+")` we count `\\w+` runs, which is the same thing.

Rules common to every kind (IFEval-like: lenient on whitespace, strict on the constraint):

- A blank response (empty or only whitespace) fails every instruction with degree 0.0. IFEval would pass an
  empty answer on "no commas" or "at most 20 words"; here it must not, since these verdicts become preference
  labels and an empty answer must never be preferred for satisfying a constraint vacuously.
- Leading and trailing whitespace never matters.

Split: a question goes to train or held-out by a SHA-256 hash of (seed, question id) (`is_heldout_question`),
so a held-out question is never seen in training with any instruction.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alignment.instruct.answers import CHECKABLE

KINDS: tuple[str, ...] = ("word_limit", "keyword", "lowercase", "uppercase", "first_word", "end_phrase",
                          "no_commas", "bullets", "json")

# kind -> the one sentence template appended to a question; {arg} is the instruction's argument
TEMPLATES: dict[str, str] = {
    "word_limit": "Answer in at most {arg} words.",
    "keyword": 'Include the word "{arg}" in your answer.',
    "lowercase": "Your entire answer must be in lowercase letters, with no capital letters at all.",
    "uppercase": "Your entire answer must be in capital letters.",
    "first_word": 'Start your answer with the word "{arg}".',
    "end_phrase": 'End your answer with the exact phrase "{arg}".',
    "no_commas": "Do not use any commas in your answer.",
    "bullets": 'Answer with exactly {arg} bullet points, each on its own line starting with "* ".',
    "json": 'Wrap your entire answer in JSON: a single object with the key "answer".',
}
# The held-out split words every kind differently (generate_task(heldout_phrasings=True)), so its pass rate
# measures following an instruction, not recognizing a sentence seen in training.
HELDOUT_TEMPLATES: dict[str, str] = {
    "word_limit": "Use no more than {arg} words in your reply.",
    "keyword": 'Make sure your reply contains the word "{arg}".',
    "lowercase": "Write your whole reply using only lowercase letters.",
    "uppercase": "Write your whole reply in uppercase letters only.",
    "first_word": 'Begin your reply with the word "{arg}".',
    "end_phrase": 'Finish your reply with these exact words: "{arg}"',
    "no_commas": "Avoid commas entirely in your reply.",
    "bullets": 'Reply as a list of exactly {arg} items, each line beginning with "* ".',
    "json": 'Format your whole reply as a JSON object with an "answer" key.',
}
PHRASINGS: dict[str, dict[str, str]] = {"train": TEMPLATES, "heldout": HELDOUT_TEMPLATES}
INT_KINDS = frozenset({"word_limit", "bullets"})
WORD_KINDS = frozenset({"keyword", "first_word"})
NO_ARG_KINDS = frozenset({"lowercase", "uppercase", "no_commas", "json"})

# pools the generator draws arguments from
WORD_LIMITS: tuple[int, ...] = (10, 15, 20, 25)
BULLET_COUNTS: tuple[int, ...] = (2, 3, 4)
FIRST_WORDS: tuple[str, ...] = ("Sure", "Well", "Actually", "Honestly", "Generally", "Basically", "Okay")
END_PHRASES: tuple[str, ...] = ("Hope this helps.", "Is there anything else?", "That is all.", "Good luck!",
                                "Let me know if you have more questions.")

WORD = re.compile(r"\w+")
ALNUM_WORD = re.compile(r"[^\W_]+")  # a run of letters and digits: a first word without markdown underscores
BULLET = re.compile(r"^[ \t]*[*-][ \t]+\S", re.MULTILINE)
COMMAS = (",", "\uff0c")  # ASCII comma and the full-width comma
JSON_FENCE = re.compile(r"^```(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```$", re.DOTALL | re.IGNORECASE)


def _unknown_kind(kind: str) -> ValueError:
    return ValueError(f"unknown instruction kind {kind!r}; known kinds: {', '.join(KINDS)}")


@dataclass(frozen=True)
class Instruction:
    """One verifiable instruction. `arg`: word_limit, max words (int >= 1); keyword, the word; first_word, the
    word; end_phrase, the phrase; bullets, the exact count (int >= 1); None for the other kinds. `phrasing`:
    which sentence words it ("train": TEMPLATES, "heldout": HELDOUT_TEMPLATES); the check is the same."""

    kind: str
    arg: str | int | None = None
    phrasing: str = "train"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise _unknown_kind(self.kind)
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"unknown phrasing {self.phrasing!r}; expected one of {', '.join(PHRASINGS)}")
        if self.kind in NO_ARG_KINDS and self.arg is not None:
            raise ValueError(f"{self.kind} takes no argument, got {self.arg!r}")
        if self.kind in INT_KINDS and not (type(self.arg) is int and self.arg >= 1):
            raise ValueError(f"{self.kind} needs a positive int argument, got {self.arg!r}")
        if self.kind in WORD_KINDS and not (isinstance(self.arg, str) and ALNUM_WORD.fullmatch(self.arg)):
            raise ValueError(f"{self.kind} needs one word of letters or digits, got {self.arg!r}")
        if self.kind == "end_phrase" and not (isinstance(self.arg, str) and self.arg.strip()
                                              and '"' not in self.arg and self.arg == self.arg.strip()):
            raise ValueError(f'end_phrase needs a non-blank phrase without quotes or outer spaces, got {self.arg!r}')

    def text(self) -> str:
        """The sentence appended to a question."""
        return PHRASINGS[self.phrasing][self.kind].format(arg=self.arg)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "arg": self.arg}
        return out if self.phrasing == "train" else {**out, "phrasing": self.phrasing}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Instruction:
        return cls(d["kind"], d.get("arg"), d.get("phrasing", "train"))


# ---- parsing ------------------------------------------------------------------------------------------------


def _template_pattern(kind: str, template: str) -> re.Pattern[str]:
    arg = r"(?P<arg>\d+)" if kind in INT_KINDS else r'(?P<arg>[^"]+)'
    head, sep, tail = template.partition("{arg}")
    return re.compile(re.escape(head) + (arg + re.escape(tail) if sep else ""))


# (kind, phrasing) -> the pattern of its sentence
PATTERNS: dict[tuple[str, str], re.Pattern[str]] = {
    (kind, phrasing): _template_pattern(kind, templates[kind])
    for phrasing, templates in PHRASINGS.items() for kind in KINDS}


def parse_instructions(prompt: str) -> list[Instruction]:
    """Every instruction sentence in `prompt` (by the fixed templates), in order of appearance; [] if none.
    A sentence whose argument is invalid (e.g. "at most 0 words") is skipped."""
    found: list[tuple[int, Instruction]] = []
    for (kind, phrasing), pattern in PATTERNS.items():
        for m in pattern.finditer(prompt):
            raw = m.groupdict().get("arg")
            arg = int(raw) if kind in INT_KINDS else raw
            try:
                found.append((m.start(), Instruction(kind, arg, phrasing)))
            except ValueError:
                continue
    return [ins for _, ins in sorted(found, key=lambda t: t[0])]


def strip_instructions(prompt: str) -> str:
    """The prompt without its instruction sentences: what is left to compare when the same few instruction
    templates recur in every split by design (train/eval contamination is about the questions)."""
    for pattern in PATTERNS.values():
        prompt = pattern.sub(" ", prompt)
    return " ".join(prompt.split())


# ---- checkers: each returns a degree in [0, 1]; 1.0 exactly when the instruction is met --------------------


def count_words(text: str) -> int:
    """Runs of word characters (IFEval's `RegexpTokenizer(r"\\w+")`): "don't stop" is 3 words."""
    return len(WORD.findall(text))


def degree_word_limit(limit: int, response: str) -> float:
    """At most `limit` words, and at least one ("..." answers nothing): min(1, limit / words), 0.0 for none."""
    words = count_words(response)
    return min(1.0, limit / words) if words else 0.0


def degree_keyword(word: str, response: str) -> float:
    """The keyword as a whole word, any case ("Water," counts for "water"): 1.0. Only inside another word
    ("watering"): 0.5. Absent: 0.0."""
    if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", response, re.IGNORECASE):
        return 1.0
    return 0.5 if word.lower() in response.lower() else 0.0


def _cased(response: str) -> list[str]:
    """Characters that change under some case mapping (letters with case; digits, punctuation and uncased
    scripts are left out)."""
    return [c for c in response if c.lower() != c or c.upper() != c]


def degree_lowercase(response: str) -> float:
    """Share of cased letters that are lowercase; needs at least one cased letter ("123." scores 0.0). Judged
    per character, so it equals IFEval's `response == response.lower()` but for exotic case mappings."""
    cased = _cased(response)
    return sum(c.lower() == c for c in cased) / len(cased) if cased else 0.0


def degree_uppercase(response: str) -> float:
    """Share of cased letters that are uppercase; digits and punctuation are ignored ("NO. 42!" passes); needs
    at least one cased letter."""
    cased = _cased(response)
    return sum(c.upper() == c for c in cased) / len(cased) if cased else 0.0


def degree_first_word(word: str, response: str) -> float:
    """The first run of letters/digits, after any leading punctuation, markdown ("*", "#", "_") or quotes, equals
    `word` in any case ("**Sure!** ..." starts with "Sure"): 1.0. The word elsewhere as a whole word: 0.5."""
    words = [w.lower() for w in ALNUM_WORD.findall(response)]
    if words and words[0] == word.lower():
        return 1.0
    return 0.5 if word.lower() in words else 0.0


def _squash(text: str) -> str:
    return " ".join(text.split()).lower()


def degree_end_phrase(phrase: str, response: str) -> float:
    """The response ends with the exact phrase, case-insensitive, ignoring outer whitespace and treating any run
    of whitespace as one space (as IFEval, which lower-cases too): 1.0. Nothing may follow it, not even "**" or a
    full stop. The phrase elsewhere: 0.5."""
    text, end = _squash(response), _squash(phrase)
    if text.endswith(end):
        return 1.0
    return 0.5 if end in text else 0.0


def degree_no_commas(response: str) -> float:
    """No ASCII "," nor full-width "，": 1 / (1 + commas)."""
    return 1.0 / (1 + sum(response.count(c) for c in COMMAS))


def count_bullets(response: str) -> int:
    """Lines that start (after spaces or tabs) with "*" or "-", then a space, then some text. Both markers count,
    as in IFEval; numbered lists ("1. "), "**bold**" lines, "---" rules and empty bullets do not."""
    return len(BULLET.findall(response))


def degree_bullets(n: int, response: str) -> float:
    """Exactly `n` bullets: 1 / (1 + |found - n|). Other lines (an intro sentence) are allowed."""
    return 1.0 / (1 + abs(count_bullets(response) - n))


def _json_body(response: str) -> str:
    text = response.strip()
    fenced = JSON_FENCE.match(text)
    return fenced.group(1).strip() if fenced else text


def degree_json(response: str) -> float:
    """The whole response (optionally inside one ```json ... ``` or ``` ... ``` fence, which IFEval accepts too)
    parses with json.loads to an object with the key "answer" (other keys allowed): 1.0. Valid JSON of another
    shape: 0.5. Prose around the JSON or invalid JSON: 0.0."""
    try:
        value = json.loads(_json_body(response))
    except ValueError:
        return 0.0
    return 1.0 if isinstance(value, dict) and "answer" in value else 0.5


DEGREES: dict[str, Callable[[Any, str], float]] = {
    "word_limit": degree_word_limit,
    "keyword": degree_keyword,
    "lowercase": lambda _, r: degree_lowercase(r),
    "uppercase": lambda _, r: degree_uppercase(r),
    "first_word": degree_first_word,
    "end_phrase": degree_end_phrase,
    "no_commas": lambda _, r: degree_no_commas(r),
    "bullets": degree_bullets,
    "json": lambda _, r: degree_json(r),
}


def degree(instruction: Instruction, response: str) -> float:
    """Partial credit in [0, 1]; 1.0 exactly when `check` passes; 0.0 for a blank response."""
    if not response.strip():
        return 0.0
    return DEGREES[instruction.kind](instruction.arg, response)


def check(instruction: Instruction, response: str) -> bool:
    """The strict verdict (see the `degree_<kind>` functions for each rule)."""
    return degree(instruction, response) == 1.0


@dataclass(frozen=True)
class Verification:
    passed: bool  # all instructions in the prompt pass (False when the prompt has none)
    degree: float  # mean degree over the prompt's instructions (0.0 when none)
    kinds: tuple[str, ...]  # kinds found, in order of appearance
    per_kind: dict[str, bool]  # kind -> passed (all of that kind, if it appears twice)


def verify(prompt: str, response: str) -> Verification:
    """Judge `response` against every instruction found in `prompt`."""
    instructions = parse_instructions(prompt)
    if not instructions:
        return Verification(passed=False, degree=0.0, kinds=(), per_kind={})
    degrees = [degree(ins, response) for ins in instructions]
    per_kind: dict[str, bool] = {}
    for ins, d in zip(instructions, degrees, strict=True):
        per_kind[ins.kind] = per_kind.get(ins.kind, True) and d == 1.0
    return Verification(passed=all(d == 1.0 for d in degrees), degree=sum(degrees) / len(degrees),
                        kinds=tuple(ins.kind for ins in instructions), per_kind=per_kind)


# ---- the questions ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    id: str  # stable slug
    text: str  # one short question
    keywords: tuple[str, ...]  # 2-3 topical words a good answer would naturally use (none in the question)
    answers: tuple[str, ...] = ()  # accepted answers where a program can check them (alignment/instruct/answers.py)


def _q(qid: str, text: str, keywords: str) -> Question:
    return Question(qid, text, tuple(keywords.split()))


EVERYDAY: tuple[Question, ...] = (
    # cooking
    _q("keep-basil-fresh", "How do I keep basil fresh?", "water leaves jar"),
    _q("soft-boiled-egg", "How long should I boil an egg for a soft yolk?", "minutes water"),
    _q("less-sticky-rice", "How can I make rice less sticky?", "rinse starch"),
    _q("ripen-avocado", "How can I ripen an avocado faster?", "paper bag banana"),
    _q("onion-tears", "Why do onions make people cry?", "eyes cutting"),
    _q("store-bread", "What is the best way to store bread?", "freezer bag"),
    _q("clean-cast-iron", "How do I clean a cast iron pan?", "oil soap dry"),
    _q("salt-pasta-water", "Why do cooks add salt to pasta water?", "flavor taste"),
    _q("sharpen-knives", "How often should I sharpen my kitchen knives?", "blade months"),
    _q("burnt-pot", "How do I clean a burnt pot?", "baking soda vinegar"),
    _q("quick-breakfast", "What is a quick healthy breakfast?", "oats fruit eggs"),
    _q("leftover-rice", "How long can cooked rice stay in the fridge?", "days safe"),
    _q("thaw-chicken", "What is the safest way to thaw frozen chicken?", "refrigerator cold"),
    _q("overripe-bananas", "What can I bake with overripe bananas?", "bread muffins"),
    # health
    _q("daily-water", "How much water should an adult drink each day?", "glasses liters"),
    _q("sleep-hours", "How many hours of sleep do adults need?", "seven night"),
    _q("stop-hiccups", "How can I stop hiccups?", "breath water"),
    _q("screen-headaches", "Why do screens give some people headaches?", "eyes breaks"),
    _q("daily-walking", "What are the benefits of walking every day?", "heart mood"),
    _q("cold-or-flu", "What is the difference between a cold and the flu?", "fever symptoms"),
    _q("sore-throat", "What helps a sore throat feel better?", "honey tea warm"),
    _q("cloudy-sunscreen", "Why should I wear sunscreen on cloudy days?", "rays skin"),
    _q("morning-stretch", "Why is stretching in the morning good for you?", "muscles blood"),
    _q("desk-posture", "How can I improve my posture at a desk?", "chair back screen"),
    _q("brushing-time", "How long should I brush my teeth?", "minutes twice"),
    _q("fall-asleep", "What helps you fall asleep faster?", "dark phone routine"),
    _q("reduce-stress", "What is a simple way to reduce stress?", "breathing walk"),
    # travel
    _q("pack-light", "How can I pack light for a week-long trip?", "clothes bag"),
    _q("jet-lag", "How can I reduce jet lag?", "sleep sunlight"),
    _q("airport-arrival", "How early should I arrive at the airport for a flight?", "hours security"),
    _q("car-sickness", "What helps with motion sickness in a car?", "window horizon"),
    _q("travel-documents", "What documents do I need to travel abroad?", "passport visa"),
    _q("cheap-flights", "How can I find cheaper flights?", "dates booking"),
    _q("hotel-or-hostel", "What is the difference between a hotel and a hostel?", "rooms shared"),
    _q("carry-on-liquids", "Why are liquids limited in carry-on bags?", "security bottles"),
    _q("cash-abroad", "Should I bring cash when traveling abroad?", "card currency"),
    _q("road-trip-snacks", "What snacks travel well on a long drive?", "nuts crackers"),
    _q("local-phrases", "Why is it useful to learn a few local phrases before a trip?", "people polite"),
    # money
    _q("monthly-budget", "How do I start making a monthly budget?", "income expenses"),
    _q("emergency-fund", "Why should I have an emergency fund?", "savings months"),
    _q("credit-score", "What affects a credit score?", "payments debt"),
    _q("cheaper-groceries", "How can I save money on groceries?", "list sales"),
    _q("compound-interest", "What is compound interest?", "money grows time"),
    _q("impulse-buying", "How can I avoid impulse buying?", "wait list"),
    _q("rent-or-buy", "Is it better to rent or buy a home?", "mortgage costs"),
    _q("restaurant-tip", "How much should I tip at a restaurant?", "percent service"),
    _q("debit-or-credit", "What is the difference between a debit card and a credit card?", "bank borrow"),
    _q("electricity-bill", "How can I lower my electricity bill?", "lights heating"),
    _q("early-retirement-saving", "Why is it good to start saving for retirement early?", "interest years"),
    # household
    _q("wine-stain", "How do I get a red wine stain out of a shirt?", "cold water salt"),
    _q("slow-drain", "How can I unclog a slow drain?", "baking vinegar plunger"),
    _q("streak-free-windows", "What is the best way to clean windows without streaks?", "vinegar cloth"),
    _q("fridge-smell", "How do I get rid of a bad smell in the fridge?", "baking soda"),
    _q("water-houseplants", "How often should I water houseplants?", "soil week"),
    _q("bathroom-mold", "How can I prevent mold in the bathroom?", "fan moisture"),
    _q("squeaky-door", "How do I fix a squeaky door?", "hinge oil"),
    _q("declutter-room", "How do I start decluttering a messy room?", "boxes donate"),
    _q("sort-laundry", "Why should I sort laundry by color?", "dye white"),
    _q("wash-towels", "How often should I wash bath towels?", "week bacteria"),
    _q("hang-picture", "How do I hang a picture straight?", "level nail"),
    _q("kitchen-ants", "How can I keep ants out of the kitchen?", "crumbs vinegar"),
    # nature
    _q("autumn-leaves", "Why do leaves change color in autumn?", "chlorophyll green"),
    _q("bees-matter", "Why are bees important?", "pollinate flowers"),
    _q("rainbow-forms", "How does a rainbow form?", "light raindrops"),
    _q("birds-fly-south", "Why do birds fly south for the winter?", "food warm"),
    _q("trees-and-air", "How do trees help the air?", "oxygen carbon"),
    _q("salty-ocean", "Why is the ocean salty?", "rivers minerals"),
    _q("moon-shape", "Why does the moon change shape?", "sun phases"),
    _q("twinkling-stars", "Why do stars twinkle?", "atmosphere light"),
    _q("cold-desert-nights", "Why are deserts cold at night?", "heat clouds"),
    _q("volcanoes-erupt", "Why do volcanoes erupt?", "magma pressure"),
    _q("seed-spreading", "How do plants spread their seeds?", "wind animals"),
    # science basics
    _q("ice-floats", "Why does ice float on water?", "lighter density"),
    _q("lightning-thunder", "Why do we see lightning before we hear thunder?", "sound faster"),
    _q("how-magnets-work", "How do magnets work?", "poles metal"),
    _q("boiling-altitude", "Why does water boil at a lower temperature in the mountains?", "pressure air"),
    _q("what-causes-seasons", "What causes the seasons?", "tilt axis sun"),
    _q("iron-rust", "Why does iron rust?", "oxygen water"),
    _q("sound-travels", "How does sound travel?", "waves air"),
    _q("plants-sunlight", "Why do plants need sunlight?", "photosynthesis energy"),
    _q("what-is-gravity", "What is gravity?", "force mass"),
    _q("metal-feels-cold", "Why does metal feel colder than wood?", "heat conducts"),
    _q("salt-icy-roads", "Why do people put salt on icy roads?", "melting freezing"),
    _q("static-shock", "Why do I get a static shock from door handles?", "electrons charge"),
    _q("microwave-heating", "How does a microwave heat food?", "water molecules"),
    # work
    _q("interview-prep", "How should I prepare for a job interview?", "company questions"),
    _q("follow-up-email", "How do I write a polite follow-up email?", "thank brief"),
    _q("shorter-meetings", "How can I make meetings shorter?", "agenda time"),
    _q("ask-for-raise", "How do I ask for a raise?", "salary results"),
    _q("home-office-focus", "How can I stay focused when working from home?", "desk breaks"),
    _q("stop-procrastinating", "How can I stop procrastinating?", "tasks small"),
    _q("resume-length", "How long should a resume be?", "page experience"),
    _q("decline-extra-work", "How do I say no to extra work politely?", "priorities time"),
    _q("first-day-at-job", "What should I do on my first day at a new job?", "names questions"),
    _q("burnout-signs", "What are signs of burnout?", "tired stress"),
    _q("coworker-feedback", "How do I give helpful feedback to a coworker?", "specific kind"),
    # study
    _q("memorize-faster", "How can I memorize things faster?", "repetition practice"),
    _q("night-before-exam", "What should I do the night before an exam?", "sleep review"),
    _q("class-notes", "What is a good way to take notes in class?", "keywords summary"),
    _q("self-taught-language", "How can I learn a new language on my own?", "practice apps"),
    _q("study-breaks", "Why are breaks important when studying?", "brain focus"),
    _q("read-faster", "How can I read faster?", "words practice"),
    _q("start-an-essay", "How do I start writing an essay?", "outline topic"),
    _q("group-study", "Is studying in a group helpful?", "questions explain"),
    _q("math-test-nerves", "How can I feel less nervous about math tests?", "practice calm"),
    _q("music-while-studying", "Does listening to music help you study?", "lyrics focus"),
    _q("child-reading", "How can I help a child enjoy reading?", "books together"),
    # pets
    _q("cats-purr", "Why do cats purr?", "happy calm"),
    _q("dog-walks", "How often should I walk my dog?", "day exercise"),
    _q("chocolate-dogs", "Why is chocolate bad for dogs?", "toxic vet"),
    _q("fish-tank-cleaning", "How often should I clean a fish tank?", "water week"),
    _q("new-kitten", "What does a new kitten need?", "food litter"),
    _q("night-barking", "How can I stop my dog from barking at night?", "training quiet"),
    _q("cat-scratching", "How do I stop my cat scratching furniture?", "post claws"),
    _q("hamster-food", "What do hamsters eat?", "seeds vegetables"),
    _q("pet-hot-weather", "How can I keep my pet cool in hot weather?", "shade water"),
    _q("tail-wagging", "What does it mean when a dog wags its tail?", "happy excited"),
    _q("rabbits-for-kids", "Are rabbits good pets for children?", "gentle care"),
    # weather
    _q("chance-of-rain", "What does a 40 percent chance of rain mean?", "forecast area"),
    _q("what-causes-fog", "What causes fog?", "air water"),
    _q("snow-forms", "How does snow form?", "clouds ice"),
    _q("thunderstorm-outside", "What should I do if I am outside in a thunderstorm?", "lightning shelter"),
    _q("humid-heat", "Why does humid weather feel hotter?", "sweat evaporate"),
    _q("wind-chill", "What is wind chill?", "cold skin"),
    _q("hail", "What is hail made of?", "ice storm"),
    _q("heat-wave", "How can I stay cool during a heat wave?", "water shade"),
    _q("dress-for-cold", "How should I dress for very cold weather?", "layers hat"),
    _q("storm-prep", "How should I prepare for a big storm?", "supplies water"),
    # sports
    _q("start-running", "How should a beginner start running?", "slowly shoes"),
    _q("warm-up", "Why should I warm up before exercise?", "muscles injury"),
    _q("adult-swimming", "Is it too late to learn to swim as an adult?", "lessons water"),
    _q("first-5k", "How can I train for my first 5k race?", "weeks pace"),
    _q("muscle-cramps", "What causes muscle cramps during sports?", "water salt"),
    _q("goalkeeper-role", "What does a goalkeeper do in soccer?", "goal ball"),
    _q("bike-tires", "How often should I pump up my bike tires?", "pressure week"),
    _q("kids-team-sports", "Why are team sports good for children?", "friends teamwork"),
    _q("yoga-benefits", "What are the benefits of yoga?", "flexibility breathing"),
    _q("rest-days", "Why are rest days important for training?", "muscles recover"),
    _q("start-tennis", "What do I need to start playing tennis?", "racket balls"),
    # everyday life and technology
    _q("phone-battery", "How can I make my phone battery last longer?", "screen brightness"),
    _q("strong-password", "How do I make a strong password?", "letters numbers"),
    _q("slow-computer", "Why is my computer running slowly?", "memory programs"),
    _q("photo-backup", "How can I back up my photos?", "cloud drive"),
    _q("coworker-gift", "What is a good gift for a coworker?", "card coffee"),
    _q("vegetable-garden", "How do I start a small vegetable garden?", "soil sunlight"),
    _q("home-composting", "How do I start composting at home?", "scraps bin"),
    _q("rinse-recycling", "Why should I rinse containers before recycling them?", "food clean"),
    _q("small-talk", "How can I get better at small talk?", "questions listen"),
    _q("thank-you-note", "What should I write in a thank you note?", "gift grateful"),
    _q("morning-routine", "What makes a good morning routine?", "water plan"),
    _q("weak-wifi", "How can I improve a weak Wi-Fi signal?", "router walls"),
)
# everyday how-to questions (judged on the instruction and on answering at all) and questions whose answer a
# program checks (short facts, arithmetic, conversions: judged on the answer too)
QUESTIONS: tuple[Question, ...] = EVERYDAY + tuple(Question(c.id, c.text, c.keywords, c.answers) for c in CHECKABLE)


# ---- the task -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstructionPrompt:
    question_id: str
    question: str
    instruction: Instruction

    @property
    def text(self) -> str:
        return f"{self.question} {self.instruction.text()}"

    def to_row(self) -> dict[str, Any]:
        return {"prompt": [{"role": "user", "content": self.text}], "question_id": self.question_id,
                "instruction": self.instruction.to_dict()}


def is_heldout_question(question_id: str, fraction: float, salt: str = "") -> bool:
    """Whether a question is held out, by a SHA-256 hash of (salt, question id): deterministic and independent
    of the order or number of questions; about `fraction` of all questions are."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    digest = hashlib.sha256(f"{salt}\x00{question_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """`kinds` without repeats, in order; ValueError for an unknown kind or none at all."""
    for kind in kinds:
        if kind not in KINDS:
            raise _unknown_kind(kind)
    unique = tuple(dict.fromkeys(kinds))
    if not unique:
        raise ValueError(f"no instruction kinds given; known kinds: {', '.join(KINDS)}")
    return unique


def draw_instruction(kind: str, question: Question, rng: random.Random) -> Instruction:
    """An instruction of `kind` for `question`, its argument drawn from the kind's pool."""
    pools: dict[str, Sequence[str | int]] = {"word_limit": WORD_LIMITS, "keyword": question.keywords,
                                             "first_word": FIRST_WORDS, "end_phrase": END_PHRASES,
                                             "bullets": BULLET_COUNTS}
    return Instruction(kind, rng.choice(pools[kind]) if kind in pools else None)


def least_used(counts: dict[str, int], k: int, rng: random.Random) -> list[str]:
    """`k` distinct kinds with the lowest counts, ties broken at random; adds them to `counts`. Used for every
    question in turn, it keeps the counts within 1 of each other."""
    order = list(counts)
    rng.shuffle(order)
    chosen = sorted(order, key=counts.__getitem__)[:k]  # stable sort: the shuffle breaks ties
    for kind in chosen:
        counts[kind] += 1
    return chosen


def generate_task(seed: int, *, heldout_fraction: float = 0.25, per_question: int = 3,
                  kinds: Sequence[str] = KINDS, heldout_phrasings: bool = True) -> dict[str, list[InstructionPrompt]]:
    """{"train": [...], "heldout": [...]}: every question with `per_question` instructions of distinct kinds.

    A question is held out by `is_heldout_question(id, heldout_fraction, str(seed))` and then appears only in
    "heldout", so no held-out question (with any instruction) is seen in training. Within each split the kinds
    are balanced: per kind, counts differ by at most 1. With `heldout_phrasings` the held-out split words its
    instructions with HELDOUT_TEMPLATES, never seen in training. Deterministic for a seed; each split in a
    seeded shuffled order.
    """
    use = check_kinds(kinds)
    if not 1 <= per_question <= len(use):
        raise ValueError(f"per_question must be in [1, {len(use)}] (the number of kinds), got {per_question}")
    rng = random.Random(seed)
    counts = {split: dict.fromkeys(use, 0) for split in ("train", "heldout")}
    out: dict[str, list[InstructionPrompt]] = {"train": [], "heldout": []}
    for q in sorted(QUESTIONS, key=lambda q: q.id):
        split = "heldout" if is_heldout_question(q.id, heldout_fraction, str(seed)) else "train"
        phrasing = "heldout" if split == "heldout" and heldout_phrasings else "train"
        for kind in least_used(counts[split], per_question, rng):
            drawn = draw_instruction(kind, q, rng)
            out[split].append(InstructionPrompt(q.id, q.text, Instruction(drawn.kind, drawn.arg, phrasing)))
    for prompts in out.values():
        rng.shuffle(prompts)
    return out
