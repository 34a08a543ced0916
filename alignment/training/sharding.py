"""Sharded data-parallel training with FSDP2 (`training.sharding=fsdp2`, docs/performance.md).

Every decoder layer, then the root (embeddings, final norm, LM head), is wrapped with torch's
`torch.distributed.fsdp.fully_shard` over a 1-D device mesh of all processes: each process keeps 1/N of every
parameter, gradient and optimizer state (`DTensor`s) and all-gathers one layer's weights at a time for its
forward and backward; gradients are reduce-scattered (averaged, as DDP does). The same code runs on CPU (gloo,
under torchrun) and CUDA (NCCL, under `accelerate launch`).

Sharded directly, not through accelerate's FSDP2 plugin: accelerate 1.15 turns the plugin on only for GPU-like
multi-device types; with `Accelerator(cpu=True)` under torchrun (MULTI_CPU) it ignores the plugin and wraps the
model in DDP. The accelerator still provides the process group, device, backward, reductions and the prepared
optimizer and scheduler; only the model skips `accelerator.prepare`.

Checkpoints go through `torch.distributed.checkpoint` (DCP): model and optimizer state as each process holds
it (`get_state_dict`), written by every process into `<checkpoint>/dcp`; DCP reshards on load, so a checkpoint
written by N processes resumes in M (M = 1 included: an unsharded model in a process without a process group
loads it the same way). The trained model is saved from a full state dict gathered to rank 0 on CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from alignment.models.loading import plain_model, save_model

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LRScheduler
    from transformers import PreTrainedTokenizerBase

DCP_DIR = "dcp"  # a checkpoint's DCP folder (model and optimizer)
SCHEDULER_FILE = "scheduler.pt"  # the learning-rate scheduler's state, the same on every process


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def shard_model(model: nn.Module, device: torch.device, num_processes: int,
                mixed_precision: str = "no") -> nn.Module:
    """fully_shard each decoder layer, then the root, over all `num_processes` processes (in place; returns
    the model). bf16: parameters all-gathered and computed in bf16, gradients reduced in fp32."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (num_processes,))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if mixed_precision == "bf16" else MixedPrecisionPolicy())
    model.to(device)
    layers = decoder_layers(model)
    if not layers:
        raise ValueError(f"training.sharding=fsdp2: found no decoder layers in {type(model).__name__} "
                         f"(no module of the classes in its _no_split_modules)")
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a transformers model (through peft): modules of the classes the model names in
    `_no_split_modules` (LlamaDecoderLayer, ...), the unit transformers itself never splits across devices."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in model.modules() if type(m).__name__ in names]


def scalar(value: Any) -> Any:
    """A gradient norm as a plain tensor: clip_grad_norm_ over DTensor gradients returns a DTensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


# ---- checkpoints -------------------------------------------------------------------------------------------


def save_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, folder: Path,
               main: bool) -> None:
    """Every process writes its shards of model and optimizer state to `folder/dcp`; the main process the
    scheduler's state. `optimizer` is the torch optimizer itself (not accelerate's wrapper)."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(folder / DCP_DIR))
    if main:
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)


def load_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, folder: Path) -> None:
    """Load a checkpoint `save_state` wrote, resharded to this run's processes (sharded or not)."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(folder / DCP_DIR), no_dist=not torch.distributed.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=False))


def is_dcp_checkpoint(folder: Path) -> bool:
    return (folder / DCP_DIR).is_dir()


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRScheduler, folder: Path) -> None:
    """Load an unsharded run's checkpoint (accelerate's `save_state`: model.safetensors, optimizer.bin with
    the optimizer state keyed by position, scheduler.bin) into a sharded model: every process reads the full
    state and keeps its shards."""
    from safetensors.torch import load_file

    full = StateDictOptions(full_state_dict=True, strict=False)  # a tied head may be stored once
    weights = {k.removeprefix("_orig_mod."): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    absent = [name for name, _ in model.named_parameters() if name not in weights]  # a tied head counted once
    if absent:
        raise ValueError(f"checkpoint {folder} does not fit this model: no {', '.join(absent[:3])}")
    set_model_state_dict(model, weights, options=full)
    saved = torch.load(folder / "optimizer.bin", weights_only=False)
    names = [name for name, p in model.named_parameters() if p.requires_grad]  # the order setup() gave them
    by_id = dict(enumerate(names))
    state = {"state": {by_id[i]: s for i, s in saved["state"].items()},
             "param_groups": [{**g, "params": [by_id[i] for i in g["params"]]} for g in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.bin", weights_only=False))


# ---- the trained model -------------------------------------------------------------------------------------


def save_sharded_model(model: nn.Module, tokenizer: PreTrainedTokenizerBase, out_dir: Path, main: bool) -> Path:
    """Gather the full state dict to the main process's CPU memory (a collective: every process calls this),
    load it into an unsharded copy of the model built on the meta device (LoRA adapters merged by peft as in
    the unsharded path) and save that as a Hugging Face directory (temporary folder, then renamed)."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if main:
        save_model(plain_model(unsharded_copy(model, state)), tokenizer, out_dir)
    return out_dir


def unsharded_copy(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A plain (unsharded) model of the same architecture (and LoRA adapters) holding `state`, built without
    allocating weights first."""
    from transformers import AutoModelForCausalLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with torch.device("meta"):
        copy = AutoModelForCausalLM.from_config(base.config, dtype=next(iter(state.values())).dtype)
    if hasattr(model, "peft_config"):
        from peft import get_peft_model

        copy = get_peft_model(copy, model.peft_config["default"])
    copy.load_state_dict(state, assign=True, strict=False)
    (copy.get_base_model() if hasattr(copy, "get_base_model") else copy).tie_weights()  # assign untied the head
    missing = [name for name, p in copy.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"sharded save: the gathered state dict lacks {missing[:5]}")
    return copy
