"""Train/eval contamination by word n-gram overlap, on hand-made texts."""

from __future__ import annotations

import pytest

from evaluation.contamination import NgramIndex, contamination, ngrams, words

TRAIN = ["What sound does a cow make?", "Where does the owl live? Answer in one sentence please."]


def test_words_lowercase_and_drop_punctuation() -> None:
    assert words("What's the COW's home?_x") == ["what", "s", "the", "cow", "s", "home", "x"]


def test_ngrams() -> None:
    assert ngrams(["a", "b", "c"], 2) == {("a", "b"), ("b", "c")}
    assert ngrams(["a"], 2) == set()


def test_shared_ngram_contaminates() -> None:
    index = NgramIndex(TRAIN, n=4)
    assert index.contaminated("Tell me: where does the owl live?")  # "where does the owl"
    assert not index.contaminated("Where does the cat live?")  # no 4-gram in common
    assert not index.contaminated("")


def test_short_items_count_when_wholly_inside_a_training_prompt() -> None:
    index = NgramIndex(TRAIN, n=8)
    assert index.contaminated("what SOUND does a cow make")  # 6 words < 8, all found contiguously
    assert not index.contaminated("what sound does a dog make")
    assert not index.contaminated("cow sound")  # the words occur, but not contiguously


def test_share_per_eval_set() -> None:
    """3 of 4 items hit -> 0.75; a clean set -> 0.0; an empty set -> 0.0."""
    sets = {"copied": ["What sound does a cow make?", "where does the owl live", "a cow make", "zebra"],
            "clean": ["What colour is a fox?"], "empty": []}
    assert contamination(TRAIN, sets, n=5) == pytest.approx({"copied": 0.75, "clean": 0.0, "empty": 0.0})


def test_n_must_be_positive() -> None:
    with pytest.raises(ValueError):
        NgramIndex(TRAIN, n=0)


def test_instruction_templates_shared_by_every_split_are_not_contamination(tmp_path) -> None:
    """Held-out questions never seen in training, with the same instruction sentences as training prompts:
    nothing is contaminated; a held-out question that is also a training question is."""
    import json

    from alignment.config import PipelineConfig
    from alignment.instruct.instructions import Instruction
    from alignment.records import PreparedData
    from evaluation.stages import contamination_report

    bullets = Instruction("bullets", 3).text()
    train = [f"What is a good way to store fresh ginger at home? {bullets}",
             f"How often should I water a cactus in summer? {bullets}"]
    held = [f"Which shoes are best for a long walk in the rain? {bullets}", train[1]]
    for name, prompts in (("train", train), ("heldout", held)):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": [{"role": "user", "content": p}]}) + "\n" for p in prompts))
    prepared = PreparedData(dir=str(tmp_path), fingerprint="x", counts={}, report={})
    cfg = PipelineConfig.model_validate({"eval": {"benchmarks": {"enabled": False}}})
    assert contamination_report(cfg, prepared)["heldout"] == 0.5  # the repeated question, not the template
