"""Checks that run before any training: the data loads and validates, the model and tokenizer load and the
tokenizer has a usable chat template. Failures are the user's to fix, so they come as one clear message."""

from __future__ import annotations

from alignment.config import PipelineConfig
from alignment.data import load_preferences, load_sft
from alignment.data.tokenization import split_response
from alignment.models.loading import load_tokenizer
from alignment.models.source import local_model_path


def check_inputs(cfg: PipelineConfig) -> None:
    """Raise DataError / ModelLoadError / TemplateError naming what is wrong; return None when all is well."""
    d = cfg.data
    if d.source == "files":
        load_sft(d.sft_path, policy=d.on_invalid)
        load_preferences(d.train_path, fmt=d.format, policy=d.on_invalid)
        if d.heldout_path:
            load_preferences(d.heldout_path, fmt=d.format, policy=d.on_invalid)
    if cfg.model.name_or_path:
        path = local_model_path(cfg.model.name_or_path, cfg.data.cache_dir)
        tok = load_tokenizer(path, trust_remote_code=cfg.model.trust_remote_code)
        split_response(tok, [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}])
