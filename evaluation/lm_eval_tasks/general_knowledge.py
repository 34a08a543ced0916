"""Data of the 'alignment tax' benchmark `alignflow_general_mc`: general knowledge and arithmetic that a small
instruct model (SmolLM2-135M-Instruct) mostly knows and that neither the quickstart's animal facts nor the
instruction-following task (alignment/instruct/instructions.py) teaches. A drop after preference training is a cost of
the alignment, not a lost lesson.

Three kinds of 4-way multiple-choice questions, all with short answer strings (lm-eval scores the
log-likelihood of each choice after the chat-templated question):

- capitals:   "What is the capital of France?"  Paris against 3 capitals of other countries in the table.
- additions:  "What is 7 + 5?"  12 against 3 nearby numbers (+-1, +-2, +-10); 20 with two one-digit numbers and
              20 with a two-digit and a one-digit number.
- facts:      "How many legs does a spider have?"  Eight against 3 hand-written distractors.

The documents are shuffled with a fixed seed and the gold position cycles 0..3 along them, so a model with no
preference scores 0.25. Regenerate the committed data after a change here:
`python -m evaluation.lm_eval_tasks.general_knowledge` (tests/evaluation/test_general_task.py checks the
committed file equals what this module makes now).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from evaluation.lm_eval_tasks.alignflow_tasks import DATA_DIR, NUM_CHOICES, to_jsonl, with_gold_at

TASK = "alignflow_general_mc"
DATA_FILE = "general_mc.jsonl"
SEED = 4321

# country -> capital; well-known ones only
CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "the United Kingdom": "London", "Egypt": "Cairo", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Austria": "Vienna", "Norway": "Oslo", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Poland": "Warsaw", "Hungary": "Budapest",
    "the Czech Republic": "Prague", "the Netherlands": "Amsterdam", "Belgium": "Brussels", "Canada": "Ottawa",
    "the United States": "Washington, D.C.", "Mexico": "Mexico City", "Argentina": "Buenos Aires",
    "Chile": "Santiago", "Peru": "Lima", "Colombia": "Bogota", "Venezuela": "Caracas", "Cuba": "Havana",
    "India": "New Delhi", "Pakistan": "Islamabad", "Bangladesh": "Dhaka", "Thailand": "Bangkok",
    "Vietnam": "Hanoi", "South Korea": "Seoul", "North Korea": "Pyongyang", "Indonesia": "Jakarta",
    "the Philippines": "Manila", "Malaysia": "Kuala Lumpur", "Australia": "Canberra", "New Zealand": "Wellington",
    "Kenya": "Nairobi", "Ethiopia": "Addis Ababa", "Morocco": "Rabat", "Turkey": "Ankara", "Iran": "Tehran",
    "Iraq": "Baghdad", "Saudi Arabia": "Riyadh", "Lebanon": "Beirut", "Syria": "Damascus",
    "Afghanistan": "Kabul", "Ukraine": "Kyiv", "Romania": "Bucharest", "Bulgaria": "Sofia", "Serbia": "Belgrade",
    "Iceland": "Reykjavik", "Jamaica": "Kingston", "Nepal": "Kathmandu",
}

# (id, question, answer, 3 distractors): facts a small chat model very likely knows
FACTS: tuple[tuple[str, str, str, tuple[str, str, str]], ...] = (
    ("spider-legs", "How many legs does a spider have?", "Eight", ("Six", "Four", "Ten")),
    ("clear-sky", "What color is the sky on a clear day?", "Blue", ("Green", "Red", "Brown")),
    ("our-planet", "Which planet do we live on?", "Earth", ("Mars", "Venus", "Jupiter")),
    ("days-in-week", "How many days are in a week?", "Seven", ("Five", "Six", "Eight")),
    ("grass-color", "What color is grass?", "Green", ("Blue", "Purple", "Orange")),
    ("months-in-year", "How many months are in a year?", "Twelve", ("Ten", "Eleven", "Fourteen")),
    ("jungle-king", "Which animal is known as the king of the jungle?", "Lion", ("Mouse", "Rabbit", "Goat")),
    ("largest-ocean", "What is the largest ocean on Earth?", "Pacific", ("Atlantic", "Indian", "Arctic")),
    ("hours-in-day", "How many hours are in a day?", "Twenty-four", ("Twelve", "Ten", "Sixty")),
    ("opposite-of-hot", "What is the opposite of hot?", "Cold", ("Warm", "Tall", "Loud")),
    ("lemon-color", "What color is a ripe lemon?", "Yellow", ("Blue", "Purple", "Black")),
    ("triangle-sides", "How many sides does a triangle have?", "Three", ("Four", "Five", "Six")),
    ("square-sides", "How many sides does a square have?", "Four", ("Three", "Six", "Eight")),
    ("water-boils", "At what temperature in Celsius does water boil?", "100 degrees",
     ("50 degrees", "10 degrees", "200 degrees")),
    ("baby-dog", "What is a baby dog called?", "Puppy", ("Kitten", "Calf", "Chick")),
    ("largest-planet", "Which is the largest planet in our solar system?", "Jupiter",
     ("Mars", "Mercury", "Venus")),
    ("nearest-star", "What is the closest star to Earth?", "The Sun", ("The Moon", "Mars", "Pluto")),
    ("continents", "How many continents are there?", "Seven", ("Three", "Ten", "Twelve")),
    ("milk-color", "What color is milk?", "White", ("Black", "Green", "Red")),
    ("doctor-fruit", "Which fruit is said to keep the doctor away?", "Apple", ("Grape", "Plum", "Kiwi")),
    ("bicycle-wheels", "How many wheels does a bicycle have?", "Two", ("Three", "Four", "Six")),
    ("language-of-spain", "What language is spoken in Spain?", "Spanish", ("French", "German", "Russian")),
    ("water-formula", "What is the chemical formula of water?", "H2O", ("CO2", "O2", "NaCl")),
    ("tallest-animal", "What is the tallest animal in the world?", "Giraffe", ("Pig", "Dog", "Rabbit")),
    ("largest-mammal", "What is the largest mammal on Earth?", "Blue whale", ("Mouse", "Cat", "Fox")),
    ("fastest-land-animal", "What is the fastest land animal?", "Cheetah", ("Tortoise", "Snail", "Sloth")),
    ("minutes-in-hour", "How many minutes are in an hour?", "Sixty", ("Thirty", "Ten", "One hundred")),
    ("alphabet-letters", "How many letters are in the English alphabet?", "Twenty-six",
     ("Twenty", "Thirty", "Twelve")),
    ("plane-flyer", "What do you call a person who flies a plane?", "Pilot", ("Chef", "Farmer", "Baker")),
    ("fish-home", "Where do fish live?", "In water", ("In trees", "In deserts", "In clouds")),
    ("opposite-of-up", "What is the opposite of up?", "Down", ("Left", "Over", "Near")),
    ("coldest-season", "Which season is the coldest?", "Winter", ("Summer", "Spring", "Autumn")),
    ("blue-and-yellow", "What color do you get when you mix blue and yellow?", "Green",
     ("Purple", "Orange", "Pink")),
    ("after-monday", "Which day comes after Monday?", "Tuesday", ("Sunday", "Friday", "Thursday")),
    ("after-january", "Which month comes after January?", "February", ("March", "December", "June")),
    ("hearing-organ", "Which part of the body do we use to hear?", "Ears", ("Eyes", "Nose", "Knees")),
    ("blood-pump", "Which organ pumps blood through the body?", "Heart", ("Lungs", "Liver", "Stomach")),
    ("long-trunk", "Which animal has a long trunk?", "Elephant", ("Zebra", "Camel", "Tiger")),
    ("peace-bird", "Which bird is a symbol of peace?", "Dove", ("Vulture", "Eagle", "Parrot")),
    ("caterpillar", "What does a caterpillar turn into?", "Butterfly", ("Spider", "Bird", "Frog")),
    ("romeo-author", "Who wrote Romeo and Juliet?", "William Shakespeare",
     ("Charles Dickens", "Mark Twain", "Jane Austen")),
    ("black-white-keys", "Which instrument has black and white keys?", "Piano", ("Guitar", "Drum", "Violin")),
    ("stop-sign", "What color is a stop sign?", "Red", ("Blue", "Purple", "Brown")),
    ("sunrise-direction", "In which direction does the sun rise?", "East", ("West", "North", "South")),
)

N_ADDITIONS = 20  # of each size: one-digit + one-digit, two-digit + one-digit


def capital_docs(rng: random.Random) -> list[dict[str, Any]]:
    """One question per country; distractors are capitals of 3 other countries."""
    docs = []
    for country, capital in CAPITALS.items():
        others = sorted(set(CAPITALS.values()) - {capital})
        slug = country.removeprefix("the ").lower().replace(" ", "-")
        docs.append({"id": f"capital-{slug}", "question": f"What is the capital of {country}?", "answer": capital,
                     "wrong": rng.sample(others, NUM_CHOICES - 1)})
    return docs


def near_numbers(total: int, rng: random.Random) -> list[str]:
    """3 distinct positive numbers near `total` (off by 1, 2 or 10), as strings."""
    candidates = sorted(n for n in {total + d for d in (-10, -2, -1, 1, 2, 10)} if n > 0)
    return [str(n) for n in rng.sample(candidates, NUM_CHOICES - 1)]


def addition_pairs(rng: random.Random) -> list[tuple[int, int]]:
    """N_ADDITIONS distinct pairs of one-digit numbers (2..9, unordered) and N_ADDITIONS of a two-digit (10..89)
    and a one-digit number; sums stay below 100."""
    small = sorted({(a, b) for a in range(2, 10) for b in range(a, 10)})
    large = sorted({(a, b) for a in range(10, 90) for b in range(2, 10)})
    return rng.sample(small, N_ADDITIONS) + rng.sample(large, N_ADDITIONS)


def addition_docs(rng: random.Random) -> list[dict[str, Any]]:
    return [{"id": f"add-{a}-{b}", "question": f"What is {a} + {b}?", "answer": str(a + b),
             "wrong": near_numbers(a + b, rng)} for a, b in addition_pairs(rng)]


def fact_docs(rng: random.Random) -> list[dict[str, Any]]:
    return [{"id": f"fact-{fid}", "question": q, "answer": answer, "wrong": rng.sample(wrong, len(wrong))}
            for fid, q, answer, wrong in FACTS]


def build_docs(seed: int = SEED) -> list[dict[str, Any]]:
    """The task's documents {"id", "question", "choices", "label"}, shuffled; gold position cycles 0..3.
    Deterministic for a seed."""
    rng = random.Random(seed)
    drafts = capital_docs(rng) + addition_docs(rng) + fact_docs(rng)
    rng.shuffle(drafts)
    return [{"id": d["id"], "question": d["question"], "label": i % NUM_CHOICES,
             "choices": with_gold_at(d["answer"], d["wrong"], i % NUM_CHOICES)} for i, d in enumerate(drafts)]


def write(data_dir: Path = DATA_DIR) -> Path:
    path = data_dir / DATA_FILE
    path.write_text(to_jsonl(build_docs()), encoding="utf-8")
    return path


if __name__ == "__main__":
    print(f"{TASK}: {write()}")
