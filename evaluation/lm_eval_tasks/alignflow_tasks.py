"""Data and hooks of the project's lm-eval tasks, all built from the quickstart's 'animal facts' world
(alignment/instruct/quicktask.py).

Every task uses the quickstart's held-out prompts (those `quicktask.is_heldout` puts aside at the default
`data.quicktask.heldout_fraction`), so with the default split no benchmark question is a training prompt
verbatim; the facts themselves are taught through other phrasings. The context is the bare question: lm-eval
renders it with the model's own chat template (evaluation/benchmarks.py passes `apply_chat_template`), which
is the surface form the SFT data has.

- alignflow_animal_mc:  4 answer sentences of the same form, one with the right value ("The cow says moo."
  against "The cow says oink." ...); gold position cycles through 0..3, so a model with no preference scores
  0.25.
- alignflow_animal_gen: greedy answer, exact match with the good sentence (plus `well_formed`: any answer of
  the task's sentence form, right or wrong value).
- alignflow_sanity:     the good sentence against 3 scrambles of its own words ("The moo says cow."). The first
  word and the full stop stay in place and words keep their leading space, so every choice is the same
  multiset of tokens: a collapsed model whose next-token distribution ignores the context (one that only ever
  says "....") gives all choices the same likelihood and scores chance; any fluent model scores near 1.

Regenerate the committed data after changing quicktask: `python -m evaluation.lm_eval_tasks.alignflow_tasks`
(tests/evaluation/test_benchmarks.py checks the committed files equal what this module makes now).
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

from alignment.config import QuickTaskConfig
from alignment.instruct import quicktask

DATA_DIR = Path(__file__).resolve().parent / "data"
DATA_FILES = {
    "alignflow_animal_mc": "animal_mc.jsonl",
    "alignflow_animal_gen": "animal_gen.jsonl",
    "alignflow_sanity": "sanity.jsonl",
    "alignflow_general_mc": "general_mc.jsonl",  # general knowledge and arithmetic: general_knowledge.py makes it
    "alignflow_general_gen": "general_gen.jsonl",  # the same questions answered in free text: general_gen.py
}
NUM_CHOICES = 4
SEED = 1234


def heldout_prompts() -> list[quicktask.QuickPrompt]:
    """The quickstart's held-out prompts at the default split, in a fixed shuffled order (attributes mixed, so
    a `limit` still sees all three)."""
    fraction = QuickTaskConfig().heldout_fraction
    prompts = sorted((p for p in quicktask.all_prompts() if quicktask.is_heldout(p, fraction)),
                     key=lambda p: p.text)
    random.Random(SEED).shuffle(prompts)
    return prompts


def prompt_id(p: quicktask.QuickPrompt) -> str:
    return f"{p.animal}-{p.attribute}-{p.phrasing}"


def with_gold_at(gold: str, others: list[str], position: int) -> list[str]:
    return [*others[:position], gold, *others[position:]]


def mc_docs(prompts: list[quicktask.QuickPrompt]) -> list[dict[str, Any]]:
    """The good sentence and 3 wrong values of the same attribute in the same sentence form."""
    rng = random.Random(SEED + 1)
    docs = []
    for i, p in enumerate(prompts):
        values = sorted({row[quicktask.ATTRIBUTES.index(p.attribute)] for row in quicktask.ANIMALS.values()}
                        - {p.value})
        wrong = [quicktask.ANSWERS[p.attribute].format(a=p.animal, v=v) for v in rng.sample(values, NUM_CHOICES - 1)]
        label = i % NUM_CHOICES
        docs.append({"id": prompt_id(p), "question": p.text,
                     "choices": with_gold_at(quicktask.good_answer(p), wrong, label), "label": label})
    return docs


def gen_docs(prompts: list[quicktask.QuickPrompt]) -> list[dict[str, Any]]:
    return [{"id": prompt_id(p), "question": p.text, "answer": quicktask.good_answer(p)} for p in prompts]


def scrambles(sentence: str, n: int, rng: random.Random) -> list[str]:
    """`n` distinct reorderings of the words between the first word and the final full stop."""
    if not sentence.endswith("."):
        raise ValueError(f"expected a sentence ending with '.': {sentence!r}")
    head, *middle = sentence[:-1].split(" ")
    orders = sorted({" ".join([head, *perm]) + "." for perm in itertools.permutations(middle)} - {sentence})
    if len(orders) < n:
        raise ValueError(f"{sentence!r} has only {len(orders)} distinct scrambles, {n} wanted")
    return rng.sample(orders, n)


def sanity_docs(prompts: list[quicktask.QuickPrompt]) -> list[dict[str, Any]]:
    rng = random.Random(SEED + 2)
    docs = []
    for i, p in enumerate(prompts):
        good = quicktask.good_answer(p)
        label = i % NUM_CHOICES
        docs.append({"id": prompt_id(p), "question": p.text,
                     "choices": with_gold_at(good, scrambles(good, NUM_CHOICES - 1, rng), label), "label": label})
    return docs


def build_all() -> dict[str, list[dict[str, Any]]]:
    """{task name: documents}; deterministic."""
    prompts = heldout_prompts()
    return {"alignflow_animal_mc": mc_docs(prompts), "alignflow_animal_gen": gen_docs(prompts),
            "alignflow_sanity": sanity_docs(prompts)}


def to_jsonl(docs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(d, sort_keys=True) + "\n" for d in docs)


def write_all(data_dir: Path = DATA_DIR) -> dict[str, Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, docs in build_all().items():
        paths[task] = data_dir / DATA_FILES[task]
        paths[task].write_text(to_jsonl(docs), encoding="utf-8")
    return paths


def read_docs(data_file: str) -> list[dict[str, Any]]:
    with (DATA_DIR / data_file).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---- hooks named in the task YAMLs (`!function alignflow_tasks.<name>`, resolved beside the YAML) ----------


def load_docs(data_file: str, **_: Any) -> Any:
    """`custom_dataset` hook: the task's jsonl as an in-memory DatasetDict with one `test` split. lm-eval
    passes the task's `dataset_kwargs` and metadata as keywords; only `data_file` is used. The file is found
    beside this module, wherever the package is installed (a relative `data_files` would resolve against the
    current directory)."""
    import datasets

    return datasets.DatasetDict({"test": datasets.Dataset.from_list(read_docs(data_file))})


def process_gen(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    """exact_match: the answer is the good sentence; well_formed: it has the task's sentence form (right or
    wrong value; refusals and rambling are not)."""
    answer = results[0].strip()
    return {"exact_match": float(answer == doc["answer"]),
            "well_formed": float(quicktask.score_response(doc["question"], answer) >= 1.0)}


if __name__ == "__main__":
    for name, path in write_all().items():
        print(f"{name}: {path}")
