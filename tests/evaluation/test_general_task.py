"""The 'alignment tax' benchmark alignflow_general_mc (evaluation/lm_eval_tasks/general_knowledge.py): the
committed data equals the generator's output, every document is a well-formed 4-way question with balanced gold
positions, the answers are right, and no question is taught by the instruction-following task."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml

from alignment.instruct import instructions, quicktask
from evaluation.contamination import contamination
from evaluation.lm_eval_tasks import TASK_DIR, general_knowledge
from evaluation.lm_eval_tasks.alignflow_tasks import DATA_DIR, read_docs, to_jsonl
from evaluation.lm_eval_tasks.general_knowledge import DATA_FILE, build_docs


def docs() -> list[dict]:
    return read_docs(DATA_FILE)


def test_committed_data_equals_the_generator_output() -> None:
    """Regenerate with `python -m evaluation.lm_eval_tasks.general_knowledge` when this fails."""
    assert (DATA_DIR / DATA_FILE).read_text(encoding="utf-8") == to_jsonl(build_docs())
    assert build_docs() == build_docs()


def test_write_makes_the_same_file(tmp_path: Path) -> None:
    assert general_knowledge.write(tmp_path).read_bytes() == (DATA_DIR / DATA_FILE).read_bytes()


def test_sizes_per_kind() -> None:
    kinds = Counter(d["id"].split("-")[0] for d in docs())
    assert kinds == {"capital": 60, "add": 40, "fact": 44}


def test_every_doc_has_four_distinct_choices_and_a_valid_label() -> None:
    ids = [d["id"] for d in docs()]
    assert len(set(ids)) == len(ids)
    assert len({d["question"] for d in docs()}) == len(ids)
    for d in docs():
        assert set(d) == {"id", "question", "choices", "label"}
        assert len(d["choices"]) == 4 and len(set(d["choices"])) == 4, d
        assert all(isinstance(c, str) and c.strip() == c and 0 < len(c) <= 24 for c in d["choices"]), d
        assert type(d["label"]) is int and 0 <= d["label"] < 4


def test_gold_positions_cycle_so_chance_is_a_quarter() -> None:
    labels = [d["label"] for d in docs()]
    assert labels[:8] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert Counter(labels) == dict.fromkeys(range(4), len(labels) // 4)


def test_gold_answers_are_right() -> None:
    """Spot checks written by hand, and every addition recomputed."""
    gold = {d["id"]: d["choices"][d["label"]] for d in docs()}
    assert gold["capital-france"] == "Paris"
    assert gold["capital-united-states"] == "Washington, D.C."
    assert gold["fact-spider-legs"] == "Eight"
    assert gold["fact-our-planet"] == "Earth"
    for d in docs():
        if d["id"].startswith("add-"):
            a, b = map(int, d["id"].split("-")[1:])
            assert d["question"] == f"What is {a} + {b}?" and gold[d["id"]] == str(a + b)
            assert all(int(c) > 0 and abs(int(c) - (a + b)) in (1, 2, 10) for c in d["choices"] if c != gold[d["id"]])
        if d["id"].startswith("capital-"):
            assert all(c in general_knowledge.CAPITALS.values() for c in d["choices"])


def test_no_question_overlaps_the_instruction_task() -> None:
    """Not one question shares an 8-word n-gram (or, when shorter, its whole word sequence) with any prompt the
    instruction task can make: every question with every instruction from the pools."""
    prompts = [f"{q.text} {ins.text()}" for q in instructions.QUESTIONS for ins in all_instructions(q)]
    questions = [d["question"] for d in docs()]
    assert not {q.text for q in instructions.QUESTIONS} & set(questions)
    assert contamination(prompts, {"general": questions}, 8) == {"general": 0.0}


def test_no_question_overlaps_the_quickstart_prompts() -> None:
    animal_prompts = [p.text for p in quicktask.all_prompts()]
    assert contamination(animal_prompts, {"general": [d["question"] for d in docs()]}, 8) == {"general": 0.0}


def all_instructions(q: instructions.Question) -> list[instructions.Instruction]:
    pools = {"word_limit": instructions.WORD_LIMITS, "keyword": q.keywords, "first_word": instructions.FIRST_WORDS,
             "end_phrase": instructions.END_PHRASES, "bullets": instructions.BULLET_COUNTS}
    return [instructions.Instruction(kind, arg) for kind in instructions.KINDS for arg in pools.get(kind, [None])]


def test_yaml_points_at_the_data() -> None:
    text = (TASK_DIR / "alignflow_general_mc.yaml").read_text(encoding="utf-8").replace("!function ", "")
    config = yaml.safe_load(text)
    assert config["task"] == general_knowledge.TASK
    assert config["dataset_kwargs"] == {"data_file": DATA_FILE}
    assert config["output_type"] == "multiple_choice"
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm"]


def test_lm_eval_loads_the_task() -> None:
    from lm_eval.tasks import TaskManager

    from evaluation.benchmarks import quiet_lm_eval

    with quiet_lm_eval():
        task = TaskManager(include_path=str(TASK_DIR), include_defaults=False).load(
            [general_knowledge.TASK])["tasks"][general_knowledge.TASK]
    loaded = list(task.test_docs())
    assert loaded == docs()
    assert task.OUTPUT_TYPE == "multiple_choice"
    assert task.doc_to_text(loaded[0]) == loaded[0]["question"]
    assert task.doc_to_choice(loaded[0]) == loaded[0]["choices"]
    assert task.doc_to_target(loaded[0]) == loaded[0]["label"]
