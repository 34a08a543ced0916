"""The pipeline's ML stages as plain functions: prepare data, build the base model, SFT, DPO/ORPO.

Each takes the config and the small records of earlier stages (paths and fingerprints, never large
objects) and returns its own record, so a stage can run in another process or on another machine.
Nothing here knows about Prefect or MLflow; metrics go through the `MetricsLogger` protocol.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from alignment import quicktask
from alignment.config import PipelineConfig
from alignment.data import write_jsonl
from alignment.logprobs import reference_logps
from alignment.models import fingerprint_model, load_causal_lm, load_tokenizer, prepare_for_training
from alignment.objectives import Objective, method_plan
from alignment.prepare import PrepareOptions, load_tokenized_rows, prepare, tokenize_prepared
from alignment.s3io import fetch_folder, is_s3_uri, read_json, shared_uri, write_json
from alignment.tiny_model import make_tiny_model
from alignment.tracking import MetricsLogger
from alignment.trainer import train

CODE_VERSION = "1"  # bump when a stage's output for the same inputs changes
ProgressCallback = Callable[[int, int, dict[str, float]], None]


class PreparedData(BaseModel):
    dir: str  # holds sft.jsonl, train.jsonl, heldout.jsonl (canonical records) and report.json
    fingerprint: str
    counts: dict[str, int]
    report: dict[str, Any]

    def path(self, split: str) -> Path:
        return Path(self.dir) / f"{split}.jsonl"


class ModelRef(BaseModel):
    path: str  # hub id or local directory
    fingerprint: str


class TrainOutput(BaseModel):
    model: ModelRef
    method: str
    steps: int
    resumed_from_step: int
    final_metrics: dict[str, float]
    seconds: float
    tokens: int


def stage_key(*parts: Any) -> str:
    """Content key of a stage: its config section, its inputs' fingerprints and the code version."""
    blob = json.dumps([CODE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
    (alignment/prepare.py). The quickstart's generated files go through the same loader as users' data."""
    d = cfg.data
    if d.source == "quickstart":
        raw = write_quickstart_files(cfg, out_dir / "raw")
        sources = {"sft": str(raw["sft"]), "train": str(raw["train"]), "heldout": str(raw["heldout"])}
    else:
        sources = {"sft": d.sft_path, "train": d.train_path, "heldout": d.heldout_path}
    result = prepare(sources, out_dir / "prepared", PrepareOptions.from_config(d, cfg.run.seed))
    return PreparedData(dir=result.dir, fingerprint=stage_key(result.fingerprints), counts=result.counts,
                        report=result.report)


def corpus_texts(prepared: PreparedData) -> Iterable[str]:
    for row in read_jsonl(prepared.path("sft")):
        yield from (m["content"] for m in row["messages"])
    for split in ("train", "heldout"):
        for row in read_jsonl(prepared.path(split)):
            for key in ("prompt", "chosen", "rejected"):
                yield from (m["content"] for m in row[key])


# ---- model -----------------------------------------------------------------------------------------------


def local_model_path(name_or_path: str, cache_dir: str | None = None) -> str:
    """Hub ids and local folders as given; an s3:// model folder is downloaded (verified, cached) first."""
    if is_s3_uri(name_or_path):
        return str(fetch_folder(name_or_path, cache_dir))
    return name_or_path


def build_base_model(cfg: PipelineConfig, prepared: PreparedData, out_dir: Path) -> ModelRef:
    """The configured model (hub id or local path), or the tiny Llama made from the data's corpus."""
    if cfg.model.name_or_path:
        path = local_model_path(cfg.model.name_or_path, cfg.data.cache_dir)
        return ModelRef(path=path, fingerprint=fingerprint_model(path))
    t = cfg.model.tiny
    path = make_tiny_model(out_dir / "base_model", list(corpus_texts(prepared)), vocab_size=t.vocab_size,
                           hidden_size=t.hidden_size, num_layers=t.num_layers, num_heads=t.num_heads,
                           intermediate_size=t.intermediate_size,
                           max_position_embeddings=t.max_position_embeddings, seed=cfg.run.seed)
    return ModelRef(path=str(path), fingerprint=fingerprint_model(str(path)))


# ---- training --------------------------------------------------------------------------------------------


def run_sft(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, out_dir: Path, logger: MetricsLogger,
            on_log: ProgressCallback | None = None, accelerator: Any = None) -> TrainOutput:
    """Supervised fine-tuning with the chat template, loss on assistant tokens only. With
    training.num_processes > 1 (and no accelerator given) it runs in that many processes (alignment/launch.py)."""
    if cfg.training.num_processes > 1 and accelerator is None:
        from alignment.launch import launch_training
        return launch_training("sft", cfg, prepared=prepared, base=base, out_dir=out_dir, logger=logger,
                               on_log=on_log)
    tok = load_tokenizer(base.path, trust_remote_code=cfg.model.trust_remote_code)
    with accelerator.main_process_first() if accelerator else nullcontext():  # one writes the token cache
        rows = tokenized_rows(cfg, prepared, base, "sft")
    model = load_causal_lm(base.path, trust_remote_code=cfg.model.trust_remote_code)
    objective, collate = method_plan("sft", pad_id=tok.pad_token_id)
    return fit_and_save(model, tok, rows, objective, collate, "sft",
                        cfg, cfg.sft.optim, out_dir, logger, on_log, accelerator)


def run_preference(cfg: PipelineConfig, prepared: PreparedData, base: ModelRef, sft: TrainOutput | None,
                   out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None = None,
                   accelerator: Any = None) -> TrainOutput:
    """DPO from the SFT model against its precomputed log-probs, or ORPO (no reference) from base or SFT.
    With training.num_processes > 1 (and no accelerator given) it runs in that many processes."""
    if cfg.training.num_processes > 1 and accelerator is None:
        from alignment.launch import launch_training
        return launch_training("preference", cfg, prepared=prepared, base=base, sft=sft, out_dir=out_dir,
                               logger=logger, on_log=on_log)
    method = cfg.preference.method
    if method == "dpo":
        d = cfg.dpo
        if sft is None:
            raise ValueError("DPO needs the SFT model as its reference")
        with accelerator.main_process_first() if accelerator else nullcontext():  # one writes the cache
            rows = reference_annotated_pairs(cfg, prepared, sft.model, "train")
        init: ModelRef = sft.model
        optim = d.optim
    else:
        init = sft.model if (cfg.orpo.init == "sft" and sft is not None) else base
        with accelerator.main_process_first() if accelerator else nullcontext():
            rows = tokenized_rows(cfg, prepared, init, "train")
        optim = cfg.orpo.optim
    tok = load_tokenizer(init.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(init.path, trust_remote_code=cfg.model.trust_remote_code)
    objective, collate = method_plan(method, pad_id=tok.pad_token_id, beta=cfg.dpo.beta,
                                     loss_type=cfg.dpo.loss_type, label_smoothing=cfg.dpo.label_smoothing,
                                     lam=cfg.orpo.lam, orpo_nll_tokens=cfg.orpo.nll_tokens)
    return fit_and_save(model, tok, rows, objective, collate, method, cfg, optim, out_dir, logger, on_log,
                        accelerator)


def fit_and_save(model: torch.nn.Module, tok: Any, rows: list[dict], objective: Objective,
                 collate: Callable[[list[dict]], dict[str, torch.Tensor]], method: str, cfg: PipelineConfig,
                 optim: Any, out_dir: Path, logger: MetricsLogger, on_log: ProgressCallback | None,
                 accelerator: Any = None) -> TrainOutput:
    """Train, then save the model from the main process (every process of a multi-process run gets here;
    only rank 0's record is used, the others carry no fingerprint)."""
    from alignment.launch import make_accelerator, save_trained_model

    acc = accelerator or make_accelerator(cfg.training)
    model = prepare_for_training(model, cfg.training)  # LoRA, activation checkpointing, compile
    result = train(model, rows, objective=objective, collate=collate, optim=optim, output_dir=out_dir,
                   seed=cfg.run.seed, logger=logger, accelerator=acc, on_log=on_log)
    model_dir = save_trained_model(acc, result.model if result.model is not None else model, tok, out_dir / "model")
    fingerprint = fingerprint_model(str(model_dir)) if acc.is_main_process else ""
    return TrainOutput(model=ModelRef(path=str(model_dir), fingerprint=fingerprint),
                       method=method, steps=result.steps, resumed_from_step=result.resumed_from_step,
                       final_metrics=result.final_metrics, seconds=result.seconds, tokens=result.tokens)


def tokenized_rows(cfg: PipelineConfig, prepared: PreparedData, model: ModelRef, split: str) -> list[dict]:
    """Token ids of one prepared split with the model's chat template (alignment/prepare.py: datasets.map,
    cached beside the prepared data, over-long rows truncated or rejected per data.truncation)."""
    tok = load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
    tokenized = tokenize_prepared(prepared.dir, tok, PrepareOptions.from_config(cfg.data, cfg.run.seed),
                                  splits=[split])
    return load_tokenized_rows(tokenized.splits[split].path)


def reference_annotated_pairs(cfg: PipelineConfig, prepared: PreparedData, reference: ModelRef,
                              split: str) -> list[dict]:
    """Tokenized pairs with the reference model's summed log-probs of chosen and rejected.

    Computed once per (token ids scored, reference model) and kept beside the prepared data and, when the
    run has S3 (alignment/s3io.py), at `s3://<bucket>/reference-logps/<split>-<key>.json`, so a beta sweep, a
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
            chosen, rejected = reference_logps(ref_model, rows, tok.pad_token_id, batch_size=64)
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
