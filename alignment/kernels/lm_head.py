"""Log-probs of chosen tokens without the full logits: the model body, then the LM head in chunks.

The plain way to score tokens runs the LM head at every position and keeps `(B, T, V)` logits (plus an fp32
copy of the scored rows) for the backward pass. Here the body runs through the model as usual (so DDP's
gradient hooks, gradient checkpointing, LoRA and torch.compile all apply), the LM head runs for the last
position only (`logits_to_keep=1`), and the final hidden state comes back through `output_hidden_states=-1`
(transformers 5 keeps only the selected state; the last one is the normed state the head reads). The head
and log-softmax are then computed over the predicting positions only, `chunk` positions at a time, inside a
custom autograd function whose backward recomputes each chunk's logits: memory O(chunk x V) instead of
O(B x T x V), and no FLOPs at prompt positions whose logits nobody reads.

Used when the model's output layer is a plain `nn.Linear` reached through DDP / torch.compile / peft
wrappers (a tied embedding included: its gradient flows to the shared weight) and the model post-processes
no logits (softcapping, scaling). The first call on a model checks that the head applied to the returned
hidden state reproduces the model's own last-position logits (remembered beside the model: `head_checked`); if
it does not, that model keeps the plain path. Anything else (FSDP/DeepSpeed-sharded weights, a LoRA-adapted head,
models that are not transformers causal LMs) uses the plain path, with the same results.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule

from alignment.kernels.cpu_matmul import mm_nt

CHUNK_ELEMENTS = 1 << 23  # logits per chunk (positions x vocabulary): 32 MiB in fp32
# unwrapped model -> whether its head reproduced its own logits (`final_hidden_states`): kept beside the model, not
# on it, so that computing log-probs changes no model (a copied model is checked again)
_CHECKED: weakref.WeakKeyDictionary[nn.Module, bool] = weakref.WeakKeyDictionary()
# config fields of models that transform logits after the head (Gemma 2's softcapping, Cohere's scale, ...)
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class ChunkedTokenLogps(torch.autograd.Function):
    """log_softmax(hidden @ weight.T + bias)[i, target[i]] for every row i, `chunk` rows at a time.

    forward saves only the inputs and the (M,) log-sum-exp; backward recomputes each chunk's logits:
    d out_i / d logits_i = onehot(target_i) - softmax(logits_i)."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                target: torch.Tensor, chunk: int, onednn: bool = False) -> torch.Tensor:
        # hidden (M, H), weight (V, H), bias (V,) or None, target (M,) -> (M,) log-probs, fp32 (or fp64);
        # onednn: the products through oneDNN (alignment/kernels/cpu_matmul.py), as the model's runtime plan says
        rows, acc = hidden.shape[0], torch.promote_types(weight.dtype, torch.float32)  # fp32 at least
        out = torch.empty(rows, dtype=acc, device=hidden.device)
        lse = torch.empty(rows, dtype=acc, device=hidden.device)
        for s in range(0, rows, chunk):
            logits = mm_nt(hidden[s:s + chunk], weight, bias, onednn=onednn).to(acc)  # (c, V)
            lse[s:s + chunk] = torch.logsumexp(logits, dim=-1)
            out[s:s + chunk] = logits.gather(1, target[s:s + chunk, None]).squeeze(1) - lse[s:s + chunk]
        ctx.save_for_backward(hidden, weight, bias, target, lse)
        ctx.chunk, ctx.onednn = chunk, onednn
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        hidden, weight, bias, target, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        acc = lse.dtype
        grad_w = None  # (V, H) in `acc`: the first chunk's product, the others added to it in place
        grad_b = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if need_b else None
        grad = grad.to(acc)
        weight_t = weight.t()  # (H, V), read in place by either library
        for s in range(0, hidden.shape[0], ctx.chunk):
            h, g_out = hidden[s:s + ctx.chunk], grad[s:s + ctx.chunk, None]  # (c, H), (c, 1)
            logits = mm_nt(h, weight, bias, onednn=ctx.onednn).to(acc)  # (c, V), recomputed
            g = logits.sub_(lse[s:s + ctx.chunk, None]).exp_().mul_(-g_out)  # -softmax * grad
            g.scatter_add_(1, target[s:s + ctx.chunk, None], g_out)  # + onehot * grad
            if need_h:
                grad_h[s:s + ctx.chunk] = mm_nt(g.to(weight.dtype), weight_t, onednn=ctx.onednn)  # g @ weight
            if need_w:  # g.T @ h, accumulated in place: no (V, H) temporary per chunk (docs/performance.md)
                grad_w = mm_nt(g.t(), h.to(acc).t(), onednn=ctx.onednn).to(acc) if grad_w is None else grad_w.addmm_(g.t(), h.to(acc))
            if need_b:
                grad_b += g.sum(0)
        if need_w and grad_w is None:  # no rows
            grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        return (grad_h, grad_w.to(weight.dtype) if need_w else None,
                grad_b.to(bias.dtype) if need_b else None, None, None, None)


def chunked_token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                        target: torch.Tensor, chunk: int | None = None, onednn: bool = False) -> torch.Tensor:
    """(M,) log p(target_i | hidden_i) through the linear head (weight (V, H), bias (V,) or None); `onednn`: its
    products through oneDNN where they apply (alignment/kernels/cpu_matmul.py)."""
    chunk = chunk or max(1, CHUNK_ELEMENTS // weight.shape[0])
    return ChunkedTokenLogps.apply(hidden, weight, bias, target, chunk, onednn)


def unwrap(model: nn.Module) -> nn.Module | None:
    """The module holding the weights, through DDP / DataParallel and torch.compile wrappers (peft models
    answer get_output_embeddings themselves); None behind wrappers that shard or move weights (FSDP, ...)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        elif hasattr(model, "_fsdp_wrapped_module") or type(model).__name__ in ("DeepSpeedEngine",
                                                                              "FullyShardedDataParallel"):
            return None
        elif isinstance(model, FSDPModule):  # FSDP2 (alignment/training/sharding.py): DTensor weights outside forward
            return None
        else:
            return model


def compiled(model: nn.Module) -> bool:
    """Whether torch.compile wraps the model (through DDP)."""
    while True:
        if hasattr(model, "_orig_mod"):
            return True
        if not isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
            return False
        model = model.module


def linear_head(model: nn.Module) -> nn.Linear | None:
    """The model's output layer when the chunked path applies to it (module docstring), else None."""
    inner = unwrap(model)
    if inner is None or head_checked(inner) is False:
        return None
    get = getattr(inner, "get_output_embeddings", None)
    config = getattr(inner, "config", None)
    if get is None or config is None:
        return None
    if any(getattr(config, name, None) not in (None, 1.0) for name in LOGIT_TRANSFORMS):
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(getattr(text_config, name, None) not in (None, 1.0) for name in LOGIT_TRANSFORMS):
        return None
    try:
        head = get()
    except (AttributeError, NotImplementedError):
        return None
    return head if type(head) is nn.Linear else None  # a LoRA-adapted head is not a plain Linear


def final_hidden_states(model: nn.Module, head: nn.Linear, inputs: dict) -> torch.Tensor | None:
    """(B, T, H) final (normed) hidden states from one forward through `model` (the wrapper: DDP's hooks run) on
    `inputs` (input_ids, attention_mask and what else the model takes), the head run at the last position only;
    None (and the model marked for the plain path) if the head applied to them does not reproduce the model's own
    logits there."""
    out = model(**inputs, use_cache=False, output_hidden_states=-1, logits_to_keep=1)
    states = getattr(out, "hidden_states", None)
    hidden = states[-1] if states else None
    inner = unwrap(model)
    if head_checked(inner):
        return hidden
    ok = hidden is not None and hidden.shape[:2] == inputs["input_ids"].shape
    if ok:
        with torch.no_grad():
            ours = F.linear(hidden[:, -1].detach(), head.weight, head.bias).float()  # (B, V)
            theirs = out.logits[:, -1].detach().float()
            tol = 1e-3 if theirs.dtype == head.weight.dtype == torch.float32 else 3e-2
            ok = bool(torch.allclose(ours, theirs, rtol=tol, atol=tol))
    if inner is not None:
        _CHECKED[inner] = ok
    return hidden if ok else None


def head_checked(model: nn.Module | None) -> bool | None:
    """Whether the unwrapped `model`'s head was verified (True), refused (False) or not checked yet (None)."""
    return _CHECKED.get(model) if model is not None else None
