"""The pipeline's ML stages as plain functions: prepare data, build the base model, SFT, DPO/ORPO.

Each takes the config and the small records of earlier stages (paths and fingerprints, never large
objects) and returns its own record, so a stage can run in another process or on another machine.
Nothing here knows about Prefect or MLflow; metrics go through the `MetricsLogger` protocol.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from alignment.config import PipelineConfig
from alignment.data import read_jsonl, write_jsonl
from alignment.data.prepare import PrepareOptions, load_tokenized_rows, prepare, tokenize_prepared
from alignment.instruct import instructions, quicktask
from alignment.kernels.host_memory import large_blocks_mapped
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan, plan_for
from alignment.models.generation import GenerationStats, sample_answers
from alignment.models.loading import fingerprint_model, load_causal_lm, load_tokenizer, prepare_for_training
from alignment.models.source import resolve_model
from alignment.models.tiny import make_tiny_model
from alignment.records import ModelRef, PreparedData, ProgressCallback, TrainOutput
from alignment.training.distributed import launch_training, make_accelerator, save_trained_model
from alignment.training.heldout import HeldoutEvaluator
from alignment.training.logprobs import reference_logps
from alignment.training.objectives import Objective, method_plan, method_spec
from alignment.training.onpolicy import (
    Scorer,
    case_repairs,
    distinct_prompts,
    last_user_text,
    make_pairs,
    score_answers,
)
from alignment.training.sharding import shard_model
from alignment.training.tracking import MetricsLogger
from alignment.training.trainer import train
from storage.s3 import read_json, shared_uri, write_json

if TYPE_CHECKING:
    from accelerate import Accelerator
    from transformers import PreTrainedTokenizerBase

    from alignment.config import OptimConfig

log = logging.getLogger(__name__)
# bump when a stage's output for the same inputs changes (2: the instruction task has checkable questions and
# held-out phrasings; on-policy pairs are scored on correctness and never choose a degenerate sample; 3: other
# checkable questions, the echo and number-word rules of the review; 4: an on-policy answer cut off at the token
# limit is never the chosen one)
CODE_VERSION = "4"
HELDOUT_PROMPTS = "heldout_prompts.jsonl"  # every held-out prompt, beside on-policy pairs (paired or not)


def stage_key(*parts: Any) -> str:
    """Content key of a stage: its config section, its inputs' fingerprints and the code version."""
    blob = json.dumps([CODE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---- data ------------------------------------------------------------------------------------------------


def write_quickstart_files(cfg: PipelineConfig, raw_dir: Path) -> dict[str, Path]:
    """Generate the quickstart task and write it as ordinary user files (strings or chat messages)."""
    q = cfg.data.quick
    rows = quicktask.generate(cfg.run.seed, q.heldout_fraction, q.good_fraction, q.refusal_fraction)
    if q.conversational:
        rows = {name: [as_conversational(r) for r in split] for name, split in rows.items()}
    paths = {}
    for name, split in rows.items():
        paths[name] = raw_dir / f"{name}.jsonl"
        write_jsonl(split, paths[name])
    return paths


def as_conversational(row: dict[str, str]) -> dict[str, Any]:
    prompt = [{"role": "user", "content": row["prompt"]}]
    if "completion" in row:
        return {"messages": prompt + [{"role": "assistant", "content": row["completion"]}]}
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


def prepare_data(cfg: PipelineConfig, out_dir: Path) -> PreparedData:
    """Read, validate, de-duplicate and split the data; write canonical files, a report and length plots
    (alignment/data/prepare.py). The quickstart's generated files go through the same loader as users' data."""
    d = cfg.data
    if d.source == "instructions":
        return write_instruction_prompts(cfg, out_dir / "prepared")
    if d.source == "quickstart":
        raw = write_quickstart_files(cfg, out_dir / "raw")
        sources = {"sft": str(raw["sft"]), "train": str(raw["train"]), "heldout": str(raw["heldout"])}
    else:
        sources = {"sft": d.sft_path, "train": d.train_path, "heldout": d.heldout_path}
    result = prepare(sources, out_dir / "prepared", PrepareOptions.from_config(d, cfg.run.seed))
    return PreparedData(dir=result.dir, fingerprint=stage_key(result.fingerprints), counts=result.counts,
                        report=result.report)


def write_instruction_prompts(cfg: PipelineConfig, out_dir: Path) -> PreparedData:
    """The verifiable-instruction task (alignment/instruct/instructions.py) as prompt-only rows: `train.jsonl` and
    `heldout.jsonl` hold {"prompt": [user message], "question_id", "instruction"}; the onpolicy stage samples
    the answers and turns them into pairs."""
    t = cfg.data.instructions
    kinds = t.kinds or list(instructions.KINDS)
    task = instructions.generate_task(cfg.run.seed, heldout_fraction=t.heldout_fraction,
                                      per_question=t.per_question, kinds=kinds,
                                      heldout_phrasings=t.heldout_phrasings)
    limits = {"train": t.max_train_prompts, "heldout": t.max_heldout_prompts}
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, digests = {}, {}
    for split, items in task.items():
        rows = [item.to_row() for item in items[:limits[split]]]
        write_jsonl(rows, out_dir / f"{split}.jsonl")
        counts[split] = len(rows)
        digests[split] = hashlib.sha256((out_dir / f"{split}.jsonl").read_bytes()).hexdigest()
    report = {"source": "instructions", "kinds": kinds, "counts": counts, "prompts_only": True,
              "fingerprints": digests, "sources": {split: "generated instruction task" for split in counts},
              "drops": {split: {"rows_dropped": 0} for split in counts}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return PreparedData(dir=str(out_dir), fingerprint=stage_key(digests), counts=counts, report=report)


def onpolicy_pairs(cfg: PipelineConfig, prepared: PreparedData, model: ModelRef, scorer: Scorer,
                   out_dir: Path) -> tuple[PreparedData, dict[str, float]]:
    """Sample `onpolicy.samples_per_prompt` answers per training and held-out prompt from `model`, score them,
    pair best over worst (alignment/training/onpolicy.py), and prepare the pairs like any user data. The held-out
    prompts are all kept (`heldout_prompts.jsonl`) so evaluation sees every one, paired or not."""
    o = cfg.onpolicy
    tok = load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
    lm = load_causal_lm(model.path, trust_remote_code=cfg.model.trust_remote_code)
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    stats = GenerationStats()
    reports = {}
    for offset, split in enumerate(("train", "heldout")):
        prompts = distinct_prompts(prepared.path(split))
        sampled_answers = sample_answers(
            lm, tok, prompts, max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
            num_samples=o.samples_per_prompt, do_sample=True, temperature=o.temperature, top_p=o.top_p,
            seed=cfg.run.seed * 1000 + offset, stats=stats)
        answers = [[a.text for a in row] for row in sampled_answers]
        finished = [[a.finished or o.choose_unfinished for a in row] for row in sampled_answers]
        sampled = [len(a) for a in answers]
        if o.repair_case and split == "train":  # program-cased rewrites of the samples join the candidates
            for p, texts, ended in zip(prompts, answers, finished, strict=True):
                for text, done in list(zip(texts, ended, strict=True)):
                    repaired = case_repairs(last_user_text(p), [text])
                    texts.extend(repaired)
                    ended.extend([done] * len(repaired))
        scores = score_answers(scorer, prompts, answers)
        rows, samples, report = make_pairs(prompts, answers, scores, min_gap=o.min_score_gap, sampled=sampled,
                                           require_correct_chosen=o.require_correct_chosen, finished=finished)
        log.info("onpolicy %s: %d prompts x %d samples (%d cut off at %d tokens) -> %d pairs (dropped: %d all "
                 "answers scored alike, %d only a cut-off answer to choose, %d chosen answer wrong); %.1f generated "
                 "tokens/s so far", split, report.prompts, o.samples_per_prompt, report.unfinished, o.max_new_tokens,
                 report.pairs, report.dropped_no_gap, report.dropped_unfinished, report.dropped_wrong_chosen,
                 stats.tokens_per_sec)
        if not rows:
            raise ValueError(
                f"onpolicy: no {split} prompt yielded a pair ({report.prompts} prompts, {report.samples} samples: "
                f"{report.dropped_no_gap} prompts' answers all scored alike by {scorer.name}, "
                f"{report.dropped_unfinished} had only answers cut off at onpolicy.max_new_tokens="
                f"{o.max_new_tokens} to choose, {report.dropped_wrong_chosen} only wrong answers); raise "
                f"onpolicy.samples_per_prompt, onpolicy.temperature or onpolicy.max_new_tokens")
        write_jsonl(rows, raw / f"{split}.jsonl")
        write_jsonl(samples, out_dir / f"samples-{split}.jsonl")
        metrics.update(report.metrics(split))
        reports[split] = report.to_dict()
        if split == "heldout":
            held = out_dir / "prepared"
            held.mkdir(parents=True, exist_ok=True)
            write_jsonl([{"prompt": p} for p in prompts], held / HELDOUT_PROMPTS)
    del lm
    metrics.update({"onpolicy/generated_tokens": float(stats.new_tokens), "onpolicy/seconds": stats.seconds,
                    "onpolicy/tokens_per_sec": stats.tokens_per_sec, "onpolicy/sequences": float(stats.sequences)})
    options = PrepareOptions.from_config(cfg.data, cfg.run.seed)
    result = prepare({"train": str(raw / "train.jsonl"), "heldout": str(raw / "heldout.jsonl")},
                     out_dir / "prepared", options)
    report = {**result.report, "onpolicy": {"scorer": scorer.name, "splits": reports,
                                            "generation": {"tokens": stats.new_tokens, "seconds": stats.seconds}}}
    (Path(result.dir) / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return PreparedData(dir=result.dir, fingerprint=stage_key(result.fingerprints), counts=result.counts,
                        report=report), metrics


def corpus_texts(prepared: PreparedData) -> Iterable[str]:
    for row in read_jsonl(prepared.path("sft")):
        yield from (m["content"] for m in row["messages"])
    for split in ("train", "heldout"):
        for row in read_jsonl(prepared.path(split)):
            for key in ("prompt", "chosen", "rejected"):
                yield from (m["content"] for m in row[key])


# ---- model -----------------------------------------------------------------------------------------------


def build_base_model(cfg: PipelineConfig, prepared: PreparedData, out_dir: Path) -> ModelRef:
    """The configured model (hub id, local path, s3://, GGUF), or the tiny Llama made from the data's corpus."""
    if cfg.model.name_or_path:
        path, info = resolve_model(cfg.model.name_or_path, cfg.data.cache_dir)
        return ModelRef(path=path, fingerprint=fingerprint_model(path),
                        source=info.as_tags() if info else None)
    t = cfg.model.tiny
    path = make_tiny_model(out_dir / "base_model", list(corpus_texts(prepared)), vocab_size=t.vocab_size,
                           hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                           intermediate_size=t.intermediate_size,
                           max_position_embeddings=t.max_position_embeddings, seed=cfg.run.seed)
    return ModelRef(path=str(path), fingerprint=fingerprint_model(str(path)))


# ---- training --------------------------------------------------------------------------------------------


def run_sft(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, out_dir: Path, logger: MetricsLogger,
            on_log: ProgressCallback | None = None, accelerator: Accelerator | None = None) -> TrainOutput:
    """Supervised fine-tuning with the chat template, loss on assistant tokens only. With
    training.num_processes > 1 (and no accelerator given) it runs in that many processes (alignment/training/distributed.py)."""
    if cfg.training.num_processes > 1 and accelerator is None:
        return launch_training("sft", cfg, prepared=prepared, base=base, out_dir=out_dir, logger=logger,
                               on_log=on_log)
    with training_scope(cfg, "sft"):
        return _sft_here(cfg, prepared, base, out_dir, logger, on_log, accelerator)


@contextmanager
def training_scope(cfg: PipelineConfig, stage: Literal["sft", "preference"]) -> Iterator[None]:
    """A training stage runs, from before it loads a model, under its runtime plan's mmap threshold
    (training.cpu_mmap_threshold_mib: so the reference pass's and the load's freed memory does not sit in the heap
    for the training steps to fragment; CPU only, alignment/kernels/host_memory.py). The plan's module settings are
    applied to each model the stage sets up (`stage_plan`, alignment/kernels/runtime_plan.py), not process-wide."""
    device = stage_device()
    with large_blocks_mapped(stage_plan(cfg, stage, device).mmap_threshold_mib, device):
        yield


def stage_device() -> torch.device:
    """Where a training stage trains in this process (as accelerate picks it)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def stage_plan(cfg: PipelineConfig, stage: Literal["sft", "preference"],
               device: torch.device | str | None = None) -> RuntimePlan:
    """The runtime plan of a stage's models on `device` (the stage's own by default; a model's for a pass that
    runs it where it was loaded, such as the reference pass)."""
    return plan_for(cfg.training, stage_device() if device is None else device, stage)


def model_device(model: torch.nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _sft_here(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, out_dir: Path, logger: MetricsLogger,
              on_log: ProgressCallback | None, accelerator: Accelerator | None) -> TrainOutput:
    tok = load_tokenizer(base.path, trust_remote_code=cfg.model.trust_remote_code)
    with accelerator.main_process_first() if accelerator else nullcontext():  # one writes the token cache
        rows = tokenized_rows(cfg, prepared, base, "sft")
    model = load_causal_lm(base.path, trust_remote_code=cfg.model.trust_remote_code)
    objective, collate = method_plan("sft", pad_id=tok.pad_token_id)
    return fit_and_save(model, tok, rows, objective, collate, "sft",
                        cfg, cfg.sft.optim, out_dir, logger, on_log, accelerator)


def run_preference(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                   out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None = None,
                   accelerator: Accelerator | None = None) -> TrainOutput:
    """DPO from the SFT model (or, with SFT off, the base model — an instruct model, say) against that model's
    precomputed log-probs, or ORPO (no reference) from base or SFT.
    With training.num_processes > 1 (and no accelerator given) it runs in that many processes."""
    if cfg.training.num_processes > 1 and accelerator is None:
        return launch_training("preference", cfg, prepared=prepared, base=base, sft=sft, out_dir=out_dir,
                               logger=logger, on_log=on_log)
    with training_scope(cfg, "preference"):
        return _preference_here(cfg, prepared, base, sft, out_dir, logger, on_log, accelerator)


def _preference_here(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                     out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None,
                     accelerator: Accelerator | None) -> TrainOutput:
    method = cfg.preference.method
    init = starting_model(cfg, base, sft)
    with accelerator.main_process_first() if accelerator else nullcontext():  # one writes the cache
        rows = training_rows(cfg, prepared, init, "train")
    optim = getattr(cfg, method).optim
    tok = load_tokenizer(init.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(init.path, trust_remote_code=cfg.model.trust_remote_code)
    objective, collate = method_plan(method, pad_id=tok.pad_token_id, beta=cfg.dpo.beta,
                                     loss_type=cfg.dpo.loss_type, label_smoothing=cfg.dpo.label_smoothing,
                                     rpo_alpha=cfg.dpo.rpo_alpha, lam=cfg.orpo.lam,
                                     orpo_nll_tokens=cfg.orpo.nll_tokens)
    make_evaluator = None
    if getattr(cfg, method).heldout_eval.every is not None:
        make_evaluator = functools.partial(heldout_evaluator, cfg, prepared, init, objective, collate, tok,
                                           out_dir / "best")
    return fit_and_save(model, tok, rows, objective, collate, method, cfg, optim, out_dir, logger, on_log,
                        accelerator, make_evaluator)


def starting_model(cfg: PipelineConfig, base: ModelRef, sft: TrainOutput | None) -> ModelRef:
    """The model preference training starts from: the SFT model when there is one, except for a method whose
    section says `init: base` (ORPO may start from the base model). A method with a reference (DPO) starts from,
    and is held to, the same model."""
    starts_from = getattr(getattr(cfg, cfg.preference.method), "init", "sft")
    return sft.model if (sft is not None and starts_from == "sft") else base


def training_rows(cfg: PipelineConfig, prepared: PreparedData, init: ModelRef, split: str) -> list[dict]:
    """A split's tokenized pairs for the configured method, with the starting model's log-probs where the method
    uses a reference (alignment/training/objectives.py METHODS)."""
    if method_spec(cfg.preference.method).uses_reference:
        return reference_annotated_pairs(cfg, prepared, init, split)
    return tokenized_rows(cfg, prepared, init, split)


def heldout_evaluator(cfg: PipelineConfig, prepared: PreparedData, init: ModelRef, objective: Objective,
                      collate: Callable[[list[dict]], dict[str, torch.Tensor]], tok: PreTrainedTokenizerBase, best_dir: Path,
                      model: torch.nn.Module) -> HeldoutEvaluator:
    """The preference stage's held-out evaluation (alignment/training/heldout.py) for the model about to train: the
    held-out pairs (DPO's with the starting model's log-probs, cached like the training pairs'), the held-out
    prompts for eval/kl and its reference: with LoRA the policy with its adapters off (no second copy),
    otherwise the starting model, loaded once."""
    settings = getattr(cfg, cfg.preference.method).heldout_eval
    rows = training_rows(cfg, prepared, init, "heldout")
    prompts = distinct_prompts(prepared.path("heldout"))[:settings.kl_prompts]
    reference = None
    if prompts and not hasattr(model, "disable_adapter"):  # full fine-tuning: the starting model itself
        reference = load_causal_lm(init.path, trust_remote_code=cfg.model.trust_remote_code)
        reference.requires_grad_(False)
        apply_plan(reference, stage_plan(cfg, "preference", model_device(reference)))
    return HeldoutEvaluator(settings, rows=rows, objective=objective, collate=collate, tokenizer=tok,
                            prompts=prompts, reference=reference, seed=cfg.run.seed, best_dir=best_dir)


def fit_and_save(model: torch.nn.Module, tok: PreTrainedTokenizerBase, rows: list[dict], objective: Objective,
                 collate: Callable[[list[dict]], dict[str, torch.Tensor]], method: str, cfg: PipelineConfig,
                 optim: OptimConfig, out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None,
                 accelerator: Accelerator | None = None,
                 make_evaluator: Callable[[torch.nn.Module], HeldoutEvaluator] | None = None) -> TrainOutput:
    """Train, then save the model from the main process (every process of a multi-process run gets here;
    only rank 0's record is used, the others carry no fingerprint). With `make_evaluator` (held-out evaluation
    during training), the saved model is the best evaluation's when early stopping is on."""
    acc = accelerator or make_accelerator(cfg.training)
    model = prepare_for_training(model, cfg.training)  # LoRA, activation checkpointing, compile
    if cfg.training.sharding == "fsdp2":  # after LoRA: the adapters are sharded with their layers
        model = shard_model(model, acc.device, acc.num_processes, cfg.training.mixed_precision)
    evaluator = make_evaluator(model) if make_evaluator is not None else None
    plan = stage_plan(cfg, "sft" if method == "sft" else "preference", acc.device)
    result = train(model, rows, objective=objective, collate=collate, optim=optim, output_dir=out_dir,
                   seed=cfg.run.seed, logger=logger, accelerator=acc, on_log=on_log, evaluator=evaluator,
                   plan=plan)
    trained = result.model if result.model is not None else model
    final_metrics = result.final_metrics
    if evaluator is not None:
        evaluator.restore_best(trained)
        final_metrics = {**final_metrics, **evaluator.summary(result.stopped_early_at)}
    model_dir = save_trained_model(acc, trained, tok, out_dir / "model")
    fingerprint = fingerprint_model(str(model_dir)) if acc.is_main_process else ""
    return TrainOutput(model=ModelRef(path=str(model_dir), fingerprint=fingerprint),
                       method=method, steps=result.steps, resumed_from_step=result.resumed_from_step,
                       final_metrics=final_metrics, seconds=result.seconds, tokens=result.tokens,
                       runtime=plan.params())


def tokenized_rows(cfg: PipelineConfig, prepared: PreparedData, model: ModelRef, split: str) -> list[dict]:
    """Token ids of one prepared split with the model's chat template (alignment/data/prepare.py: datasets.map,
    cached beside the prepared data, over-long rows truncated or rejected per data.truncation)."""
    tok = load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
    tokenized = tokenize_prepared(prepared.dir, tok, PrepareOptions.from_config(cfg.data, cfg.run.seed),
                                  splits=[split])
    return load_tokenized_rows(tokenized.splits[split].path)


def reference_annotated_pairs(cfg: PipelineConfig, prepared: PreparedData, reference: ModelRef,
                              split: str) -> list[dict]:
    """Tokenized pairs with the reference model's summed log-probs of chosen and rejected.

    Computed once per (token ids scored, reference model) and kept beside the prepared data and, when the
    run has S3 (storage/s3.py), at `s3://<bucket>/reference-logps/<split>-<key>.json`, so a beta sweep, a
    second method or a later run (another output folder, another worker) does not pay for the reference
    again; the reference model is freed before the policy trains."""
    rows = tokenized_rows(cfg, prepared, reference, split)
    key = stage_key(scored_ids_digest(rows), reference.fingerprint)
    cache = Path(prepared.dir) / "reference" / f"{split}-{key}.json"
    shared = shared_uri(f"reference-logps/{split}-{key}.json")  # None without S3
    if cache.is_file():
        cached = json.loads(cache.read_text())
    else:
        cached = read_json(shared) if shared else None
        if cached is None:
            ref_model = load_causal_lm(reference.path, trust_remote_code=cfg.model.trust_remote_code)
            tok = load_tokenizer(reference.path, trust_remote_code=cfg.model.trust_remote_code)
            chosen, rejected = reference_logps(ref_model, rows, tok.pad_token_id, batch_size=64,
                                               plan=stage_plan(cfg, "preference", model_device(ref_model)))
            del ref_model
            cached = {"chosen": chosen, "rejected": rejected, "reference": reference.fingerprint}
            if shared:
                write_json(shared, cached)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cached))
        tmp.replace(cache)
    if len(cached["chosen"]) != len(rows) or cached.get("reference") != reference.fingerprint:
        raise ValueError(f"reference log-probs cache {shared or cache} does not match the {len(rows)} {split} rows")
    for row, c, r in zip(rows, cached["chosen"], cached["rejected"], strict=True):
        row["ref_chosen_logps"], row["ref_rejected_logps"] = c, r
    return rows


def scored_ids_digest(rows: list[dict]) -> str:
    """SHA-256 of the token ids a reference scores, in order: the same for the same content wherever and
    however it was prepared (the prepared data's fingerprint also covers provenance such as file paths)."""
    digest = hashlib.sha256()
    for row in rows:
        for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
            ids = array("l", row[name])
            digest.update(len(ids).to_bytes(8, "little"))
            digest.update(ids.tobytes())
    return digest.hexdigest()
