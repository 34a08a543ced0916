"""The base model stage: a model source resolved (hub id, folder, S3, GGUF) or the tiny offline model built
from the prepared data's texts."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alignment.config import PipelineConfig
from alignment.data import read_jsonl
from alignment.models.loading import fingerprint_model
from alignment.models.source import resolve_model
from alignment.models.tiny import make_tiny_model
from alignment.records import ModelRef, PreparedData


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
