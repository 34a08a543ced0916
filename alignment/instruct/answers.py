"""Questions whose answer a program can check: short facts, arithmetic and unit conversions, written here,
offline. They join the everyday questions of the instruction task (alignment/instruct/instructions.py), so an on-policy
sample to "What is 7 times 8? Answer in at most 10 words." is judged on the instruction *and* on the answer:
"56." follows both, "Okay." follows only the instruction and must rank below an answer that is right.

`correct(question, response)` is True when one of the question's accepted answers appears in the response as
whole words (case-insensitive; number words read as digits, "fifty-six" = "56"; digit groups "2,000" = "2000"),
False when none does, and None for a question with no checkable answer (the everyday ones).

None of these questions is in the benchmark tasks (evaluation/lm_eval_tasks/general_knowledge.py asks capitals,
additions and other facts), so training on them does not teach the general-capability benchmark its answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Checkable:
    id: str  # stable slug
    text: str  # the question
    keywords: tuple[str, ...]  # words for the keyword instruction (none of them in the question)
    answers: tuple[str, ...]  # accepted answers, any of which must appear in a correct response


def _fact(qid: str, text: str, keywords: str, *answers: str) -> Checkable:
    return Checkable(f"fact-{qid}", text, tuple(keywords.split()), answers)


FACTS: tuple[Checkable, ...] = (
    _fact("insect-legs", "How many legs does an insect have?", "body crawl", "6"),
    _fact("plants-breathe-in", "Which gas do plants take in from the air?", "leaves photosynthesis",
          "carbon dioxide", "CO2"),
    _fact("water-freezes", "At what temperature in Celsius does water freeze?", "ice degrees", "0"),
    _fact("hexagon-sides", "How many sides does a hexagon have?", "shape edges", "6"),
    _fact("pentagon-sides", "How many sides does a pentagon have?", "shape edges", "5"),
    _fact("african-desert", "What is the largest hot desert in the world?", "sand africa", "Sahara"),
    _fact("red-planet", "Which planet is called the Red Planet?", "rust sun", "Mars"),
    _fact("african-river", "What is the longest river in Africa?", "egypt water", "Nile"),
    _fact("mona-lisa", "Who painted the Mona Lisa?", "artist italian", "Leonardo", "da Vinci"),
    _fact("brazil-language", "What language do most people in Brazil speak?", "official spoken", "Portuguese"),
    _fact("soccer-players", "How many players does a soccer team have on the field?", "goalkeeper pitch",
          "11"),
    _fact("liquid-metal", "Which metal is liquid at room temperature?", "thermometer element", "mercury"),
    _fact("bees-make", "What sweet food do bees make?", "hive flowers", "honey"),
    _fact("guitar-strings", "How many strings does a standard guitar have?", "instrument music", "6"),
    _fact("hardest-natural", "What is the hardest natural material?", "carbon gem", "diamond"),
    _fact("japan-money", "What is the currency of Japan?", "money coins", "yen"),
    _fact("century-years", "How many years are in a century?", "decades time", "100"),
    _fact("leap-year", "How many days does a leap year have?", "february calendar", "366"),
    _fact("boiling-fahrenheit", "How hot is boiling water in degrees Fahrenheit?", "heat kettle", "212"),
    _fact("breathing-organ", "Which organs do people breathe with?", "air chest", "lungs"),
    _fact("gold-symbol", "What is the chemical symbol for gold?", "element table", "Au"),
    _fact("moon-walk", "Who was the first person to walk on the Moon?", "astronaut 1969", "Armstrong"),
    _fact("frozen-water", "What do we call water that has frozen solid?", "cold winter", "ice"),
    _fact("color-changing-lizard", "Which lizard is famous for changing its color?", "skin camouflage",
          "chameleon"),
    _fact("rainbow-colors", "How many colors are in a rainbow?", "light spectrum", "7"),
    _fact("tallest-mountain", "What is the tallest mountain on Earth?", "nepal peak", "Everest"),
    _fact("largest-country", "Which country has the largest area?", "land map", "Russia"),
    _fact("adult-bones", "How many bones does an adult human have?", "skeleton body", "206"),
    _fact("guacamole", "Which fruit is guacamole made from?", "green dip", "avocado"),
    _fact("our-galaxy", "What is the name of our galaxy?", "stars space", "Milky Way"),
    _fact("giza-pyramids", "In which country are the pyramids of Giza?", "ancient pharaohs", "Egypt"),
    _fact("spider-web", "What do spiders spin to catch insects?", "silk trap", "web", "webs"),
    _fact("penguin-continent", "Which continent has the most penguins?", "ice south", "Antarctica"),
    _fact("bread-grain", "Which grain is most bread made from?", "flour bakery", "wheat"),
)

# (first, second) pairs: no two share a number, so the questions are not near-duplicates of each other
MULTIPLICATIONS: tuple[tuple[int, int], ...] = ((7, 8), (6, 9), (12, 4), (11, 3), (15, 2), (13, 5))
# no answer among the question's own numbers (54 - 27 = 27 would be "answered" by the question itself)
SUBTRACTIONS: tuple[tuple[int, int], ...] = ((45, 17), (83, 26), (60, 14), (92, 38), (71, 9), (54, 19))
# unit question template, factor; three amounts each. None of the factors is a fact the general benchmark asks
# (days in a week, minutes in an hour, months in a year are there: training on them would teach its answers)
CONVERSIONS: tuple[tuple[str, str, int], ...] = (
    ("cm-in-m", "How many centimeters are in {n} meters?", 100),
    ("mm-in-cm", "How many millimeters are in {n} centimeters?", 10),
    ("m-in-km", "How many meters are in {n} kilometers?", 1000),
    ("g-in-kg", "How many grams are in {n} kilograms?", 1000),
    ("s-in-min", "How many seconds are in {n} minutes?", 60),
    ("cents-in-dollars", "How many cents are in {n} dollars?", 100),
)
CONVERSION_AMOUNTS: tuple[int, ...] = (2, 3, 5)
NUMBER_KEYWORDS = ("total", "result")


def arithmetic() -> tuple[Checkable, ...]:
    out = [Checkable(f"times-{a}-{b}", f"What is {a} times {b}?", NUMBER_KEYWORDS, (str(a * b),))
           for a, b in MULTIPLICATIONS]
    out += [Checkable(f"minus-{a}-{b}", f"What is {a} minus {b}?", NUMBER_KEYWORDS, (str(a - b),))
            for a, b in SUBTRACTIONS]
    out += [Checkable(f"{slug}-{n}", text.format(n=n), NUMBER_KEYWORDS, (str(n * factor),))
            for slug, text, factor in CONVERSIONS for n in CONVERSION_AMOUNTS]
    return tuple(out)


CHECKABLE: tuple[Checkable, ...] = FACTS + arithmetic()
BY_TEXT: dict[str, Checkable] = {q.text: q for q in CHECKABLE}


# ---- checking -------------------------------------------------------------------------------------------------

UNITS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
         "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
         "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
        "ninety": 90}
SCALES = {"hundred": 100, "thousand": 1000}
NUMBER_WORD = "|".join([*UNITS, *TENS, *SCALES])
NUMBER_PHRASE = re.compile(rf"\b(?:{NUMBER_WORD})(?:[\s-]+(?:and[\s-]+)?(?:{NUMBER_WORD}))*\b")
DIGIT_GROUPS = re.compile(r"(?<=\d)[,\u202f ](?=\d{3}\b)")


def words_to_number(phrase: str) -> int:
    """"fifty-six" -> 56, "two thousand five hundred" -> 2500, "one hundred and six" -> 106 (one number;
    `numbers_in_words` splits a phrase that holds several)."""
    values = numbers_in_words(phrase)
    return int(values[0]) if len(values) == 1 else int(values[-1])


def numbers_in_words(phrase: str) -> list[str]:
    """A run of number words read by English grammar, as digits and the words between: "fifty-six" -> ["56"],
    "between five and six" -> ["5", "and", "6"], "six six" -> ["6", "6"], "one hundred and six" -> ["106"].
    Only tens + unit, unit + hundred, ... hundred [and] (tens/unit/teen) and ... thousand ... combine; any other
    sequence starts a new number (two units, two tens, a unit before tens)."""
    out: list[str] = []
    total, current, last = 0, 0, ""  # last: "", "unit", "teen", "tens", "hundred", "thousand", "and"

    def flush() -> None:
        nonlocal total, current, last
        if last and last != "and":
            out.append(str(total + current))
        elif last == "and":
            if total + current:
                out.append(str(total + current))
            out.append("and")
        total, current, last = 0, 0, ""

    for word in re.split(r"[\s-]+", phrase.strip()):
        kind = ("unit" if word in UNITS and UNITS[word] < 10 else "teen" if word in UNITS else
                "tens" if word in TENS else word if word in SCALES else "and" if word == "and" else "")
        allowed = {"": {"unit", "teen", "tens", "hundred", "thousand"},
                   "unit": {"hundred", "thousand"}, "teen": {"hundred", "thousand"},
                   "tens": {"unit", "thousand"}, "hundred": {"unit", "teen", "tens", "thousand", "and"},
                   "thousand": {"unit", "teen", "tens", "and"}, "and": {"unit", "teen", "tens"}}[last]
        if kind not in allowed or (kind == "thousand" and total):
            flush()
            if kind == "and":
                out.append("and")
                continue
        if kind in ("unit", "teen"):
            current += UNITS[word]
        elif kind == "tens":
            current += TENS[word]
        elif kind == "hundred":
            current = max(current, 1) * 100
        elif kind == "thousand":
            total, current = max(current, 1) * 1000, 0
        last = kind
    flush()
    return out


def normalise(text: str) -> str:
    """Lower case, number words as digits, digit groups joined ("2,000" -> "2000"), other punctuation as
    spaces."""
    text = NUMBER_PHRASE.sub(lambda m: " ".join(numbers_in_words(m.group(0))), text.lower())
    text = DIGIT_GROUPS.sub("", text)
    return " ".join(re.sub(r"[^\w.]+|(?<!\d)\.|\.(?!\d)", " ", text).split())


def mentions(response: str, answer: str) -> bool:
    """`answer` appears in `response` as whole words, after `normalise` of both."""
    return re.search(rf"(?<![\w.]){re.escape(normalise(answer))}(?![\w]|\.\d)", normalise(response)) is not None


NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w]|\.\d)")


def correct(question: str, response: str) -> bool | None:
    """Whether `response` answers `question` (its text, as in BY_TEXT) correctly; None when the question has no
    checkable answer. A numeric answer must also be the last number of the response that is not one of the
    question's own ("7 times 8 is 56" and "3 * 7 = 21 days" answer; "not 56, it is 54" and a list of candidates
    "1 2 ... 12" do not)."""
    item = BY_TEXT.get(question.strip())
    if item is None:
        return None
    if all(NUMBER.fullmatch(a) for a in item.answers):
        asked = set(NUMBER.findall(normalise(question)))
        new = [n for n in NUMBER.findall(normalise(response)) if n not in asked]
        return bool(new) and new[-1] in item.answers
    return any(mentions(response, answer) for answer in item.answers)

