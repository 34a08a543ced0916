"""lm-eval benchmarks (evaluation/benchmarks.py, evaluation/lm_eval_tasks/): metric naming and deltas on hand-made
lm-eval-shaped dicts, the committed task data against its generator, task loading from another directory and
another install location, task-name routing, and (slow) real runs on tiny Llamas with the network blocked: a
random-init and a collapsed model score chance on alignflow_sanity, a briefly SFT-trained one near 1."""

from __future__ import annotations

import json
import math
import random
import shutil
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch

from alignment.config import BenchmarkConfig, QuickTaskConfig
from alignment.data.tokenization import encode_sft
from alignment.instruct import quicktask
from alignment.models.tiny import build_model, train_tokenizer
from alignment.training.logprobs import collate_sft
from alignment.training.objectives import sft_objective
from evaluation import benchmarks
from evaluation.benchmarks import (
    LOCAL_TASKS,
    BenchmarkError,
    benchmark_deltas,
    benchmark_metrics,
    eval_set_texts,
    json_safe,
    main_metrics,
    metric_name,
    run_benchmarks,
)
from evaluation.lm_eval_tasks import TASK_DIR
from evaluation.lm_eval_tasks.alignflow_tasks import DATA_DIR, DATA_FILES, build_all, read_docs, to_jsonl

# raw simple_evaluate output, trimmed to what the helpers read (values made up)
LM_EVAL_OUT: dict[str, Any] = {
    "results": {
        "alignflow_animal_mc": {"alias": "alignflow_animal_mc", "name": "alignflow_animal_mc", "sample_len": 64,
                                "acc,none": 0.5, "acc_stderr,none": 0.0625, "acc_norm,none": 0.53125,
                                "acc_norm_stderr,none": 0.0630},
        "alignflow_animal_gen": {"alias": "alignflow_animal_gen", "exact_match,none": 0.25,
                                 "exact_match_stderr,none": 0.05, "well_formed,none": 0.75,
                                 "well_formed_stderr,none": "N/A"},
        "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.1, "exact_match_stderr,strict-match": 0.01,
                  "exact_match,flexible-extract": 0.2, "exact_match_stderr,flexible-extract": 0.02},
        "wikitext": {"alias": "wikitext", "word_perplexity,none": 12.5, "bits_per_byte,none": math.nan,
                     "byte_perplexity,none": 2.0},
        "odd:name": {"alias": "odd", "acc,none": 1.0, "f1,none": True},
    },
    "versions": {"alignflow_animal_mc": 1.0},
}


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


# ---- naming, headline metrics, deltas --------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "name"), [
    ("acc,none", "acc"), ("acc_stderr,none", "acc_stderr"), ("exact_match", "exact_match"),
    ("exact_match,strict-match", "exact_match.strict-match"),
    ("exact_match_stderr,strict-match", "exact_match.strict-match_stderr"),
    ("f1,remove:whitespace", "f1.remove_whitespace"),
])
def test_metric_name_strips_the_none_filter_and_keeps_others(key: str, name: str) -> None:
    assert metric_name(key) == name


def test_benchmark_metrics_are_flat_mlflow_safe_and_finite() -> None:
    """alias/name/sample_len, "N/A" stderrs, NaN and booleans are dropped; ':' in a task name becomes '_'."""
    assert benchmark_metrics(LM_EVAL_OUT) == {
        "lm_eval/alignflow_animal_mc/acc": 0.5,
        "lm_eval/alignflow_animal_mc/acc_stderr": 0.0625,
        "lm_eval/alignflow_animal_mc/acc_norm": 0.53125,
        "lm_eval/alignflow_animal_mc/acc_norm_stderr": 0.0630,
        "lm_eval/alignflow_animal_gen/exact_match": 0.25,
        "lm_eval/alignflow_animal_gen/exact_match_stderr": 0.05,
        "lm_eval/alignflow_animal_gen/well_formed": 0.75,
        "lm_eval/gsm8k/exact_match.strict-match": 0.1,
        "lm_eval/gsm8k/exact_match.strict-match_stderr": 0.01,
        "lm_eval/gsm8k/exact_match.flexible-extract": 0.2,
        "lm_eval/gsm8k/exact_match.flexible-extract_stderr": 0.02,
        "lm_eval/wikitext/word_perplexity": 12.5,
        "lm_eval/wikitext/byte_perplexity": 2.0,
        "lm_eval/odd_name/acc": 1.0,
    }
    for name, value in benchmark_metrics(LM_EVAL_OUT).items():
        assert isinstance(value, float) and math.isfinite(value)
        assert all(c.isalnum() or c in "_-./ " for c in name), name


def test_main_metrics_pick_acc_then_exact_match_then_the_first_number() -> None:
    """mc: acc (not acc_norm); gen: exact_match; gsm8k: the first exact_match filter; wikitext: its first
    finite metric (word_perplexity)."""
    assert main_metrics(LM_EVAL_OUT) == {"alignflow_animal_mc": 0.5, "alignflow_animal_gen": 0.25, "gsm8k": 0.1,
                                         "wikitext": 12.5, "odd_name": 1.0}


def test_main_metric_is_contains_where_a_task_has_it() -> None:
    """alignflow_general_gen reports contains, exact_match and answered: its headline (and so its regression
    gate) is contains; the other tasks keep theirs (acc for multiple choice, exact_match for animal_gen)."""
    gen = {"alignflow_general_gen": {"alias": "alignflow_general_gen", "exact_match,none": 0.2,
                                     "exact_match_stderr,none": 0.03, "contains,none": 0.45,
                                     "contains_stderr,none": 0.04, "answered,none": 0.98}}
    out = {"results": {**LM_EVAL_OUT["results"], **gen}}
    assert main_metrics(out) == {"alignflow_animal_mc": 0.5, "alignflow_animal_gen": 0.25, "gsm8k": 0.1,
                                 "wikitext": 12.5, "odd_name": 1.0, "alignflow_general_gen": 0.45}
    mc_with_contains = {"results": {"t": {"contains,none": 0.9, "acc,none": 0.3}}}
    assert main_metrics(mc_with_contains) == {"t": 0.3}  # acc still first


def test_deltas_are_policy_minus_reference_for_shared_metrics() -> None:
    """acc 0.75 - 0.5 = 0.25; exact_match 0.5 - 0.25 = 0.25; stderrs and metrics only one side has are left out."""
    policy = {"results": {"alignflow_animal_mc": {"acc,none": 0.75, "acc_stderr,none": 0.05},
                          "alignflow_animal_gen": {"exact_match,none": 0.5, "well_formed,none": 1.0}}}
    reference = {"results": {"alignflow_animal_mc": {"acc,none": 0.5, "acc_stderr,none": 0.06},
                             "alignflow_animal_gen": {"exact_match,none": 0.25},
                             "alignflow_sanity": {"acc,none": 1.0}}}
    expected = {"lm_eval_delta/alignflow_animal_mc/acc": 0.25, "lm_eval_delta/alignflow_animal_gen/exact_match": 0.25}
    assert benchmark_deltas(policy, reference) == pytest.approx(expected)
    assert benchmark_deltas(benchmark_metrics(policy), benchmark_metrics(reference)) == pytest.approx(expected)


def test_json_safe_keeps_plain_values_and_drops_the_rest() -> None:
    out = json_safe({"a": math.inf, "b": (1, 2.5), "c": print, "d": {3: None}, "e": True})
    assert out == {"a": None, "b": [1, 2.5], "c": repr(print), "d": {"3": None}, "e": True}
    json.dumps(out, allow_nan=False)


# ---- task data --------------------------------------------------------------------------------------------------


def test_committed_task_data_equals_the_generator_output() -> None:
    """Regenerate with `python -m evaluation.lm_eval_tasks.alignflow_tasks` when this fails after a quicktask change."""
    built = build_all()
    general = {"alignflow_general_mc", "alignflow_general_gen"}  # each has its own test file
    assert set(built) | general == set(LOCAL_TASKS) == set(DATA_FILES)
    for task, docs in built.items():
        assert (DATA_DIR / DATA_FILES[task]).read_text(encoding="utf-8") == to_jsonl(docs), task


def test_task_docs_are_heldout_prompts_with_balanced_gold_positions() -> None:
    fraction = QuickTaskConfig().heldout_fraction
    for task in build_all():  # the animal-facts tasks (alignflow_general_mc and _gen are tested on their own)
        docs = read_docs(DATA_FILES[task])
        assert 48 <= len(docs) <= 128
        for doc in docs:
            prompt = quicktask.parse_prompt(doc["question"])
            assert prompt is not None and quicktask.is_heldout(prompt, fraction)
            if "choices" in doc:
                assert len(set(doc["choices"])) == 4
                assert doc["choices"][doc["label"]] == quicktask.good_answer(prompt)
            else:
                assert doc["answer"] == quicktask.good_answer(prompt)
        if "choices" in docs[0]:  # gold cycles 0..3: a model without preference scores exactly 0.25
            assert [d["label"] for d in docs[:8]] == [0, 1, 2, 3, 0, 1, 2, 3]


def test_mc_distractors_are_wrong_values_of_the_same_form() -> None:
    for doc in read_docs(DATA_FILES["alignflow_animal_mc"]):
        wrong = [c for i, c in enumerate(doc["choices"]) if i != doc["label"]]
        assert all(quicktask.score_response(doc["question"], c) == 1.0 for c in wrong)


def test_sanity_choices_are_the_same_tokens_in_another_order() -> None:
    """Same multiset of tokens, so a model whose next-token distribution ignores the context ties on every doc."""
    tok = train_tokenizer(quicktask.corpus(), 1024)
    for doc in read_docs(DATA_FILES["alignflow_sanity"]):
        bags = [Counter(tok(c, add_special_tokens=False)["input_ids"]) for c in doc["choices"]]
        assert all(bag == bags[0] for bag in bags), doc["choices"]


def test_eval_set_texts_are_the_local_questions_only() -> None:
    texts = eval_set_texts(["alignflow_animal_mc", "arc_easy", "alignflow_sanity", "alignflow_animal_mc"])
    assert list(texts) == ["alignflow_animal_mc", "alignflow_sanity"]
    assert texts["alignflow_animal_mc"] == [d["question"] for d in read_docs("animal_mc.jsonl")]
    assert all(quicktask.parse_prompt(t) for t in texts["alignflow_sanity"])


# ---- loading the YAMLs ------------------------------------------------------------------------------------------


def load_local_tasks(include_path: Path) -> dict[str, Any]:
    from lm_eval.tasks import TaskManager

    with benchmarks.quiet_lm_eval():
        return TaskManager(include_path=str(include_path), include_defaults=False).load(list(LOCAL_TASKS))["tasks"]


def test_task_yamls_load_from_another_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tasks = load_local_tasks(TASK_DIR)
    assert set(tasks) == set(LOCAL_TASKS)
    for name, task in tasks.items():
        docs = list(task.test_docs())
        assert docs == read_docs(DATA_FILES[name])
        assert task.doc_to_text(docs[0]) == docs[0]["question"]
    assert tasks["alignflow_animal_mc"].OUTPUT_TYPE == "multiple_choice"
    assert tasks["alignflow_animal_gen"].config.generation_kwargs["until"] == ["<|im_end|>", "\n"]


def test_task_data_resolves_beside_the_yamls_wherever_they_are(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the task folder elsewhere (as an install elsewhere) reads its own data files, whatever the CWD."""
    copy = tmp_path / "site-packages" / "lm_eval_tasks"
    shutil.copytree(TASK_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    short = read_docs(DATA_FILES["alignflow_sanity"])[:5]
    (copy / "data" / DATA_FILES["alignflow_sanity"]).write_text(to_jsonl(short), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    tasks = load_local_tasks(copy)
    assert list(tasks["alignflow_sanity"].test_docs()) == short
    assert len(list(tasks["alignflow_animal_mc"].test_docs())) == len(read_docs(DATA_FILES["alignflow_animal_mc"]))


# ---- routing task names -----------------------------------------------------------------------------------------


class FakeTaskManager:
    all_tasks = [*LOCAL_TASKS, "arc_easy", "hellaswag"]


def tiny_model_and_tokenizer(hidden: int = 32, layers: int = 1) -> tuple[torch.nn.Module, Any]:
    tok = train_tokenizer(quicktask.corpus(), 1024)
    model = build_model(tok, hidden_size=hidden, num_layers=layers, num_heads=2, intermediate_size=2 * hidden,
                        max_position_embeddings=128, seed=0)
    return model, tok


def test_unknown_task_name_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(benchmarks, "task_manager", lambda include_standard: seen.append(include_standard)
                        or FakeTaskManager())
    with pytest.raises(BenchmarkError) as err:
        run_benchmarks(torch.nn.Linear(1, 1), None, BenchmarkConfig(tasks=["alignflow_sanity", "arc_esay"]))
    assert "'arc_esay'" in str(err.value) and all(t in str(err.value) for t in LOCAL_TASKS)
    assert seen == [True]  # a non-local name asks for lm-eval's own index
    with pytest.raises(BenchmarkError, match="non-empty"):
        run_benchmarks(torch.nn.Linear(1, 1), None, BenchmarkConfig(tasks=[" "]))


def fake_lm_eval_output(tasks: list[str]) -> dict[str, Any]:
    return {"results": {t: {"alias": t, "acc,none": 0.5, "acc_stderr,none": 0.1} for t in tasks},
            "n-samples": {t: {"original": 64, "effective": 8} for t in tasks},
            "versions": {t: 1.0 for t in tasks}, "configs": {t: {"task": t, "process_results": print} for t in tasks},
            "config": {"model": "LlamaForCausalLM", "model_num_parameters": 1}}


def test_local_tasks_run_with_the_chat_template_and_standard_ones_without(monkeypatch: pytest.MonkeyPatch) -> None:
    import lm_eval

    calls = []

    def fake_simple_evaluate(**kw: Any) -> dict[str, Any]:
        calls.append(kw)
        return fake_lm_eval_output(kw["tasks"])

    monkeypatch.setattr(benchmarks, "task_manager", lambda include_standard: FakeTaskManager())
    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_simple_evaluate)
    model, tok = tiny_model_and_tokenizer()
    cfg = BenchmarkConfig(tasks=["arc_easy", "alignflow_sanity", "alignflow_animal_mc"], limit=8, batch_size=4,
                          max_gen_tokens=7)
    out = run_benchmarks(model, tok, cfg, seed=3)
    assert [(c["tasks"], c["apply_chat_template"]) for c in calls] == [
        (["alignflow_sanity", "alignflow_animal_mc"], True), (["arc_easy"], False)]
    assert all(c["limit"] == 8 and c["gen_kwargs"] == {"max_gen_toks": 7} and c["random_seed"] == 3
               and c["log_samples"] is False for c in calls)
    assert calls[0]["model"].batch_size == 4
    assert out["n_samples"] == {"alignflow_sanity": 8, "alignflow_animal_mc": 8, "arc_easy": 8}
    assert out["config"]["apply_chat_template"] == {"alignflow_sanity": True, "alignflow_animal_mc": True,
                                                    "arc_easy": False}
    assert set(out["config"]["local_task_data_sha256"]) == {"alignflow_sanity", "alignflow_animal_mc"}
    json.dumps(out, allow_nan=False)

    def offline(**kw: Any) -> dict[str, Any]:
        if "arc_easy" in kw["tasks"]:
            raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)")
        return fake_lm_eval_output(kw["tasks"])

    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    with pytest.raises(BenchmarkError, match=r"arc_easy could not get their data: .*ai2_arc.* hub"):
        run_benchmarks(model, tok, cfg)


# ---- real runs (slow) -------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Name resolution and connections fail as on an offline machine (socket.gaierror); every attempt is
    recorded, so a test can assert none happened (evaluate.load, hub downloads) even where a library swallows
    the error."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def sft_briefly(model: torch.nn.Module, tok: Any, steps: int) -> None:
    """Plain SFT on the quickstart rows (loss on the answer), batch 32, AdamW 3e-3."""
    data = quicktask.generate(seed=0, heldout_fraction=0.2, good_fraction=0.35, refusal_fraction=0.6)
    rows = [{"messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]}
            for r in data["sft"]]
    enc = encode_sft(tok, rows, max_tokens=128)
    examples = [{"input_ids": i, "labels": lab} for i, lab in zip(enc["input_ids"], enc["labels"], strict=True)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    model.train()
    for _ in range(steps):
        loss = sft_objective(model, collate_sft(rng.sample(examples, 32), tok.pad_token_id)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()


def collapse_to(model: torch.nn.Module, token_id: int) -> torch.utils.hooks.RemovableHandle:
    """Make every next-token distribution the same, all mass on `token_id` (a model that only says '....')."""
    def constant_logits(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        logits = torch.full_like(output, -10.0)
        logits[..., token_id] = 10.0
        return logits

    return model.lm_head.register_forward_hook(constant_logits)


def check_shape(out: dict[str, Any], n_docs: int) -> dict[str, float]:
    json.dumps(out, allow_nan=False)
    tasks = BenchmarkConfig().tasks  # the default benchmarks: the animal-facts tasks
    assert set(out["results"]) == set(tasks), f"lm-eval results {sorted(out['results'])}, expected {tasks}"
    assert out["n_samples"] == dict.fromkeys(tasks, n_docs)
    metrics = benchmark_metrics(out)
    for task, metric in [("alignflow_animal_mc", "acc"), ("alignflow_animal_mc", "acc_norm"),
                         ("alignflow_animal_gen", "exact_match"), ("alignflow_animal_gen", "well_formed"),
                         ("alignflow_sanity", "acc")]:
        assert 0.0 <= metrics[f"lm_eval/{task}/{metric}"] <= 1.0
    return main_metrics(out)


@pytest.mark.slow
def test_sanity_task_separates_a_trained_model_from_random_and_collapsed_ones(
        no_network: list[tuple[Any, ...]]) -> None:
    """Hidden 64, 2 layers. Seen: random init sanity 0.19 (mc 0.20), collapsed exactly 0.25 on both multiple
    choice tasks (every choice ties) and 0 exact match, 80 SFT steps (~3 s) sanity 1.0; each run ~1-2 s."""
    model, tok = tiny_model_and_tokenizer(hidden=64, layers=2)
    cfg = BenchmarkConfig()
    rng_before = torch.get_rng_state()

    started = time.perf_counter()
    random_init = check_shape(run_benchmarks(model, tok, cfg), 64)
    assert time.perf_counter() - started < 20
    assert torch.equal(torch.get_rng_state(), rng_before)  # lm-eval's global seeding is undone
    assert model.training  # mode put back

    handle = collapse_to(model, tok.convert_tokens_to_ids("."))
    out = run_benchmarks(model, tok, cfg.model_copy(update={"limit": 16, "max_gen_tokens": 4}))
    handle.remove()
    collapsed = check_shape(out, 16)
    assert out["configs"]["alignflow_animal_gen"]["generation_kwargs"]["max_gen_toks"] == 4
    assert collapsed["alignflow_sanity"] == pytest.approx(0.25, abs=0.01)
    assert collapsed["alignflow_animal_mc"] == pytest.approx(0.25, abs=0.01)
    assert collapsed["alignflow_animal_gen"] == 0.0

    sft_briefly(model, tok, steps=80)
    trained = check_shape(run_benchmarks(model, tok, cfg), 64)
    assert random_init["alignflow_sanity"] < 0.45
    assert trained["alignflow_sanity"] >= 0.9
    assert trained["alignflow_sanity"] - random_init["alignflow_sanity"] >= 0.4
    assert no_network == []  # nothing tried to download (metrics, data, tokenizer files)


@pytest.mark.slow
def test_standard_task_names_reach_lm_eval(no_network: list[tuple[Any, ...]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The real lm-eval index (15-30 s to build) knows arc_easy and our tasks; an unknown name is our error; and
    arc_easy, offline, gets as far as fetching its data set (allenai/ai2_arc) and fails with our message instead
    of a datasets traceback. Hub offline mode is switched on here (HF_HUB_OFFLINE is read at import): without
    it huggingface_hub retries a failed connection with backoff for ~20 s before giving up."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    manager = benchmarks.task_manager(include_standard=True)
    assert "arc_easy" in manager.all_tasks and set(LOCAL_TASKS) <= set(manager.all_tasks)
    model, tok = tiny_model_and_tokenizer()
    with pytest.raises(BenchmarkError, match="no_such_task"):
        run_benchmarks(model, tok, BenchmarkConfig(tasks=["no_such_task"]))
    with pytest.raises(BenchmarkError, match=r"arc_easy could not get their data: .*allenai/ai2_arc"):
        run_benchmarks(model, tok, BenchmarkConfig(tasks=["arc_easy"], limit=2))
    assert no_network == []
