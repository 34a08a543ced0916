"""On-policy pairs (alignment/training/onpolicy.py), the batched generator (alignment/models/generation.py) and the stage that
joins them (alignment/stages.onpolicy_pairs) on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignment.config import PipelineConfig
from alignment.data import read_jsonl
from alignment.instruct.instructions import Instruction
from alignment.models.generation import ended_rows, generate, generated_lengths, sample_answers
from alignment.models.tiny import make_tiny_model
from alignment.stages import HELDOUT_PROMPTS, onpolicy_pairs, write_instruction_prompts
from alignment.training.onpolicy import (
    DEGENERATE,
    VerifierScorer,
    best_over_worst,
    distinct_prompts,
    make_pairs,
    score_answers,
    verifier_score,
)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


LOWER = Instruction("lowercase", None).text()
BULLETS2 = Instruction("bullets", 2).text()


# ---- pairing -------------------------------------------------------------------------------------------


def test_best_over_worst_takes_the_first_best_and_the_first_worst_whatever_their_length() -> None:
    """No bonus for brevity: among equal best scores the first sample is chosen, long or short."""
    answers = ["a long good answer", "short good", "bad one", "bad two"]
    assert best_over_worst(answers, [1.0, 1.0, 0.0, 0.0]) == (0, 2)
    assert best_over_worst(list(reversed(answers)), [0.0, 0.0, 1.0, 1.0]) == (2, 0)


def test_matching_lengths_pairs_the_closest_of_the_tied_best_and_worst() -> None:
    """Scores decide the preference; among ties, the pair whose word counts differ least (then sample order)."""
    answers = ["one two three", "one two three four five six", "x", "a b c d e f g", "p q r s t u v w x y"]
    scores = [1.0, 1.0, 0.0, 0.0, 0.0]
    assert best_over_worst(answers, scores) == (0, 2)  # the first of each: 3 words over 1
    assert best_over_worst(answers, scores, match_lengths=True) == (1, 3)  # 6 words over 7: the closest
    # a lone best answer is still chosen, however far its length from every worst one
    assert best_over_worst(["a", "b c d e f", "g h i j k l m"], [2.0, 0.0, 0.0], match_lengths=True) == (0, 1)
    # the cut-off answer is not choosable even when its length would match
    assert best_over_worst(answers, scores, finished=[True, False, True, True, True], match_lengths=True) == (0, 2)
    # the widest gap first: "WATER IT." (a case repair of the worst answer) is no rejected answer for "Water it."
    # itself, but the other best answer's pair keeps the worst score though its length matches less
    assert best_over_worst(["Water it.", "Keep it cool and dry.", "WATER IT.", "Give it light."],
                           [0.0, 2.0, 2.0, 1.0], match_lengths=True) == (1, 0)
    # equal differences: sample order
    assert best_over_worst(["a b", "c d", "e", "f"], [1.0, 1.0, 0.0, 0.0], match_lengths=True) == (0, 2)
    with pytest.raises(ValueError, match="3 answers but 2 scores"):
        best_over_worst(["a", "b", "c"], [1.0, 0.0], match_lengths=True)


def test_the_rejected_answer_differs_from_the_chosen_in_more_than_case_or_spacing() -> None:
    """A program-cased repair ('WATER IT.') chosen over its own original ('Water it.') would be refused by the
    data checks (identical_pair): the worst answer that differs in words is rejected instead."""
    answers = ["Water it.", "Keep it cool.", "WATER IT."]
    assert best_over_worst(answers, [0.0, 0.5, 2.0]) == (2, 1)
    assert best_over_worst(["Water it.", "WATER  IT."], [0.0, 2.0]) is None


def test_no_pair_when_every_answer_is_degenerate() -> None:
    assert best_over_worst(["x", "y"], [DEGENERATE, DEGENERATE]) is None


def test_no_pair_when_scores_are_within_the_gap_or_answers_equal() -> None:
    assert best_over_worst(["x", "y"], [0.5, 0.5]) is None
    assert best_over_worst(["x", "y"], [0.6, 0.5], min_gap=0.2) is None
    assert best_over_worst(["same", " same "], [1.0, 0.0]) is None
    assert best_over_worst(["only"], [1.0]) is None
    with pytest.raises(ValueError, match="2 answers but 1 scores"):
        best_over_worst(["a", "b"], [1.0])


def test_an_answer_cut_off_at_the_token_limit_is_never_chosen_but_may_be_rejected() -> None:
    """The chat template closes a chosen answer with the end of turn: a cut-off answer chosen would teach the
    model to stop mid-answer. Scores [2, 1, 0], the best cut off -> the second best is chosen; a cut-off
    answer is still the rejected one; only cut-off answers -> no pair."""
    answers = ["To keep basil fresh, put the stems in", "Put the stems in water.", "Basil."]
    assert best_over_worst(answers, [2.0, 1.0, 0.0], finished=[False, True, True]) == (1, 2)
    assert best_over_worst(answers, [0.0, 1.0, 2.0], finished=[False, True, False]) == (1, 0)
    assert best_over_worst(answers, [2.0, 1.0, 0.0], finished=[False, False, False]) is None
    assert best_over_worst(answers, [2.0, 1.0, 0.0], finished=[True, True, True]) == (0, 2)
    with pytest.raises(ValueError, match="3 answers but 3 scores and 2 finished flags"):
        best_over_worst(answers, [2.0, 1.0, 0.0], finished=[True, True])


def test_make_pairs_counts_cut_off_answers_and_the_prompts_they_drop() -> None:
    """Prompt 1: the passing answer is cut off, the other two fail alike -> dropped_unfinished (without the
    flags it would pair). Prompt 2: the passing answer ended -> a pair over the cut-off failing one.
    2 of 5 samples cut off."""
    prompts = [user(f"Are you there? {LOWER}"), user(f"Say yes. {LOWER}")]
    answers = [["ok i am here and", "OK", "NO"], ["yes", "YES I AM HERE AND"]]
    scores = [VerifierScorer().score_many([p] * len(a), a) for p, a in zip(prompts, answers, strict=True)]
    finished = [[False, True, True], [True, False]]
    rows, samples, report = make_pairs(prompts, answers, scores, finished=finished)
    assert (report.pairs, report.dropped_unfinished, report.dropped_no_gap, report.unfinished) == (1, 1, 0, 2)
    assert rows[0]["chosen"][0]["content"] == "yes" and rows[0]["rejected"][0]["content"] == "YES I AM HERE AND"
    assert [s["finished"] for s in samples] == [False, True, True, True, False]
    assert report.metrics("train")["onpolicy/train/unfinished_rate"] == pytest.approx(2 / 5)
    assert make_pairs(prompts, answers, scores)[2].pairs == 2  # unset: every answer counts as ended
    allowed = make_pairs(prompts, answers, scores, finished=finished, choose_unfinished=True)
    assert (allowed[2].pairs, allowed[2].unfinished, allowed[2].dropped_unfinished) == (2, 2, 0)
    assert [s["finished"] for s in allowed[1]] == [False, True, True, True, False]


def test_a_prompt_whose_cut_off_best_answer_is_wrong_counts_as_wrong_chosen() -> None:
    """'What is 7 times 8?': the best-scored answer is cut off but wrong (54), the rest score alike: without the
    cut-off rule the pair would still be refused for its wrong chosen answer, so that is the reason counted."""
    prompts = [user("What is 7 times 8?")]
    answers = [["It is 54 and", "I like cats.", "Dogs are nice."]]
    scores = [[2.0, 0.0, 0.0]]
    report = make_pairs(prompts, answers, scores, finished=[[False, True, True]], require_correct_chosen=True)[2]
    assert (report.pairs, report.dropped_wrong_chosen, report.dropped_unfinished) == (0, 1, 0)


def test_verifier_score_is_pass_plus_half_the_partial_credit() -> None:
    """lowercase: 'hello world' passes (1 + 0.5 * 1.0 = 1.5); 'Hello World' has 8 of 10 letters lowercase
    (degree 0.8, fails): 0 + 0.5 * 0.8 = 0.4."""
    prompt = f"Say hello. {LOWER}"
    assert verifier_score(prompt, "hello world") == pytest.approx(1.5)
    assert verifier_score(prompt, "Hello World") == pytest.approx(0.4)
    assert VerifierScorer().score_many([user(prompt)] * 2, ["hello world", "Hello World"]) == pytest.approx([1.5, 0.4])


def test_make_pairs_counts_pairs_drops_and_pass_rates_per_kind() -> None:
    """Prompt 1 (lowercase): 'ok fine' passes, 'OK' fails -> one pair. Prompt 2 (two bullets): both answers
    have 2 bullets, both pass with the same score -> dropped. Pass rate: lowercase 1/2, bullets 2/2."""
    prompts = [user(f"Are you there? {LOWER}"), user(f"Name two fruits. {BULLETS2}")]
    answers = [["ok fine", "OK"], ["* apple\n* pear", "* fig\n* kiwi"]]
    scores = [VerifierScorer().score_many([p] * len(a), a) for p, a in zip(prompts, answers, strict=True)]
    rows, samples, report = make_pairs(prompts, answers, scores)
    assert len(rows) == 1 and report.pairs == 1 and report.dropped_no_gap == 1 and report.samples == 4
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "ok fine"}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "OK"}]
    metrics = report.metrics("train")
    assert metrics["onpolicy/train/pass_rate/lowercase"] == 0.5
    assert metrics["onpolicy/train/pass_rate/bullets"] == 1.0
    assert metrics["onpolicy/train/pass_rate"] == 0.75
    assert [s["passed"] for s in samples] == [True, False, True, True]
    # no word limit in either prompt: every sample's words count (a bullet's marker is not a word)
    assert report.free_words == [2, 1, 2, 2] and metrics["onpolicy/train/median_words"] == 2.0
    assert report.to_dict()["median_words"] == 2.0
    limited = make_pairs([user("Name a fruit. Answer in at most 3 words.")], [["apple", "a pear"]], [[1.0, 0.0]])[2]
    assert limited.free_words == [] and limited.median_words is None  # a word limit: not a length measure


# ---- generation ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ["What sound does a cow make?", "The cow says moo.", "Answer in lowercase letters only."] * 10
    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", texts, vocab_size=320, hidden_size=64,
                           num_layers=2, num_heads=4, intermediate_size=128, max_position_embeddings=128, seed=0)
    return path, AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_batched_greedy_equals_one_prompt_at_a_time_in_the_prompts_order(tiny: tuple) -> None:
    _, model, tok = tiny
    prompts = [user("What sound does a cow make?"), user("moo"), user("The cow says moo. What sound?")]
    batched = generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single and all(len(a) == 1 for a in batched)


def test_sampling_is_seeded_and_gives_num_samples_per_prompt(tiny: tuple) -> None:
    _, model, tok = tiny
    prompts = [user("What sound does a cow make?"), user("moo")]
    kwargs = {"max_new_tokens": 5, "batch_size": 4, "num_samples": 3, "do_sample": True, "temperature": 1.5}
    first, again = generate(model, tok, prompts, seed=7, **kwargs), generate(model, tok, prompts, seed=7, **kwargs)
    assert first == again and [len(a) for a in first] == [3, 3]
    assert generate(model, tok, prompts, seed=8, **kwargs) != first


def test_generated_lengths_count_up_to_the_first_eos() -> None:
    """Rows: [5, 2(eos), 0, 0] -> 2; [5, 6, 7, 8] (no eos) -> 4; [2, 2, 2, 2] -> 1."""
    new = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert generated_lengths(new, eos_id=2, pad_id=0).tolist() == [2, 4, 1]


def test_ended_rows_are_the_rows_with_an_eos() -> None:
    """[5, 2(eos), 0, 0] ended; [5, 6, 7, 8] cut off; [2, 2, 2, 2] (EOS then EOS as padding) ended."""
    new = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 2, 2, 2]])
    assert ended_rows(new, 2).tolist() == [True, False, True]
    assert ended_rows(new, None).tolist() == [True, True, True]
    assert ended_rows(new, [7, 9]).tolist() == [False, True, False]  # another turn-end id: row 2 ended at 7


def test_turn_end_ids_join_the_tokenizers_eos_and_the_generation_configs() -> None:
    from types import SimpleNamespace

    from alignment.models.generation import turn_end_ids

    tok = SimpleNamespace(eos_token_id=2)
    assert turn_end_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[2, 107])), tok) == [2, 107]
    assert turn_end_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=5)), tok) == [2, 5]
    assert turn_end_ids(SimpleNamespace(), tok) == [2]


def test_an_answer_is_finished_exactly_when_model_generate_emits_eos(tiny: tuple) -> None:
    """Each prompt alone through `model.generate` (4 new tokens): finished == EOS among its new tokens."""
    from alignment.data.tokenization import encode_texts, prompt_for_generation

    _, model, tok = tiny
    prompts = [user("What sound does a cow make?"), user("moo"), user("Answer in lowercase letters only.")]
    answers = sample_answers(model, tok, prompts, max_new_tokens=4, batch_size=3)
    assert [[a.text for a in row] for row in answers] == generate(model, tok, prompts, max_new_tokens=4, batch_size=3)
    for prompt, (answer,) in zip(prompts, answers, strict=True):
        ids = torch.tensor(encode_texts(tok, [prompt_for_generation(tok, prompt)]))
        new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)[0, ids.shape[1]:]
        assert answer.finished == (tok.eos_token_id in new.tolist())


# ---- the stage -----------------------------------------------------------------------------------------


def test_onpolicy_stage_writes_prepared_pairs_and_keeps_every_heldout_prompt(tiny: tuple, tmp_path: Path) -> None:
    from alignment.models.loading import fingerprint_model
    from alignment.records import ModelRef

    path, _, _ = tiny
    cfg = PipelineConfig.model_validate({
        "data": {"source": "instructions", "instructions": {"max_train_prompts": 6, "max_heldout_prompts": 4},
                 "max_prompt_tokens": 96, "max_response_tokens": 16},
        "sft": {"enabled": False},
        # the tiny model rarely ends its turn within 12 tokens: its cut-off answers may be chosen here
        "onpolicy": {"enabled": True, "samples_per_prompt": 4, "max_new_tokens": 12, "temperature": 2.0,
                     "choose_unfinished": True}})
    prompts = write_instruction_prompts(cfg, tmp_path / "data")
    assert prompts.counts == {"train": 6, "heldout": 4}
    model = ModelRef(path=str(path), fingerprint=fingerprint_model(str(path)))
    class Length:  # a gap between almost any two samples, so every prompt pairs whatever the tiny model says
        name = "length"

        def score_many(self, prompts, responses):
            return [float(len(r)) for r in responses]

    prepared, metrics = onpolicy_pairs(cfg, prompts, model, Length(), tmp_path / "onpolicy")
    train = read_jsonl(prepared.path("train"))
    assert len(train) == metrics["onpolicy/train/pairs"] >= 1
    assert (metrics["onpolicy/train/pairs"] + metrics["onpolicy/train/dropped_no_gap"]
            + metrics["onpolicy/train/dropped_wrong_chosen"] + metrics["onpolicy/train/dropped_unfinished"]) == 6
    assert all(r["chosen"] != r["rejected"] for r in train)
    assert len(read_jsonl(Path(prepared.dir) / HELDOUT_PROMPTS)) == 4  # paired or not
    assert metrics["onpolicy/tokens_per_sec"] > 0 and metrics["onpolicy/sequences"] == 40
    report = json.loads((Path(prepared.dir) / "report.json").read_text())
    assert report["onpolicy"]["scorer"] == "length" and report["counts"]["train"] == len(train)
    samples = read_jsonl(tmp_path / "onpolicy" / "samples-train.jsonl")
    assert len(samples) == 24
    assert {"prompt", "answer", "score", "passed", "correct", "flags", "finished", "repaired"} <= set(samples[0])
    # cut-off answers may be chosen here (choose_unfinished), and are still recorded and counted as cut off
    assert metrics["onpolicy/train/unfinished_rate"] == sum(not s["finished"] for s in samples) / 24
    assert metrics["onpolicy/train/dropped_unfinished"] == 0
    assert 0.0 <= metrics["onpolicy/train/degenerate_rate"] <= 1.0


def test_a_stage_whose_answers_are_all_cut_off_names_max_new_tokens(tiny: tuple, tmp_path: Path) -> None:
    from alignment.models.loading import fingerprint_model
    from alignment.records import ModelRef

    path, _, _ = tiny
    cfg = PipelineConfig.model_validate({
        "data": {"source": "instructions", "instructions": {"max_train_prompts": 3, "max_heldout_prompts": 2}},
        "sft": {"enabled": False},
        "onpolicy": {"enabled": True, "samples_per_prompt": 2, "max_new_tokens": 1, "temperature": 2.0}})
    prompts = write_instruction_prompts(cfg, tmp_path / "data")
    model = ModelRef(path=str(path), fingerprint=fingerprint_model(str(path)))

    class Length:
        name = "length"

        def score_many(self, prompts, responses):
            return [float(len(r)) + 0.5 * k for k, r in enumerate(responses)]

    with pytest.raises(ValueError, match=r"[1-3] had only answers cut off at onpolicy.max_new_tokens=1 to choose"):
        onpolicy_pairs(cfg, prompts, model, Length(), tmp_path / "onpolicy")


def test_answers_are_scored_in_one_call_and_regrouped_per_prompt() -> None:
    class Length:
        name, calls = "length", []

        def score_many(self, prompts, responses):
            self.calls.append((len(prompts), len(responses)))
            return [float(len(r)) for r in responses]

    p1, p2 = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    scorer = Length()
    assert score_answers(scorer, [p1, p2], [["x", "yy", "zzz"], ["wwww"]]) == [[1.0, 2.0, 3.0], [4.0]]
    assert scorer.calls == [(4, 4)]


def test_distinct_prompts_keep_file_order_once_each(tmp_path: Path) -> None:
    p1, p2 = [{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (p2, p1, p2, p1)))
    assert distinct_prompts(path) == [p2, p1]


# ---- the composed scorer: scores that cannot be met without answering --------------------------------------

HOWTO = "How do I keep basil fresh?"
ANSWER = "Put the stems in a jar of water and keep it on the counter away from the sun"


@pytest.mark.parametrize(("instruction", "ranked"), [
    # the reward-hacked champion's answers (issue 27) against real ones; each list from best to worst, the
    # degenerate answers last (they score DEGENERATE, so their order among themselves is not asserted)
    (Instruction("end_phrase", "Good luck!"), [f"{ANSWER}. Good luck!", f"{ANSWER}.", "Good luck!"]),
    (Instruction("no_commas"), [f"{ANSWER}.", f"{ANSWER}, or wrap them in a damp towel.",
                                "How do I keep basil fresh?", "I am not so sure."]),
    (Instruction("word_limit", 20), [f"{ANSWER}.", f"{ANSWER}. Change the water every two days so the stems "
                                                   f"stay healthy.", "Zorbex."]),
    (Instruction("bullets", 2), ["* Put the stems in a jar of water.\n* Keep it on the counter out of the sun.",
                                 f"{ANSWER}.", '- "S"']),
])
def test_degenerate_answers_rank_last_and_following_the_instruction_ranks_first(instruction, ranked) -> None:
    """Default composition (correctness, then the verifier): on an everyday question every non-degenerate
    answer scores 4 (correctness does not apply) + verifier / 1.5; the phrase alone, the question echoed, a
    five-word non-answer, one invented word and `- "S"` are degenerate (too short or echo) and score -1."""
    from alignment.config import JudgeConfig
    from evaluation.judges import make_scorer

    scorer = make_scorer(["correctness", "verifier"], JudgeConfig())
    prompt = user(f"{HOWTO} {instruction.text()}")
    scores = scorer.score_many([prompt] * len(ranked), ranked)
    answered = [s for s in scores if s != DEGENERATE]
    assert answered == sorted(answered, reverse=True) and len(set(answered)) == len(answered)
    assert scores[:len(answered)] == answered and scores[len(answered):] == [DEGENERATE] * (len(ranked) - len(answered))
    assert len(answered) < len(ranked)
    picked = best_over_worst(ranked, scores)
    assert picked == (0, len(answered))  # the best answer over the first degenerate one


def test_a_right_answer_outranks_a_compliant_wrong_one() -> None:
    """'What is 7 times 8? Answer in at most 10 words.': '56.' right and passing = 4 + 1; 'It is 56 because
    seven eights make fifty six and that is that.' right, 13 words (degree 10/13) = 4 + 0.5 * 10/13 / 1.5;
    'It is 57.' wrong, passing = 1; 'Okay.' wrong, passing = 1 (a single word may answer a checkable
    question, so it is not degenerate, but it is not right either)."""
    from alignment.config import JudgeConfig
    from evaluation.judges import make_scorer

    prompt = user(f"What is 7 times 8? {Instruction('word_limit', 10).text()}")
    answers = ["56.", "It is 56 because seven eights make fifty six and that is that.", "It is 57.", "Okay."]
    scores = make_scorer(["correctness", "verifier"], JudgeConfig()).score_many([prompt] * 4, answers)
    assert scores == pytest.approx([5.0, 4 + 0.5 * (10 / 13) / 1.5, 1.0, 1.0])


def test_a_checkable_question_pairs_only_when_the_chosen_answer_is_right() -> None:
    """'What is 7 times 8?': the best of ['It is 57.', 'Okay.'] is wrong: no pair with require_correct_chosen
    (counted), a pair without it; with a right answer among them the pair is made."""
    prompt = user(f"What is 7 times 8? {Instruction('word_limit', 10).text()}")
    wrong = [["It is 57.", "no no no no no no"]]
    rows, _, report = make_pairs([prompt], wrong, [[1.0, -1.0]], require_correct_chosen=True)
    assert rows == [] and report.dropped_wrong_chosen == 1 and report.metrics("train")[
        "onpolicy/train/dropped_wrong_chosen"] == 1.0
    assert len(make_pairs([prompt], wrong, [[1.0, -1.0]])[0]) == 1
    rows, _, report = make_pairs([prompt], [["It is 56.", "It is 57."]], [[5.0, 1.0]], require_correct_chosen=True)
    assert len(rows) == 1 and report.dropped_wrong_chosen == 0


def test_case_repairs_rewrite_each_sample_in_the_asked_case() -> None:
    from alignment.training.onpolicy import case_repairs

    lower = f"{HOWTO} {Instruction('lowercase').text()}"
    assert case_repairs(lower, ["Put It In Water.", "already lower"]) == ["put it in water."]
    assert case_repairs(f"{HOWTO} {Instruction('uppercase').text()}", ["Water."]) == ["WATER."]
    assert case_repairs(f"{HOWTO} {Instruction('no_commas').text()}", ["Water."]) == []
