"""The generative benchmark alignflow_general_gen (evaluation/lm_eval_tasks/general_gen.py): the committed data
equals the generator's output and holds the multiple-choice task's questions with their aliases; the scoring
function on hand-checked answers; the YAML and lm-eval's loading of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evaluation.lm_eval_tasks import TASK_DIR, general_gen, general_knowledge
from evaluation.lm_eval_tasks.alignflow_tasks import DATA_DIR, read_docs, to_jsonl
from evaluation.lm_eval_tasks.general_gen import (
    DATA_FILE,
    build_docs,
    normalise,
    number_words,
    process_results,
    score,
)


def docs() -> list[dict]:
    return read_docs(DATA_FILE)


def by_id() -> dict[str, dict]:
    return {d["id"]: d for d in docs()}


# ---- data ------------------------------------------------------------------------------------------------------


def test_committed_data_equals_the_generator_output() -> None:
    """Regenerate with `python -m evaluation.lm_eval_tasks.general_gen` when this fails."""
    assert (DATA_DIR / DATA_FILE).read_text(encoding="utf-8") == to_jsonl(build_docs())
    assert build_docs() == build_docs()


def test_write_makes_the_same_file(tmp_path: Path) -> None:
    assert general_gen.write(tmp_path).read_bytes() == (DATA_DIR / DATA_FILE).read_bytes()


def test_same_questions_and_order_as_the_multiple_choice_task() -> None:
    mc = general_knowledge.build_docs()
    assert [(d["id"], d["question"]) for d in docs()] == [(d["id"], d["question"]) for d in mc]
    assert [d["answer"] for d in docs()] == [d["choices"][d["label"]] for d in mc]
    for d in docs():
        assert set(d) == {"id", "question", "answer", "aliases"}
        assert d["aliases"][0] == d["answer"] and len(set(d["aliases"])) == len(d["aliases"])


def test_aliases_written_by_hand() -> None:
    docs_by_id = by_id()
    assert docs_by_id["add-4-8"]["aliases"] == ["12", "twelve"]
    assert docs_by_id["fact-months-in-year"]["aliases"] == ["Twelve", "12"]
    assert docs_by_id["fact-hours-in-day"]["aliases"] == ["Twenty-four", "twenty four", "24"]
    assert docs_by_id["fact-water-boils"]["aliases"] == ["100 degrees", "one hundred degrees", "100"]
    assert docs_by_id["fact-water-formula"]["aliases"] == ["H2O"]
    assert docs_by_id["capital-united-states"]["aliases"] == ["Washington, D.C.", "Washington", "Washington DC"]
    assert docs_by_id["fact-nearest-star"]["aliases"][:2] == ["The Sun", "Sun"]
    assert docs_by_id["fact-fish-home"]["aliases"][:2] == ["In water", "water"]
    assert docs_by_id["fact-largest-mammal"]["aliases"] == ["Blue whale"]


def test_every_addition_accepts_its_sum_in_digits_and_words() -> None:
    for d in docs():
        if d["id"].startswith("add-"):
            a, b = map(int, d["id"].split("-")[1:])
            assert d["aliases"] == [str(a + b), number_words(a + b)]


def test_no_question_echoed_back_passes() -> None:
    """The limitation of `contains`: an echoed question would pass if it held its own answer. None does."""
    for d in docs():
        assert score(d["question"], d["aliases"])["contains"] == 0.0, d


def test_every_alias_passes_its_own_document() -> None:
    for d in docs():
        for alias in d["aliases"]:
            assert score(alias, d["aliases"]) == {"contains": 1.0, "exact_match": 1.0, "answered": 1.0}, (d, alias)


# ---- scoring ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "normal"), [
    ("The capital of France is Paris.", "the capital of france is paris"),
    ("Twenty-four", "24"), ("twenty four hours", "24 hours"), ("one hundred degrees", "100 degrees"),
    ("a hundred", "a 100"), ("Washington, D.C.", "washington dc"), ("Bogotá", "bogota"),
    ("I don't know.", "i dont know"), ("7 + 5 = 12", "7 5 12"), ("H2O", "h 2 o"), ("100°C", "100 c"), ("...", ""),
])
def test_normalise(text: str, normal: str) -> None:
    assert normalise(text) == normal


@pytest.mark.parametrize(("n", "words"), [(0, "zero"), (12, "twelve"), (24, "twenty four"), (60, "sixty"),
                                          (100, "one hundred"), (105, "one hundred five")])
def test_number_words(n: int, words: str) -> None:
    assert number_words(n) == words
    assert normalise(words) == str(n)


PARIS = ["Paris"]
TWELVE = ["12", "twelve"]


@pytest.mark.parametrize(("answer", "aliases", "contains", "exact", "answered"), [
    ("The capital of France is Paris.", PARIS, 1, 0, 1),
    ("Paris", PARIS, 1, 1, 1),
    ("paris.", PARIS, 1, 1, 1),  # case and the trailing full stop do not count
    ("Rome", ["Rome"], 1, 1, 1),
    ("Paris", ["Rome"], 0, 0, 1),  # wrong, but an answer
    ("The capital of Italy is Paris.", ["Rome"], 0, 0, 1),
    ("Parisian food is great.", PARIS, 0, 0, 1),  # whole words only
    ("12", TWELVE, 1, 1, 1), ("twelve", TWELVE, 1, 1, 1), ("Twelve.", TWELVE, 1, 1, 1),
    ("7 + 5 = 12", TWELVE, 1, 0, 1), ("7 + 5 equals twelve.", TWELVE, 1, 0, 1),
    ("112", TWELVE, 0, 0, 1), ("13", TWELVE, 0, 0, 1),
    ("There are 24 hours in a day.", ["Twenty-four", "twenty four", "24"], 1, 0, 1),
    ("twenty-four", ["Twenty-four", "twenty four", "24"], 1, 1, 1),
    ("A day has twenty four hours.", ["Twenty-four"], 1, 0, 1),
    ("Twenty", ["Twenty-four", "twenty four", "24"], 0, 0, 1),
    ("The capital of the United States is Washington, D.C.", ["Washington, D.C.", "Washington", "Washington DC"],
     1, 0, 1),
    ("Washington DC", ["Washington, D.C.", "Washington", "Washington DC"], 1, 1, 1),
    ("The Sun is the closest star to Earth.", ["The Sun", "Sun"], 1, 0, 1),
    ("Sun", ["The Sun", "Sun"], 1, 1, 1),
    ("Fish live in water.", ["In water", "water"], 1, 0, 1),
    ("The blue whale.", ["Blue whale"], 1, 0, 1),
    ("The whale.", ["Blue whale"], 0, 0, 1),
    ("The capital of Colombia is Bogotá.", ["Bogota"], 1, 0, 1),  # accents dropped
    ("Water boils at 100°C.", ["100 degrees", "one hundred degrees", "100"], 1, 0, 1),
    ("Water boils at 100C.", ["100 degrees", "one hundred degrees", "100"], 1, 0, 1),
    ("H₂O", ["H2O"], 1, 1, 1), ("CO2", ["H2O"], 0, 0, 1),
    ("", PARIS, 0, 0, 0), ("   ", PARIS, 0, 0, 0), ("....", PARIS, 0, 0, 0),
    ("I don't know.", PARIS, 0, 0, 0), ("I'm not sure.", PARIS, 0, 0, 0),
    ("I'm sorry, but I cannot answer that.", PARIS, 0, 0, 0), ("Sorry.", PARIS, 0, 0, 0),
    ("I don't know, maybe Paris?", PARIS, 1, 0, 0),  # a refusal that still names it: contains, not answered
    ("What is the capital of France?", PARIS, 0, 0, 1),  # the question echoed back
    ("Paris or Rome", PARIS, 1, 0, 1),  # the limitation of `contains`: listing candidates passes
])
def test_score_hand_checked(answer: str, aliases: list[str], contains: int, exact: int, answered: int) -> None:
    assert score(answer, aliases) == {"contains": contains, "exact_match": exact, "answered": answered}


def test_process_results_scores_the_first_result_against_the_doc() -> None:
    doc = by_id()["capital-france"]
    assert process_results(doc, [" The capital of France is Paris."]) == {
        "contains": 1.0, "exact_match": 0.0, "answered": 1.0}
    assert process_results(doc, [""]) == {"contains": 0.0, "exact_match": 0.0, "answered": 0.0}


# ---- the task --------------------------------------------------------------------------------------------------


def test_yaml_points_at_the_data_and_the_hook() -> None:
    text = (TASK_DIR / "alignflow_general_gen.yaml").read_text(encoding="utf-8").replace("!function ", "")
    config = yaml.safe_load(text)
    assert config["task"] == general_gen.TASK
    assert config["dataset_kwargs"] == {"data_file": DATA_FILE}
    assert config["output_type"] == "generate_until"
    assert config["process_results"] == "general_gen.process_results"
    assert config["generation_kwargs"] == {"until": ["<|im_end|>", "\n\n"], "do_sample": False, "max_gen_toks": 32}
    assert [m["metric"] for m in config["metric_list"]] == ["contains", "exact_match", "answered"]


def test_lm_eval_loads_the_task_and_scores_with_the_hook() -> None:
    from lm_eval.tasks import TaskManager

    from evaluation.benchmarks import quiet_lm_eval

    with quiet_lm_eval():
        task = TaskManager(include_path=str(TASK_DIR), include_defaults=False).load(
            [general_gen.TASK])["tasks"][general_gen.TASK]
    loaded = list(task.test_docs())
    assert loaded == docs()
    assert task.OUTPUT_TYPE == "generate_until"
    assert task.doc_to_text(loaded[0]) == loaded[0]["question"]
    assert task.doc_to_target(loaded[0]) == loaded[0]["answer"]
    doc = by_id()["fact-spider-legs"]
    assert task.process_results(doc, ["A spider has 8 legs."]) == {"contains": 1.0, "exact_match": 0.0,
                                                                   "answered": 1.0}
