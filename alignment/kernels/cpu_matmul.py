"""fp32 matrix products on CPU through oneDNN instead of torch's default BLAS.

torch's CPU wheels multiply fp32 matrices with MKL, whose kernels choose their instruction set by CPU vendor:
on AMD processors they run AVX2 code even where the CPU has AVX-512. oneDNN (shipped inside torch as
`torch.ops.mkldnn`) dispatches on the CPU's features. Measured on this project's 2-core AMD EPYC machines
(AVX-512), one thread, the matrix shapes of SmolLM2-135M's training step (1008 x 576 by 576 x 1536): MKL
97-106 GFLOP/s, oneDNN 194-236 GFLOP/s for the forward product and both backward ones
(docs/performance.md). Products are fp32 with fp32 accumulation either way; the two libraries sum in a
different order, so results agree to float rounding (~1e-6 relative), not bit for bit.

`linear` is F.linear with that forward and a backward of two more oneDNN products; `mm_nt` is a @ b.T.
They fall back to torch's own ops where oneDNN does not apply: not CPU, not fp32, autocast on, inside
torch.compile (which traces torch's ops), torch without oneDNN or with `torch.backends.mkldnn` disabled, a
CPU other than x86-64. Which model uses them is the model's runtime plan (alignment/kernels/runtime_plan.py,
`onednn_linear`), applied once per model: `use_onednn_linears` switches its nn.Linear modules to `linear`; the
chunked LM head (alignment/kernels/lm_head.py) passes the plan's setting to `mm_nt`, the lean MLP (alignment/kernels/fused_ops.py)
that of its down_proj (`uses_onednn`). There is no process-wide switch. Left unset, training.onednn_linear is `pays_here()`: on for x86-64 CPUs with AVX-512
that are not Intel's. On an Intel Xeon with AVX-512 (family 6, model 207) MKL runs its own AVX-512 kernels and
was the faster of the two at these shapes, and on an AMD EPYC with AVX2 only (family 25, model 1) both libraries
run AVX2 code and MKL's was faster (docs/performance.md): those CPUs keep torch's products.
"""

from __future__ import annotations

import functools
import platform
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


def _op():
    """oneDNN's linear, on x86-64 only (measured there; on ARM the default BLAS may well be faster)."""
    if platform.machine().lower() not in ("x86_64", "amd64") or not torch.backends.mkldnn.is_available():
        return None
    return getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)


_LINEAR = _op()


def applies(*tensors: torch.Tensor | None) -> bool:
    """oneDNN runs these: every tensor on CPU in fp32, no autocast, and the op there."""
    if _LINEAR is None or not torch.backends.mkldnn.enabled or torch.is_autocast_enabled("cpu") \
            or torch.compiler.is_compiling():
        return False
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors)


def _strided(t: torch.Tensor) -> torch.Tensor:
    """`t` itself where oneDNN can read it in place: contiguous, or a 2-D transpose of a contiguous matrix; else a
    contiguous copy. oneDNN takes the weight-side operand through its strides, so `dy @ W` copies no `W.T`;
    torch's op still makes its first operand contiguous itself (`dy.T` in `dy.T @ x`).
    A copy costs more than its memory traffic during training: on CPU each new block of a MiB or more is fresh
    pages from the OS (alignment/kernels/host_memory.py), zeroed by the kernel on first touch."""
    return t if t.is_contiguous() or (t.dim() == 2 and t.t().is_contiguous()) else t.contiguous()


def mm_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None, *, onednn: bool = True) -> torch.Tensor:
    """a @ b.T (+ bias): a (..., K), b (M, K) -> (..., M); a plain transpose as `a` or `b` is read in place
    (`_strided`). No autograd of its own (use `linear` for that). `onednn=False`: torch's op whatever the CPU
    (a model whose runtime plan has onednn_linear off)."""
    if onednn and a.shape[-1] and a.numel() and applies(a, b, bias):  # an empty product: torch's op
        return _LINEAR(_strided(a), _strided(b), bias, "none", [], "")
    return F.linear(a, b, bias)


class OneDNNLinear(torch.autograd.Function):
    """y = x @ W.T + b; backward: dx = dy @ W, dW = dy.T @ x, db = sum(dy) (all three through `mm_nt`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None) -> torch.Tensor:
        # the input only where the weight needs its gradient (a frozen LoRA base layer keeps none), as F.linear
        ctx.save_for_backward(x if ctx.needs_input_grad[1] else None, weight)
        ctx.has_bias, ctx.x_shape = bias is not None, x.shape
        return _LINEAR(x, _strided(weight), bias, "none", [], "")  # (..., M)

    @staticmethod
    @once_differentiable  # no double backward: an error rather than a silently wrong second derivative
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        g2 = grad.reshape(-1, grad.shape[-1])  # (N, M)
        grad_x = grad_w = grad_b = None
        if need_x:
            grad_x = mm_nt(grad, weight.t()).reshape(ctx.x_shape)  # (..., K)
        if need_w:
            grad_w = mm_nt(g2.t(), x.reshape(-1, x.shape[-1]).t())  # (M, K); x.T read in place, dy.T copied by torch
        if need_b and ctx.has_bias:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, through oneDNN where it applies (module docstring)."""
    if x.shape[-1] and x.numel() and applies(x, weight, bias):
        return OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


@functools.cache
def pays_here() -> bool:
    """Whether oneDNN's products are the faster ones on this CPU: x86-64 with oneDNN in torch, a vendor other
    than Intel (where MKL dispatches AVX2 code whatever the CPU has) and AVX-512, which oneDNN uses and MKL does
    not there. On an AMD EPYC with AVX2 only (family 25, model 1) MKL was the faster one: oneDNN has no wider
    kernels to run (docs/performance.md). Read from /proc/cpuinfo; where it cannot be read, torch's own CPU
    capability tells AVX-512."""
    if _LINEAR is None:
        return False
    return cpu_vendor() != "GenuineIntel" and has_avx512()


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's vendor id (GenuineIntel, AuthenticAMD, ...), None where it is not known."""
    return _cpuinfo_field(cpuinfo, "vendor_id")


def has_avx512(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """The CPU has AVX-512 (the `avx512f` flag); where /proc/cpuinfo lists no flags, torch's CPU capability."""
    flags = _cpuinfo_field(cpuinfo, "flags")
    if flags is None:
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return "avx512f" in flags.split()


def _cpuinfo_field(cpuinfo: Path, name: str) -> str | None:
    """The first `name : value` line's value in /proc/cpuinfo, None where there is none."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.split(":", 1)[0].strip() == name), None)


def wanted(setting: bool | None) -> bool:
    """training.onednn_linear as set, or `pays_here()` where it is left unset (None)."""
    return pays_here() if setting is None else setting


def onednn_linear_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return linear(x, self.weight, self.bias)


def use_onednn_linears(model: nn.Module) -> int:
    """Switch every plain nn.Linear of `model` (LoRA's base and adapter layers included; hooks still run) to
    `linear`; returns how many (0 where torch has no oneDNN). Idempotent. Called by the runtime plan
    (alignment/kernels/runtime_plan.py `apply_plan`), never while computing."""
    if _LINEAR is None:
        return 0
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.forward = types.MethodType(onednn_linear_forward, module)
            switched += 1
    return switched


def keep_torch_linears(model: nn.Module) -> None:
    """Give the linears back their own forward (a plan with onednn_linear off)."""
    for module in model.modules():
        if uses_onednn(module):
            del module.forward


def uses_onednn(module: nn.Module) -> bool:
    """Whether `module` (an nn.Linear) was switched to `linear` by `use_onednn_linears`."""
    return getattr(vars(module).get("forward"), "__func__", None) is onednn_linear_forward
