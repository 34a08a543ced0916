"""lm-eval harness benchmarks on an in-memory model: the project's own tasks (evaluation/lm_eval_tasks/, built
from the quickstart's animal facts) and any lm-eval task name, with MLflow-safe metric names and deltas.

The project's tasks are chat tasks: they run with the model's own chat template (lm-eval's
`apply_chat_template`), the surface form an SFT model is trained on. Standard lm-eval tasks (arc_easy,
hellaswag, ...) run as lm-eval runs them by default, without a chat template, and need hub access for their
data; naming one costs an index of lm-eval's ~15k task configs (15-30 s here), built once per process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from alignment.config import BenchmarkConfig
from alignment.models.loading import first_line
from evaluation.lm_eval_tasks import TASK_DIR
from evaluation.lm_eval_tasks.alignflow_tasks import DATA_DIR, DATA_FILES, read_docs

LOCAL_TASKS: tuple[str, ...] = ("alignflow_animal_mc", "alignflow_animal_gen", "alignflow_sanity",
                                 "alignflow_general_mc", "alignflow_general_gen")
# headline metric by preference; a task without any of these reports its first numeric metric. `contains`
# (alignflow_general_gen: an accepted answer inside a free-text reply) comes before exact_match, which that task
# also reports; multiple-choice tasks have acc, alignflow_animal_gen has exact_match and no `contains`.
MAIN_METRIC_ORDER = ("acc", "contains", "exact_match")
# numbers lm-eval puts beside the metrics of a task that are not metrics
NOT_METRICS = frozenset({"sample_len", "samples", "sample_count"})
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_\-./ ]")  # MLflow metric names: alphanumerics, _ - . / and space


class BenchmarkError(ValueError):
    """A benchmark cannot run as configured (unknown task name, no tasks, ...); the message says why."""


# ---- running -----------------------------------------------------------------------------------------------


def run_benchmarks(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, cfg: BenchmarkConfig, *,
                   device: str = "cpu", seed: int = 0) -> dict[str, Any]:
    """lm-eval's `simple_evaluate` on the in-memory model (wrapped in HFLM) for `cfg.tasks`: the project's tasks
    with the tokenizer's chat template (plain text if it has none), other lm-eval tasks without.

    The model is moved to `device` for the run and put back (device and train/eval mode) afterwards; the
    global random states lm-eval seeds are restored too. Returns a JSON-serialisable dict:
    {"results": {task: {"acc,none": ..., "acc_stderr,none": ..., ...}} (lm-eval's keys, "<metric>,<filter>"),
     "n_samples": {task: documents evaluated}, "config": {...}, "versions": {task: version},
     "configs": {task: lm-eval task config}, "higher_is_better": {...}, "n_shot": {...}, "seconds": wall time}.
    Raises BenchmarkError for an unknown task name (before anything runs) or a standard task whose data cannot
    be fetched.
    """
    from lm_eval.models.huggingface import HFLM

    started = time.perf_counter()
    local, standard = split_task_names(cfg.tasks)
    manager = task_manager(include_standard=bool(standard))
    check_task_names(standard, manager.all_tasks)
    chat = bool(getattr(tokenizer, "chat_template", None))
    outputs = []
    with _model_on(model, device), _preserved_rng_state(), quiet_lm_eval():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size, device=device)
        if local:
            outputs.append((evaluate_tasks(lm, local, manager, cfg, chat=chat, seed=seed), dict.fromkeys(local, chat)))
        if standard:
            try:
                out = evaluate_tasks(lm, standard, manager, cfg, chat=False, seed=seed)
            except OSError as err:  # ConnectionError, DatasetNotFoundError, hub cache misses
                raise BenchmarkError(
                    f"lm-eval task(s) {', '.join(standard)} could not get their data: {first_line(err)}. Standard "
                    "lm-eval tasks download data sets from the Hugging Face hub; run them where it is reachable "
                    f"(or its cache is filled), or use the project's tasks ({', '.join(LOCAL_TASKS)})") from err
            outputs.append((out, dict.fromkeys(standard, False)))
    summary = summarise(outputs, cfg, device=device, seed=seed)
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def evaluate_tasks(lm: Any, names: list[str], manager: Any, cfg: BenchmarkConfig, *, chat: bool,
                   seed: int) -> dict[str, Any]:
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm, tasks=names, task_manager=manager, limit=cfg.limit, apply_chat_template=chat,
        gen_kwargs={"max_gen_toks": cfg.max_gen_tokens}, log_samples=False, random_seed=seed,
        numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed)


def split_task_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(project tasks, other names), each in the given order without repeats."""
    unique = list(dict.fromkeys(n.strip() for n in names))
    if not unique or any(not n for n in unique):
        raise BenchmarkError(f"benchmark task names must be non-empty; got {names!r}")
    return [n for n in unique if n in LOCAL_TASKS], [n for n in unique if n not in LOCAL_TASKS]


def check_task_names(names: list[str], known: list[str]) -> None:
    known_set = set(known)
    unknown = [n for n in names if n not in known_set]
    if unknown:
        raise BenchmarkError(
            f"unknown benchmark task(s) {', '.join(map(repr, unknown))}: not one of the project's tasks "
            f"({', '.join(LOCAL_TASKS)}) nor an lm-eval task, group or tag name (see `lm-eval ls tasks`)")


@functools.cache
def task_manager(include_standard: bool) -> Any:
    """A TaskManager over the project's tasks, plus lm-eval's own when asked (slow to index, so cached)."""
    from lm_eval.tasks import TaskManager

    with quiet_lm_eval():
        return TaskManager(include_path=str(TASK_DIR), include_defaults=include_standard)


@contextmanager
def quiet_lm_eval(level: int = logging.ERROR) -> Iterator[None]:
    """Inside: lm-eval logs errors only (it warns a dozen times per run about this very use: an in-memory
    model, a custom dataset, our gen_kwargs), draws no progress bars, and does not shell out to `git` for a
    commit hash we do not keep (it prints "fatal: not a git repository" outside one)."""
    loggers = [logging.getLogger(name) for name in ("lm_eval", "accelerate", "datasets")]
    previous = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    patched = _patch_lm_eval_internals()
    try:
        yield
    finally:
        for module, attr, original in patched:
            setattr(module, attr, original)
        for lg, lvl in zip(loggers, previous, strict=True):
            lg.setLevel(lvl)


def _patch_lm_eval_internals() -> list[tuple[Any, str, Any]]:
    """Module attributes of lm-eval 0.4.13 swapped for quiet ones; an attribute a later version lacks is
    left alone. Returns (module, attribute, original) to put back."""
    import importlib

    from tqdm import tqdm

    def silent_tqdm(*args: Any, **kwargs: Any) -> Any:
        return tqdm(*args, **{**kwargs, "disable": True})

    quiet = {"tqdm": silent_tqdm, "get_git_commit_hash": lambda: None}
    targets = [("lm_eval.api.task", "tqdm"), ("lm_eval.api.model", "tqdm"),
               ("lm_eval.models.huggingface", "tqdm"), ("lm_eval.evaluator", "get_git_commit_hash"),
               ("lm_eval.loggers.utils", "get_git_commit_hash")]
    patched = []
    for module_name, attr in targets:
        module = importlib.import_module(module_name)
        if hasattr(module, attr):
            patched.append((module, attr, getattr(module, attr)))
            setattr(module, attr, quiet[attr])
    return patched


@contextmanager
def _model_on(model: torch.nn.Module, device: str) -> Iterator[None]:
    param = next(model.parameters(), None)
    original = param.device if param is not None else None
    was_training = model.training
    model.to(device)
    model.eval()
    try:
        yield
    finally:
        if original is not None:
            model.to(original)
        model.train(was_training)


@contextmanager
def _preserved_rng_state() -> Iterator[None]:
    """simple_evaluate seeds python, numpy and torch globally; leave the caller's streams as they were."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


# ---- shaping lm-eval's output --------------------------------------------------------------------------------


def summarise(outputs: list[tuple[dict[str, Any], dict[str, bool]]], cfg: BenchmarkConfig, *, device: str,
              seed: int) -> dict[str, Any]:
    """Merge the outputs of simple_evaluate calls into the JSON-safe summary `run_benchmarks` returns."""
    from lm_eval import __version__ as lm_eval_version

    summary: dict[str, Any] = {"results": {}, "n_samples": {}, "versions": {}, "configs": {},
                               "higher_is_better": {}, "n_shot": {}}
    chat: dict[str, bool] = {}
    model_info: dict[str, Any] = {}
    for out, chat_by_task in outputs:
        chat.update(chat_by_task)
        summary["results"].update(out.get("results", {}))
        summary["results"].update(out.get("groups", {}))
        summary["n_samples"].update({t: n.get("effective", n.get("original")) if isinstance(n, dict) else n
                                     for t, n in out.get("n-samples", {}).items()})
        summary["versions"].update(out.get("versions", {}))
        summary["configs"].update(out.get("configs", {}))
        summary["higher_is_better"].update(out.get("higher_is_better", {}))
        summary["n_shot"].update(out.get("n-shot", {}))
        model_info = {k: out.get("config", {}).get(k) for k in ("model", "model_num_parameters", "model_dtype")}
        model_info.update({k: out[k] for k in ("transformers_version", "max_length", "tokenizer_eos_token",
                                                "tokenizer_pad_token", "tokenizer_bos_token") if k in out})
    summary["config"] = {
        "tasks": list(chat), "batch_size": cfg.batch_size, "limit": cfg.limit,
        "max_gen_tokens": cfg.max_gen_tokens, "device": device, "seed": seed, "apply_chat_template": chat,
        "lm_eval_version": lm_eval_version, "torch_version": torch.__version__,
        "local_task_data_sha256": {t: data_sha256(t) for t in chat if t in LOCAL_TASKS}, **model_info,
    }
    return json_safe(summary)


def data_sha256(task: str) -> str:
    return hashlib.sha256((DATA_DIR / DATA_FILES[task]).read_bytes()).hexdigest()


def json_safe(value: Any) -> Any:
    """Plain JSON types only: non-finite floats become None, callables and other objects their repr."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return repr(value)


# ---- metrics for tracking and gates ---------------------------------------------------------------------------


def metric_name(key: str) -> str:
    """lm-eval's "<metric>,<filter>" key as one name: "acc,none" -> "acc", "acc_stderr,none" -> "acc_stderr",
    "exact_match,strict-match" -> "exact_match.strict-match", "exact_match_stderr,strict-match" ->
    "exact_match.strict-match_stderr"."""
    metric, _, filt = key.partition(",")
    if filt and filt != "none":
        base, stderr = (metric[:-len("_stderr")], "_stderr") if metric.endswith("_stderr") else (metric, "")
        metric = f"{base}.{filt}{stderr}"
    return _UNSAFE_NAME.sub("_", metric)


def task_metrics(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{task: {metric name: value}}: finite numbers only (lm-eval's "alias", "name", "N/A" stderrs and
    "sample_len" dropped)."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.get("results", {}).items():
        if not isinstance(metrics, dict):
            continue
        clean = {}
        for key, value in metrics.items():
            if (key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value)):
                continue
            clean[metric_name(key)] = float(value)
        out[_UNSAFE_NAME.sub("_", task)] = clean
    return out


def benchmark_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Flat, MLflow-safe names "lm_eval/<task>/<metric>" (stderr as "lm_eval/<task>/<metric>_stderr") for
    `run_benchmarks` output or raw lm-eval output; finite floats only."""
    return {f"lm_eval/{task}/{name}": value
            for task, metrics in task_metrics(results).items() for name, value in metrics.items()}


def main_metrics(results: dict[str, Any]) -> dict[str, float]:
    """One headline value per task: acc (multiple choice), else contains (alignflow_general_gen), else
    exact_match (generation; the unfiltered one first), else the first numeric non-stderr metric."""
    out = {}
    for task, metrics in task_metrics(results).items():
        values = {k: v for k, v in metrics.items() if not k.endswith("_stderr")}
        for preferred in MAIN_METRIC_ORDER:
            candidates = [k for k in values if k == preferred or k.startswith(f"{preferred}.")]
            if candidates:
                out[task] = values[candidates[0]]
                break
        else:
            if values:
                out[task] = next(iter(values.values()))
    return out


def benchmark_deltas(policy: dict[str, Any], reference: dict[str, Any]) -> dict[str, float]:
    """policy - reference for every (non-stderr) metric both have, as "lm_eval_delta/<task>/<metric>". Takes
    `run_benchmarks` outputs (or their `benchmark_metrics`)."""
    pol, ref = _flat_metrics(policy), _flat_metrics(reference)
    return {"lm_eval_delta/" + key.removeprefix("lm_eval/"): pol[key] - ref[key]
            for key in pol if key in ref and not key.endswith("_stderr")}


def _flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    return benchmark_metrics(results) if "results" in results else dict(results)


# ---- contamination inputs --------------------------------------------------------------------------------------


def eval_set_texts(task_names: list[str]) -> dict[str, list[str]]:
    """The input texts (questions) of each of the project's tasks named, for the train/eval contamination
    check; other lm-eval tasks are skipped (their data is on the hub)."""
    return {name: [doc["question"] for doc in read_docs(DATA_FILES[name])]
            for name in dict.fromkeys(task_names) if name in LOCAL_TASKS}
