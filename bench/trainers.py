"""`alignflow bench`: alignflow's SFT, DPO and ORPO against TRL's trainers on the same work.

Same tiny Llama (one saved checkpoint both sides load), same token ids, batch size, max length, number of
optimizer steps (one epoch over exactly steps x batch rows), optimiser and torch threads. Every trial runs in
a fresh process (forked from a server that has only imported the libraries), so peak memory is per trainer;
trainers alternate within each repeat (the order is reversed on odd repeats), so a machine's changing load
falls on all of them alike. Speeds and memory are medians over repeats; ratios come from this one run.

Quantities (see also bench/trial.py):
* pairs/s: rows trained per second of the timed region (pairs for DPO/ORPO, examples for SFT).
* tokens/s: data tokens per second, the same count for both sides: prompt + chosen + rejected per pair (the
  prompt counted once) for DPO/ORPO, prompt + chosen per example for SFT. Padding is never counted.
* peak RSS: growth of the peak resident set over the resident set right before the trainer is built, and
  the absolute peak. GPU: peak allocated memory.
* loss diff: max |alignflow loss - TRL loss| over fixed batches, same initial weights, no training.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

METHODS = ("sft", "dpo", "orpo")
TRAINERS: dict[str, tuple[str, ...]] = {"sft": ("alignflow", "trl"), "dpo": ("alignflow", "trl", "trl-precompute"),
                                        "orpo": ("alignflow", "trl")}
# alignflow's optional model settings (training.lora / gradient_checkpointing / compile), each measured as an extra
# alignflow trainer `alignflow+<variant>` beside the plain one with --variants
# ("full-logits": the plain log-prob path, LM head at every position, as before the chunked head; "plain-ops":
# transformers' own RMSNorm and MLP modules instead of alignment/kernels/fused_ops.py's memory-lean functions)
# "glibc-malloc": glibc's adaptive mmap threshold in every stage (training.cpu_mmap_threshold_mib=null; its default
# "auto" is 1 MiB for DPO/ORPO, glibc's own for SFT); "mmap-1mib": 1 MiB in every stage, SFT included;
# "mkl-linear": torch's own fp32 products (MKL) instead of oneDNN's, training.onednn_linear=false; "onednn-linear":
# oneDNN's whatever the CPU, training.onednn_linear=true -- left unset, the CPU decides: cpu_matmul.pays_here;
# "padded-rows": every batch through the model padded, as before rows were packed (alignment/logprobs.pack_rows))
# "ddp2" / "fsdp2": 2 processes (bench/launched.py), the policy replicated or sharded; memory per process
VARIANTS = ("lora", "checkpointing", "compile", "full-logits", "plain-ops", "glibc-malloc", "mmap-1mib", "mkl-linear",
            "onednn-linear", "padded-rows", "ddp2", "fsdp2")
# with --model, DPO is also measured against TRL's default under the allocator setting alignflow's CPU training
# makes (bench.trial.TRL_MMAP), and the targets are judged against the best of TRL's configurations
MODEL_EXTRA_TRAINERS: dict[str, tuple[str, ...]] = {"dpo": ("trl-mmap",)}
# (steps, batch size) per data set for the full run: ~10 minutes on a 2-core machine in all
DEFAULT_SHAPE = {"quickstart": (24, 16), "hh": (6, 8)}
# the same with --model (a real model, e.g. SmolLM2-135M: ~15-40 s a step per trainer on 2 cores), and its
# default max length: HH-like lengths scaled by 512/1024 (prompt median ~100 tokens, responses ~60)
MODEL_SHAPE = {"quickstart": (4, 8), "hh": (3, 4)}
MODEL_MAX_LENGTH = 512
SMOKE_SHAPE = (2, 2)
SMOKE_MAX_LENGTH = 128
LOSS_TOLERANCE = 1e-3
# (method, TRL trainer it is compared with, minimum speed ratio), judged on the HH-like data
SPEED_TARGETS = (("dpo", "trl-precompute", 1.5), ("dpo", "trl", 2.0), ("orpo", "trl", 1.5), ("sft", "trl", 1.2))
MEMORY_TARGET = 1.1  # alignflow DPO peak RSS growth <= 1.1 x alignflow SFT peak RSS growth
TARGET_DATA = "hh"
# with --model (a real-size model): (method, minimum speed ratio over TRL's fastest configuration)
MODEL_SPEED_TARGETS = (("dpo", 2.5), ("orpo", 2.0), ("sft", 2.0))
# alignflow DPO peak RSS growth <= this x the smallest of TRL's DPO configurations' (trainer -> ratio)
MODEL_MEMORY_TARGETS = (("alignflow", 0.4), ("alignflow+checkpointing", 0.3))


@dataclass
class BenchOptions:
    data: tuple[str, ...] = ("quickstart", "hh")
    methods: tuple[str, ...] = METHODS
    steps: int | None = None  # None: DEFAULT_SHAPE per data set
    batch_size: int | None = None
    repeats: int = 2
    threads: int = 1
    max_length: int = 1024
    json_path: str | None = None
    smoke: bool = False
    seed: int = 0
    learning_rate: float = 1e-4
    beta: float = 0.1  # DPO beta
    lam: float = 0.5  # ORPO lambda (TRL's ORPOConfig.beta)
    loss_batches: int = 4
    # alignflow's OptimConfig.group_by_length per data set, as its presets set it: on for HH-like data (the
    # smollm2-* presets), off for the quickstart's uniform short pairs. TRL samples as by default.
    group_by_length: str = "preset"  # preset | on | off
    variants: tuple[str, ...] = ()  # extra alignflow trainers, each with one of VARIANTS on
    # any model source the pipeline accepts (hub id, folder, s3://, GGUF file); None: the quickstart's tiny model
    model: str | None = None
    generation: bool = False  # also time generation (--methods ...,gen; bench/generation.py)
    gen_prompts: int = 16
    gen_max_new_tokens: int = 64
    gen_batch_size: int = 8

    def trainers(self, method: str) -> tuple[str, ...]:
        extra = MODEL_EXTRA_TRAINERS.get(method, ()) if self.model else ()
        return TRAINERS[method] + extra + tuple(f"alignflow+{v}" for v in self.variants)

    def grouped(self, data: str) -> bool:
        return self.group_by_length == "on" or (self.group_by_length == "preset" and data == "hh")

    def shape(self, data: str) -> tuple[int, int]:
        steps, batch = SMOKE_SHAPE if self.smoke else (MODEL_SHAPE if self.model else DEFAULT_SHAPE)[data]
        return self.steps or steps, self.batch_size or batch


@dataclass
class BenchRun:
    options: BenchOptions
    environment: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    loss_agreement: dict[str, Any] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    generation_trials: list[dict[str, Any]] = field(default_factory=list)
    generation: list[dict[str, Any]] = field(default_factory=list)


# ---- CLI -----------------------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    data = ("quickstart", "hh") if args.data == "both" else (args.data,)
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = set(methods) - set(METHODS) - {"gen"}
    if not methods or unknown:
        raise ValueError(f"--methods: choose from {', '.join(METHODS)}, gen (comma-separated), got {args.methods!r}")
    generation = "gen" in methods
    methods = tuple(m for m in methods if m != "gen")
    model = getattr(args, "model", None) or None
    max_length = args.max_length or (SMOKE_MAX_LENGTH if args.smoke else MODEL_MAX_LENGTH if model else 1024)
    repeats = args.repeats or (1 if args.smoke else 2)
    variants = tuple(v.strip() for v in (getattr(args, "variants", None) or "").split(",") if v.strip())
    if set(variants) - set(VARIANTS):
        raise ValueError(f"--variants: choose from {', '.join(VARIANTS)} (comma-separated), got {args.variants!r}")
    return BenchOptions(data=data, methods=methods, steps=args.steps, batch_size=args.batch_size, repeats=repeats,
                        threads=args.threads, max_length=max_length, json_path=args.json, smoke=args.smoke,
                        loss_batches=2 if args.smoke else 4,
                        group_by_length=getattr(args, "group_by_length", None) or "preset", variants=variants,
                        model=model, generation=generation,
                        **({"gen_prompts": 4, "gen_max_new_tokens": 8, "gen_batch_size": 2} if args.smoke else {}))


def run_from_args(args: argparse.Namespace) -> int:
    """Entry of `alignflow bench` (flows/cli.py builds the parser)."""
    import importlib.util

    if importlib.util.find_spec("trl") is None:
        print("error: `alignflow bench` compares with TRL, which is not installed: pip install -e '.[bench]'",
              file=sys.stderr)
        return 2
    try:
        options = options_from_args(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from alignment.models.loading import ModelLoadError

    try:
        run = run_benchmark(options)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(run))
    if run.generation:
        from bench.generation import format_generation

        print(format_generation(run.generation, generation_spec(options, Path("."))))
    if options.json_path:
        Path(options.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(options.json_path).write_text(json.dumps(to_json(run), indent=2))
        print(f"results: {options.json_path}")
    failed = [t for t in run.trials + run.generation_trials if not t["ok"]] + [
        a for a in run.loss_agreement.values() if "error" in a]
    if failed:
        print(f"error: {len(failed)} trial(s) failed; see the output above", file=sys.stderr)
        return 1
    return 0


# ---- the run -------------------------------------------------------------------------------------------


def run_benchmark(options: BenchOptions) -> BenchRun:
    configure_environment(options.threads)
    run = BenchRun(options=options, environment=environment(options.threads))
    work = Path(tempfile.mkdtemp(prefix="alignflow-bench-"))
    try:
        model_dir = bench_model(work / "model", options)
        run.environment["model"] = {"source": options.model or "tiny (quickstart TinyModelConfig)",
                                    "path": str(model_dir), **model_shape(model_dir)}
        for name in options.data:
            run.data[name] = write_data(name, model_dir, work, options)
        ctx = trial_context(options)
        for repeat in range(options.repeats):
            for name in options.data:
                order = [(m, t) for m in options.methods for t in options.trainers(m)]
                for method, trainer in order if repeat % 2 == 0 else order[::-1]:
                    spec = trial_spec(options, name, run.data[name], model_dir, method, trainer)
                    outcome = run_in_process(ctx, spec, work)
                    run.trials.append({"repeat": repeat, "data": name, "method": method, "trainer": trainer,
                                       **outcome})
                    print(progress_line(run.trials[-1]), flush=True)
        for name in options.data if options.methods else ():
            spec = loss_spec(options, name, run.data[name], model_dir)
            outcome = run_in_process(ctx, spec, work)
            run.loss_agreement[name] = outcome.get("result") or {"error": outcome.get("error")}
        if options.generation:
            run_generation(run, ctx, model_dir, work)
        run.environment["loadavg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    run.results = summarise(run)
    run.verdicts = judge(run)
    if options.generation:
        from bench.generation import judge_generation, summarise_generation

        run.generation = summarise_generation(run.generation_trials)
        run.verdicts += judge_generation(run.generation, options.smoke)
    return run


def generation_spec(options: BenchOptions, model_dir: Path) -> dict[str, Any]:
    import torch

    return {"kind": "generate", "model_dir": str(model_dir), "threads": options.threads, "seed": options.seed,
            "prompts": options.gen_prompts, "max_new_tokens": options.gen_max_new_tokens,
            "batch_size": options.gen_batch_size, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def run_generation(run: BenchRun, ctx: multiprocessing.context.BaseContext, model_dir: Path, work: Path) -> None:
    """Each generator once per repeat, alternating order, every one in a fresh process (bench/generation.py)."""
    from bench.generation import GENERATORS

    for repeat in range(run.options.repeats):
        for name in GENERATORS if repeat % 2 == 0 else GENERATORS[::-1]:
            outcome = run_in_process(ctx, {**generation_spec(run.options, model_dir), "generator": name}, work)
            run.generation_trials.append({"repeat": repeat, "generator": name, **outcome})
            r = outcome.get("result")
            print(f"  r{repeat} generation {name:18s} " + (f"{r['seconds']:7.2f} s  {r['tokens_per_s']:7.1f} tok/s  "
                                                          f"{r['new_tokens']} tokens  answers {r['answers_digest']}"
                                                          if r else f"FAILED: {outcome.get('error')}"), flush=True)


def configure_environment(threads: int) -> None:
    """Thread pins and offline switches, set before the trial server starts so every trial inherits them."""
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[key] = str(threads)
    for key, value in (("TOKENIZERS_PARALLELISM", "false"), ("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                       ("TQDM_DISABLE", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(key, value)


def environment(threads: int) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "accelerate", "datasets", "trl", "alignflow"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return {"versions": versions, "python": platform.python_version(), "platform": platform.platform(),
            "cpu_model": cpu, "cpu_count": os.cpu_count(), "threads": threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "loadavg_start": os.getloadavg(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            # torch's huge-page switch, inherited by every trial, TRL's too (alignment/kernels/host_memory.py)
            "huge_pages": os.environ.get("THP_MEM_ALLOC_ENABLE"), "thp_mode": thp_mode()}


def thp_mode(path: Path = Path("/sys/kernel/mm/transparent_hugepage/enabled")) -> str | None:
    """The kernel's transparent-huge-page mode (always, madvise or never: the bracketed one), None if unknown."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.index("[") + 1:text.index("]")] if "[" in text and "]" in text else None


def bench_model(out: Path, options: BenchOptions) -> Path:
    """The folder every trial loads: --model resolved as the pipeline resolves model sources (a GGUF file
    converted once and cached, an s3:// folder downloaded), else the quickstart's tiny model saved to `out`."""
    if options.model is None:
        return save_tiny_model(out, options)
    from alignment.models.source import local_model_path

    return Path(local_model_path(options.model))


def model_shape(model_dir: Path) -> dict[str, Any]:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return {key: getattr(text, key, None) for key in ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
                                                      "tie_word_embeddings")}


def save_tiny_model(out: Path, options: BenchOptions) -> Path:
    """The quickstart's tiny Llama (TinyModelConfig defaults; positions widened to max_length) and tokenizer."""
    from alignment.config import TinyModelConfig
    from alignment.instruct import quicktask
    from alignment.models.tiny import build_model, train_tokenizer

    t = TinyModelConfig()
    tokenizer = train_tokenizer(quicktask.corpus(), t.vocab_size)
    model = build_model(tokenizer, hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                        intermediate_size=t.intermediate_size,
                        max_position_embeddings=max(t.max_position_embeddings, options.max_length), seed=options.seed)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_data(name: str, model_dir: Path, work: Path, options: BenchOptions) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from bench.pairs import build_pairs, length_stats, pair_tokens

    steps, batch = options.shape(name)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs = build_pairs(name, tokenizer, max(steps, options.loss_batches) * batch, options.seed, options.max_length)
    path = work / f"{name}.json"
    path.write_text(json.dumps(pairs))
    trained = pairs[: steps * batch]
    stats = length_stats(trained)
    print(f"data {name}: {len(trained)} pairs; tokens prompt p50 {stats['prompt']['p50']:.0f} "
          f"p90 {stats['prompt']['p90']:.0f} max {stats['prompt']['max']:.0f}, chosen p50 {stats['chosen']['p50']:.0f} "
          f"p90 {stats['chosen']['p90']:.0f}, rejected p50 {stats['rejected']['p50']:.0f} "
          f"p90 {stats['rejected']['p90']:.0f}", flush=True)
    return {"path": str(path), "rows": len(trained), "steps": steps, "batch_size": batch, "lengths": stats,
            "pair_tokens": sum(pair_tokens(p) for p in trained),
            "sft_tokens": sum(len(p["prompt_ids"]) + len(p["chosen_ids"]) for p in trained)}


def trial_spec(options: BenchOptions, name: str, data: dict[str, Any], model_dir: Path, method: str,
               trainer: str) -> dict[str, Any]:
    import torch

    return {"kind": "train", "data": name, "data_path": data["path"], "model_dir": str(model_dir),
            "method": method, "trainer": trainer, "steps": data["steps"], "batch_size": data["batch_size"],
            "threads": options.threads, "seed": options.seed, "learning_rate": options.learning_rate,
            "beta": options.beta, "lam": options.lam, "max_length": options.max_length,
            "group_by_length": options.grouped(name), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def loss_spec(options: BenchOptions, name: str, data: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    return {"kind": "loss", "data": name, "data_path": data["path"], "model_dir": str(model_dir),
            "methods": list(options.methods), "batch_size": data["batch_size"], "loss_batches": options.loss_batches,
            "threads": options.threads, "seed": options.seed, "learning_rate": options.learning_rate,
            "beta": options.beta, "lam": options.lam, "max_length": options.max_length}


def trial_context(options: BenchOptions) -> multiprocessing.context.BaseContext:
    """Fresh processes forked from a server that has imported the libraries (and nothing else), so a trial
    pays no import time and its memory is its own."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "transformers", "accelerate", "datasets", "trl", "alignment.training.trainer",
                                "bench.trial", "bench.launched", "bench.trl_side", "bench.generation"])
    return ctx


def run_in_process(ctx: multiprocessing.context.BaseContext, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    from bench.launched import LAUNCHED, launched_entry
    from bench.trial import trial_entry

    result_path = work / f"result-{time.monotonic_ns()}.json"
    launched = spec["kind"] == "train" and spec["trainer"].partition("+")[2] in LAUNCHED
    process = ctx.Process(target=launched_entry if launched else trial_entry, args=(spec, str(result_path)))
    process.start()
    process.join()
    if not result_path.exists():
        log = result_path.with_suffix(".log")
        tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
        print("\n".join(tail), flush=True)
        return {"ok": False, "error": f"trial process exited with code {process.exitcode} and no result"}
    payload = json.loads(result_path.read_text())
    if not payload["ok"]:
        log = result_path.with_suffix(".log")
        tail = log.read_text(errors="replace").splitlines()[-30:] if log.exists() else []
        print("\n".join([*tail, payload.get("traceback", "")]), flush=True)
    return payload


def progress_line(trial: dict[str, Any]) -> str:
    head = f"  r{trial['repeat']} {trial['data']:10s} {trial['method']:4s} {trial['trainer']:23s}"
    if not trial["ok"]:
        return f"{head} FAILED: {trial['error']}"
    r = trial["result"]
    return (f"{head} {r['seconds']:7.2f} s  {r['pairs_per_s']:8.1f} pairs/s  {r['tokens_per_s']:9.0f} tok/s  "
            f"+{r['rss_growth_mib']:6.1f} MiB  loss {r['final_loss']:.4f}")


# ---- summary, verdicts, table --------------------------------------------------------------------------


def summarise(run: BenchRun) -> list[dict[str, Any]]:
    rows = []
    for name in run.options.data:
        for method in run.options.methods:
            for trainer in run.options.trainers(method):
                done = [t["result"] for t in run.trials
                        if t["data"] == name and t["method"] == method and t["trainer"] == trainer and t["ok"]]
                row: dict[str, Any] = {"data": name, "method": method, "trainer": trainer, "trials": len(done)}
                if done:
                    seconds = statistics.median(r["seconds"] for r in done)
                    row.update({
                        "seconds": seconds, "seconds_all": [r["seconds"] for r in done],
                        "pairs_per_s": done[0]["examples"] / seconds, "tokens_per_s": done[0]["data_tokens"] / seconds,
                        "ref_s": statistics.median(r["ref_s"] for r in done),
                        "init_s": statistics.median(r["init_s"] for r in done),
                        "checkpoint_s": statistics.median(r["checkpoint_s"] for r in done),
                        "rss_growth_mib": statistics.median(r["rss_growth_mib"] for r in done),
                        "rss_peak_mib": statistics.median(r["rss_peak_mib"] for r in done),
                        "final_loss": done[0]["final_loss"],
                    })
                    if "gpu_peak_allocated_mib" in done[0]:
                        row["gpu_peak_allocated_mib"] = statistics.median(r["gpu_peak_allocated_mib"] for r in done)
                row["loss_diff"] = loss_diff(run.loss_agreement.get(name, {}), method, trainer)
                rows.append(row)
    for row in rows:  # alignflow's (and its variants') speed over each TRL configuration's, same data and method
        if not row["trainer"].startswith("alignflow") or "seconds" not in row:
            continue
        row["speedup"] = {other["trainer"]: other["seconds"] / row["seconds"] for other in rows
                          if other["data"] == row["data"] and other["method"] == row["method"]
                          and other["trainer"].startswith("trl") and "seconds" in other}
    return rows


def loss_diff(agreement: dict[str, Any], method: str, trainer: str) -> float | None:
    """The loss difference shown for a row: for alignflow rows the worst over that method's TRL trainers (none
    for the variants: their losses are checked in tests/alignment/test_training_options.py)."""
    if trainer.startswith("alignflow+"):
        return None
    keys = [f"{method}/{t}" for t in TRAINERS[method][1:]] if trainer == "alignflow" else [f"{method}/{trainer}"]
    values = [agreement[k]["max_abs_diff"] for k in keys if isinstance(agreement.get(k), dict)]
    return max(values) if values else None


def find(rows: list[dict[str, Any]], data: str, method: str, trainer: str) -> dict[str, Any] | None:
    return next((r for r in rows if (r["data"], r["method"], r["trainer"]) == (data, method, trainer)), None)


def judge(run: BenchRun) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and pass/fail (None when not measured): the tiny
    model's, or with --model the real-size ones (`judge_model`)."""
    verdicts = judge_model(run) if run.options.model else judge_tiny(run)
    for name, agreement in run.loss_agreement.items():
        for key, entry in sorted(agreement.items()):
            if not isinstance(entry, dict):
                continue
            verdicts.append({"target": f"{key} loss within {LOSS_TOLERANCE} of TRL ({name})",
                             "value": entry["max_abs_diff"], "passed": entry["max_abs_diff"] <= LOSS_TOLERANCE})
    return verdicts


def judge_model(run: BenchRun) -> list[dict[str, Any]]:
    """Real-size targets on the HH-like data: speed over TRL's fastest configuration of the same method, and
    DPO's peak RSS growth over the smallest of TRL's (plain alignflow, and with activation checkpointing)."""
    verdicts: list[dict[str, Any]] = []
    if TARGET_DATA not in run.options.data:
        return verdicts
    measured = None if run.options.smoke else True
    for method, minimum in MODEL_SPEED_TARGETS:
        if method not in run.options.methods:
            continue
        ours = find(run.results, TARGET_DATA, method, "alignflow") or {}
        speedups = ours.get("speedup", {})
        value = min(speedups.values()) if speedups else None
        best = min(speedups, key=speedups.get) if speedups else "trl"
        verdicts.append({"target": f"{method} speed >= {minimum}x TRL's fastest ({best}, {TARGET_DATA})",
                         "value": value, "passed": None if value is None or not measured else value >= minimum})
    if "dpo" in run.options.methods:
        theirs = [r["rss_growth_mib"] for r in run.results if r["data"] == TARGET_DATA and r["method"] == "dpo"
                  and r["trainer"].startswith("trl") and "rss_growth_mib" in r]
        for trainer, maximum in MODEL_MEMORY_TARGETS:
            ours = (find(run.results, TARGET_DATA, "dpo", trainer) or {}).get("rss_growth_mib")
            if trainer != "alignflow" and ours is None:
                continue
            value = ours / min(theirs) if ours is not None and theirs and min(theirs) > 0 else None
            verdicts.append({"target": f"dpo {trainer} peak RSS growth <= {maximum}x TRL's smallest ({TARGET_DATA})",
                             "value": value, "passed": None if value is None or not measured else value <= maximum})
    return verdicts


def judge_tiny(run: BenchRun) -> list[dict[str, Any]]:
    verdicts = []
    for method, other, minimum in SPEED_TARGETS:
        if method not in run.options.methods or TARGET_DATA not in run.options.data:
            continue
        ours = find(run.results, TARGET_DATA, method, "alignflow") or {}
        value = ours.get("speedup", {}).get(other)
        verdicts.append({"target": f"{method} speed >= {minimum}x {other} ({TARGET_DATA})", "value": value,
                         "passed": None if value is None or run.options.smoke else value >= minimum})
    if {"dpo", "sft"} <= set(run.options.methods) and TARGET_DATA in run.options.data:
        dpo = (find(run.results, TARGET_DATA, "dpo", "alignflow") or {}).get("rss_growth_mib")
        sft = (find(run.results, TARGET_DATA, "sft", "alignflow") or {}).get("rss_growth_mib")
        value = dpo / sft if dpo is not None and sft else None
        verdicts.append({"target": f"dpo peak RSS growth <= {MEMORY_TARGET}x sft ({TARGET_DATA})", "value": value,
                         "passed": None if value is None or run.options.smoke else value <= MEMORY_TARGET})
    return verdicts


def format_table(run: BenchRun) -> str:
    header = (f"{'method':6s} {'data':10s} {'trainer':23s} {'pairs/s':>8s} {'tokens/s':>9s} {'RSS +MiB':>8s} "
              f"{'RSS MiB':>8s} {'vs trl':>7s} {'vs trl-pre':>10s} {'vs best':>7s} {'loss diff':>9s}")
    lines = [header, "-" * len(header)]
    for row in sorted(run.results, key=lambda r: (METHODS.index(r["method"]), r["data"])):
        if "seconds" not in row:
            lines.append(f"{row['method']:6s} {row['data']:10s} {row['trainer']:23s} (no successful trial)")
            continue
        speed = row.get("speedup", {})
        lines.append(
            f"{row['method']:6s} {row['data']:10s} {row['trainer']:23s} {rate(row['pairs_per_s'])} "
            f"{row['tokens_per_s']:9.0f} {row['rss_growth_mib']:8.1f} {row['rss_peak_mib']:8.0f} "
            f"{ratio(speed.get('trl')):>7s} {ratio(speed.get('trl-precompute')):>10s} "
            f"{ratio(min(speed.values()) if speed else None):>7s} {diff(row['loss_diff']):>9s}")
    env = run.environment
    model = env.get("model", {})
    lines.append(f"model {model.get('source')}: {model.get('model_type')}, vocabulary {model.get('vocab_size')}, "
                 f"hidden {model.get('hidden_size')}, {model.get('num_hidden_layers')} layers; max length "
                 f"{run.options.max_length}; " + ", ".join(f"{d} {v['steps']} steps x {v['batch_size']}"
                                                          for d, v in run.data.items()))
    lines.append(f"threads {env['threads']}, {env['device']} ({env['cpu_model']}), torch {env['versions']['torch']}, "
                 f"trl {env['versions']['trl']}; load average {env['loadavg_start'][0]:.2f} at start"
                 + f"; THP_MEM_ALLOC_ENABLE={env.get('huge_pages')} (kernel THP {env.get('thp_mode')})"
                 + "; alignflow groups batches by length on: "
                 + (", ".join(d for d in run.options.data if run.options.grouped(d)) or "none")
                 + (" -- smoke run: no timing or memory claims" if run.options.smoke else ""))
    for v in run.verdicts:
        state = {True: "PASS", False: "FAIL", None: "n/a "}[v["passed"]]
        value = "-" if v["value"] is None else f"{v['value']:.3g}"
        lines.append(f"  [{state}] {v['target']}: {value}")
    return "\n".join(lines)


def rate(value: float) -> str:
    """pairs/s in 8 characters: one decimal, or three below 10 (a real-size model trains < 1 pair/s here)."""
    return f"{value:8.1f}" if value >= 10 else f"{value:8.3f}"


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def diff(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


def to_json(run: BenchRun) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean({"options": asdict(run.options), "environment": run.environment, "data": run.data,
                  "results": run.results, "loss_agreement": run.loss_agreement, "verdicts": run.verdicts,
                  "trials": run.trials, "generation": run.generation, "generation_trials": run.generation_trials,
                  "definitions": DEFINITIONS})


DEFINITIONS = {
    "seconds": "wall time of the training call, model loaded and rows tokenized: alignflow reference_logps (DPO) "
               "+ train() incl. its final checkpoint; TRL train() + its reference precompute (precompute mode)",
    "pairs_per_s": "rows trained (steps x batch, one epoch) / seconds; examples for SFT",
    "tokens_per_s": "data tokens / seconds; per pair prompt + chosen + rejected (prompt once), per SFT example "
                    "prompt + chosen; padding never counted; the same count for both sides",
    "rss_growth_mib": "peak RSS (VmHWM, reset right before the trainer is built) minus RSS at that moment",
    "rss_peak_mib": "peak RSS of the trial process from that moment on (includes the preloaded libraries)",
    "speedup": "alignflow pairs/s / TRL pairs/s (same data, method), medians over repeats",
    "loss_diff": "max |alignflow loss - TRL loss| over fixed batches, same initial weights, no training",
}
