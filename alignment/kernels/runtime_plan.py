"""How a model runs on this machine: one immutable `RuntimePlan`, derived once per stage and applied once per model.

The plan's fields (docs/performance.md, "The runtime plan"):

* `fused_ops`: the memory-lean RMSNorm / SwiGLU MLP (alignment/kernels/fused_ops.py) instead of transformers' modules
  (training.lean_modules).
* `onednn_linear`: fp32 products on CPU through oneDNN (alignment/kernels/cpu_matmul.py): the model's nn.Linear modules,
  its chunked LM head and lean MLP (training.onednn_linear; unset, `cpu_matmul.pays_here()`). Off on accelerators.
* `cpu_attention`: alignflow's SDPA with grouped heads on CPU (alignment/kernels/attention.py). Off on accelerators.
* `pack_rows`: batches through the model as one row without padding, where the model runs the CPU attention
  (alignment/training/logprobs.py `pack_rows`).
* `full_logits`: the LM head at every position (the plain path) instead of the chunked head (alignment/kernels/lm_head.py).
* `mmap_threshold_mib`: the allocator setting the stage runs under on CPU (training.cpu_mmap_threshold_mib,
  alignment/kernels/host_memory.py), None for glibc's default and on accelerators.

`plan_for` derives the plan from the training config and the device; `apply_plan` switches a model's modules as
the plan says (or gives them back where it says off) and records the plan on the module holding the weights
(`unwrap`, below DDP and torch.compile wrappers) as the attribute `_alignflow_plan`: an attribute rather than a
weak map, so that the plan goes with the module through wrappers and copies. Computing (alignment/training/logprobs.py
`token_logprobs`) only reads it (`plan_of`); a model with no plan runs `PLAIN`: transformers' own modules,
torch's products, padded rows, so library users and tests that never apply a plan get the same values, slower.

A model behind a wrapper that shards or moves its weights (FSDP2, DeepSpeed: `unwrap` gives None) takes no plan
and runs plain; a compiled model keeps torch's own linears whatever the plan (torch.compile traces them).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import nn

from alignment.config import TrainingConfig
from alignment.kernels.attention import NAME as CPU_ATTENTION
from alignment.kernels.attention import use_cpu_attention
from alignment.kernels.cpu_matmul import keep_torch_linears, use_onednn_linears, wanted
from alignment.kernels.fused_ops import keep_plain_modules, use_fused_ops
from alignment.kernels.lm_head import compiled, unwrap

ATTRIBUTE = "_alignflow_plan"  # set on the unwrapped model by `apply_plan`


@dataclass(frozen=True)
class RuntimePlan:
    """How a model is run here (module docstring). The defaults are `PLAIN`."""

    fused_ops: bool = False
    onednn_linear: bool = False
    cpu_attention: bool = False
    pack_rows: bool = False
    full_logits: bool = False
    mmap_threshold_mib: int | None = None

    def params(self) -> dict[str, str]:
        """MLflow params: {"runtime/fused_ops": "true", ..., "runtime/mmap_threshold_mib": "1" or "none"}."""
        return {f"runtime/{f.name}": _text(getattr(self, f.name)) for f in fields(self)}


PLAIN = RuntimePlan()  # a model with no plan: transformers' modules, torch's products, padded rows, chunked head


def _text(value: object) -> str:
    if value is None:
        return "none"
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_for(training: TrainingConfig, device: torch.device | str,
             stage: Literal["sft", "preference"] = "preference") -> RuntimePlan:
    """The plan of a stage training with `training` on `device` (its reference and evaluation passes included)."""
    cpu = torch.device(device).type == "cpu"
    return RuntimePlan(fused_ops=training.lean_modules, onednn_linear=cpu and wanted(training.onednn_linear),
                       cpu_attention=cpu, pack_rows=cpu, full_logits=False,
                       mmap_threshold_mib=training.mmap_threshold_mib(stage) if cpu else None)


def apply_plan(model: nn.Module, plan: RuntimePlan) -> nn.Module:
    """Switch `model`'s modules as `plan` says, give back transformers' / torch's own where it says off, and
    record the plan on the model (module docstring); returns `model`. Call it once a stage has set the model up
    (after LoRA and torch.compile, before its first forward); applying another plan later switches again."""
    inner = unwrap(model)
    if inner is None:  # sharded or moved weights: runs plain, as before any plan
        return model
    if plan.fused_ops:
        use_fused_ops(inner)
    else:
        keep_plain_modules(inner)
    onednn = plan.onednn_linear and not compiled(model)  # compile traces torch's own linears
    if onednn:
        use_onednn_linears(inner)
    else:
        keep_torch_linears(inner)
    attention = False
    if plan.cpu_attention:
        attention = use_cpu_attention(inner)  # a model not on CPU or not on transformers' "sdpa" is left as it is
    elif getattr(getattr(inner, "config", None), "_attn_implementation", None) == CPU_ATTENTION:
        inner.set_attn_implementation("sdpa")
    # what took effect, which `plan_of` reads and the stages record: a switch the model could not take is off
    object.__setattr__(inner, ATTRIBUTE, replace(plan, onednn_linear=onednn, cpu_attention=attention))
    return model


def plan_of(model: nn.Module) -> RuntimePlan:
    """The plan applied to `model` (through its wrappers), `PLAIN` where none was. Reads only."""
    inner = unwrap(model)
    plan = getattr(inner, ATTRIBUTE, None) if inner is not None else None
    return plan if isinstance(plan, RuntimePlan) else PLAIN
