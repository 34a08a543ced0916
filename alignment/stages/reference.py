"""Tokenized rows for a stage, and the reference model's log-probs of every pair, computed once and cached
beside the prepared data and in S3."""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Callable
from pathlib import Path

from alignment.config import PipelineConfig
from alignment.data.prepare import PrepareOptions, load_tokenized_rows, tokenize_prepared
from alignment.models.loading import load_causal_lm, load_tokenizer
from alignment.records import ModelRef, PreparedData
from alignment.stages.keys import stage_key
from alignment.stages.runtime import model_device, stage_plan
from alignment.training.logprobs import reference_logps
from storage.s3 import read_json, shared_uri, write_json


def tokenized_rows(cfg: PipelineConfig, prepared: PreparedData, model: ModelRef, split: str) -> list[dict]:
    """Token ids of one prepared split with the model's chat template (alignment/data/prepare.py: datasets.map,
    cached beside the prepared data, over-long rows truncated or rejected per data.truncation)."""
    tok = load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
    tokenized = tokenize_prepared(prepared.dir, tok, PrepareOptions.from_config(cfg.data, cfg.run.seed),
                                  splits=[split])
    return load_tokenized_rows(tokenized.splits[split].path)


def reference_annotated_pairs(cfg: PipelineConfig, prepared: PreparedData, reference: ModelRef,
                              split: str, rows_from_pairs: Callable[[list[dict]], list[dict]] | None = None) -> list[dict]:
    """Tokenized pairs with the reference model's summed log-probs of chosen and rejected.

    Computed once per (token ids scored, reference model) and kept beside the prepared data and, when the
    run has S3 (storage/s3.py), at `s3://<bucket>/reference-logps/<split>-<key>.json`, so a beta sweep, a
    second method or a later run (another output folder, another worker) does not pay for the reference
    again; the reference model is freed before the policy trains. `rows_from_pairs` (a method's rows, e.g.
    KTO's `unpair`) turns the pairs into rows of the same layout before they are scored."""
    rows = tokenized_rows(cfg, prepared, reference, split)
    if rows_from_pairs is not None:
        rows = rows_from_pairs(rows)
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
