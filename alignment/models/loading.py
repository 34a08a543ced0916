"""Loading models and tokenizers by hub id or local path, with safe defaults, and fingerprinting them."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alignment.config import TrainingConfig

HASH_CONTENT_LIMIT = 1 << 30  # hash file contents up to 1 GiB; above that, name + size + mtime


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says which and why."""


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load tokenizer {name_or_path!r}: {first_line(err)}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(name_or_path: str, *, trust_remote_code: bool = False,
                   dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """AutoModelForCausalLM.from_pretrained with safetensors only and remote code off unless allowed."""
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def fingerprint_model(name_or_path: str) -> str:
    """Content hash of a local model directory (weights, config, tokenizer; hidden files skipped); the id
    itself for a hub id."""
    path = Path(name_or_path)
    if not path.is_dir():
        return hashlib.sha256(f"hub:{name_or_path}".encode()).hexdigest()
    digest = hashlib.sha256()
    files = (p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts))  # skip caches' hidden metadata
    for file in sorted(files):
        digest.update(str(file.relative_to(path)).encode())
        stat = file.stat()
        if stat.st_size <= HASH_CONTENT_LIMIT:
            with file.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
        else:
            digest.update(json.dumps([stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()


def save_model(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> Path:
    """Save weights (safetensors) and tokenizer; written to a temporary folder, then renamed."""
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def prepare_for_training(model: torch.nn.Module, training: TrainingConfig) -> torch.nn.Module:
    """Apply `training`'s model settings (alignment.config.TrainingConfig): activation checkpointing, LoRA
    adapters (peft; the base weights frozen), torch.compile. Returns the module to train. How its modules run
    here (lean_modules, onednn_linear) is the runtime plan's, applied by the trainer (alignment/kernels/runtime_plan.py)."""
    if training.gradient_checkpointing:
        # Non-reentrant checkpointing: gradients reach adapters even where the inputs need none (frozen base).
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if training.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = training.lora
        targets = lora.target_modules if isinstance(lora.target_modules, str) else list(lora.target_modules)
        try:
            model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     task_type="CAUSAL_LM", target_modules=targets))
        except ValueError as err:  # e.g. no module of that name
            linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                             if isinstance(module, torch.nn.Linear)})
            raise ValueError(f"training.lora.target_modules={targets!r} does not fit this model "
                             f"({first_line(err)}); its linear layers are named {', '.join(linear)}") from None
    if training.compile:
        model = torch.compile(model, dynamic=True)
    return model


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model to save: compile's wrapper removed and LoRA adapters merged into the base weights (an
    ordinary transformers model that every later stage loads as any other)."""
    model = getattr(model, "_orig_mod", model)  # torch.compile's OptimizedModule
    if hasattr(model, "merge_and_unload"):  # a peft model
        model = model.merge_and_unload()
    if getattr(model, "is_activation_checkpointing", False):
        model.activation_checkpointing_disable()
        model.config.use_cache = True
    return model
