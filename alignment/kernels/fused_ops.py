"""Memory-lean RMSNorm and SwiGLU MLP for Llama-family models: the same values, fewer tensors kept for backward.

At SmolLM2-135M's shape (hidden 576, intermediate 1536) transformers' modules keep, per token and decoder
layer, 11,136 fp32 values for the backward pass (measured with the autograd graph's saved tensors on 4 HH-like
pairs: docs/performance.md): of these, the MLP keeps 6,144 (silu's input `gate`, its output, `up`, and the
product that down_proj reads) and the two RMSNorms 2,304 (each its fp32 input and the normalised input, before
the weight; the linears after it keep the output). The body's activations are most of DPO's peak memory.

* `SwiGLUDown`: down_proj(silu(gate) * up) as one autograd function that keeps only `gate` and `up`; backward
  recomputes silu(gate) and the product (elementwise, cheap) for down_proj's weight gradient. Per token and
  layer: 3,072 values instead of 6,144. Where down_proj is not a plain `nn.Linear` (a LoRA-adapted one, say)
  `SiLUMul` is used instead: silu(gate) * up keeping `gate` and `up`, the product kept by down_proj itself
  (4,608 values). Liger-kernel's LigerSiLUMulFunction is the same idea as a Triton kernel; here it is plain torch.
* `RMSNormFunction`: weight * (x * rstd), rstd = (mean(x^2) + eps)^-1/2 per row, keeping x and the (rows, 1)
  rstd only (576 values per norm instead of 1,152); backward: dx = rstd * (dxh - xh * mean(dxh * xh)) with
  xh = x * rstd and dxh = grad * weight.

Forward values are computed with the same operations as transformers' modules (bitwise equal); gradients agree
to rounding (tests/alignment/test_fused_ops.py, at SmolLM2's shape). `use_fused_ops` (called by the runtime plan,
alignment/kernels/runtime_plan.py, where its fused_ops is on) switches the modules of
known classes (their forward is the same source as LlamaRMSNorm's / LlamaMLP's, and the MLP's activation is
SiLU: nn.SiLU or transformers' SiLUActivation) by setting their instance's `forward`; everything else keeps its own. Under autocast, or for inputs
whose dtype differs from the weights', the patched forward calls the module's own. Not saved with the model.
SwiGLUDown's products go through oneDNN (alignment/kernels/cpu_matmul.py) where the MLP's down_proj was switched to it.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from alignment.kernels.cpu_matmul import mm_nt, uses_onednn

# classes whose forward is, source for source, transformers' LlamaRMSNorm / LlamaMLP (transformers 5.23)
NORM_CLASSES = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm")
MLP_CLASSES = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP")


class RMSNormFunction(torch.autograd.Function):
    """weight * (x.float() * rstd).to(x.dtype), rstd = rsqrt(mean(x.float()^2, -1) + eps); keeps x, rstd."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        # x (..., H), weight (H,) -> (..., H); the operations of transformers' LlamaRMSNorm.forward
        xf = x.to(torch.float32)
        rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)  # (..., 1)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (xf * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight, rstd = ctx.saved_tensors
        xh = x.to(torch.float32) * rstd  # (..., H) normalised input, recomputed
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad * xh.to(x.dtype)).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        grad_x = None
        if ctx.needs_input_grad[0]:
            dxh = (grad * weight).to(torch.float32)  # (..., H) d loss / d xh
            grad_x = (rstd * (dxh - xh * (dxh * xh).mean(-1, keepdim=True))).to(x.dtype)
        return grad_x, grad_w, None


class SiLUMul(torch.autograd.Function):
    """silu(gate) * up, keeping gate and up only (silu recomputed in backward)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up  # (..., I)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        gate, up = ctx.saved_tensors
        return silu_mul_grads(gate, up, F.silu(gate), grad)


class SwiGLUDown(torch.autograd.Function):
    """F.linear(silu(gate) * up, weight, bias), keeping gate and up only (the product recomputed in backward)."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None, onednn: bool = False) -> torch.Tensor:
        # gate, up (..., I); weight (H, I); bias (H,) or None -> (..., H); onednn: products through oneDNN
        ctx.save_for_backward(gate, up, weight)
        ctx.has_bias, ctx.onednn = bias is not None, onednn
        return mm_nt(F.silu(gate) * up, weight, bias, onednn=onednn)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        gate, up, weight = ctx.saved_tensors
        need_gate, need_up, need_w, need_b = ctx.needs_input_grad[:4]
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, H)
        grad_w = grad_b = grad_gate = grad_up = None
        silu = F.silu(gate)  # (..., I), recomputed
        if need_w:
            product = (silu * up).reshape(-1, gate.shape[-1])  # (N, I), recomputed
            grad_w = mm_nt(g2.t(), product.t(), onednn=ctx.onednn)  # (H, I): g2.T @ product
            del product
        if need_b and ctx.has_bias:
            grad_b = g2.sum(0)
        if need_gate or need_up:
            grad_gate, grad_up = silu_mul_grads(gate, up, silu, mm_nt(grad, weight.t(), onednn=ctx.onednn))  # grad @ weight
        return grad_gate, grad_up, grad_w, grad_b, None


def silu_mul_grads(gate: torch.Tensor, up: torch.Tensor, silu: torch.Tensor,
                   grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """d/d gate and d/d up of silu(gate) * up given the product's gradient and silu(gate): the kernels autograd
    runs for the plain expression (mul's backward, then aten.silu_backward: grad * s * (1 + x * (1 - s)),
    s = sigmoid(x), in one pass), so the same values."""
    grad_up = grad * silu
    grad_gate = torch.ops.aten.silu_backward(grad * up, gate)
    return grad_gate, grad_up


def fused_rmsnorm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    if not lean_applies(hidden_states, self.weight):
        return type(self).forward(self, hidden_states)
    return RMSNormFunction.apply(hidden_states, self.weight, self.variance_epsilon)


def fused_mlp_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)  # adapters (LoRA), hooks and DDP act on the linears as usual
    if not lean_applies(gate, up):
        return self.down_proj(self.act_fn(gate) * up)
    down = self.down_proj
    if type(down) is nn.Linear and not down._forward_hooks and not down._forward_pre_hooks \
            and down.weight.dtype == gate.dtype:
        return SwiGLUDown.apply(gate, up, down.weight, down.bias, uses_onednn(down))
    return down(SiLUMul.apply(gate, up))


def lean_applies(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The lean functions run where nothing casts behind their back: no autocast, one dtype."""
    return a.dtype == b.dtype and not torch.is_autocast_enabled(a.device.type)


def is_silu(act: object) -> bool:
    """torch's nn.SiLU or transformers' SiLUActivation (ACT2FN["silu"], whose forward is F.silu)."""
    return type(act) is nn.SiLU or type(act).__module__ + "." + type(act).__name__ == (
        "transformers.activations.SiLUActivation")


def keep_plain_modules(model: nn.Module) -> None:
    """Give back the modules' own forward where `use_fused_ops` switched it (a plan with fused_ops off)."""
    for module in model.modules():
        if getattr(vars(module).get("forward"), "__func__", None) in (fused_rmsnorm_forward, fused_mlp_forward):
            del module.forward


def use_fused_ops(model: nn.Module) -> int:
    """Switch the RMSNorm and SwiGLU MLP modules of known classes in `model` to the lean functions above;
    returns how many were switched (0 for models they do not know). Idempotent."""
    switched = 0
    for module in model.modules():
        name = type(module).__name__
        if name in NORM_CLASSES and hasattr(module, "variance_epsilon") and isinstance(
                getattr(module, "weight", None), torch.Tensor):
            module.forward = types.MethodType(fused_rmsnorm_forward, module)
            switched += 1
        elif name in MLP_CLASSES and is_silu(getattr(module, "act_fn", None)) and all(
                hasattr(module, n) for n in ("gate_proj", "up_proj", "down_proj")):
            module.forward = types.MethodType(fused_mlp_forward, module)
            switched += 1
    return switched
