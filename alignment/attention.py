"""Attention for the prefix-shared rows on CPU: SDPA with grouped-query heads inside the kernel.

The prefix-shared layout (alignment/logprobs.py) needs a mask that is not causal (rejected tokens never see
the chosen ones), so it is passed as a dense (B, 1, T, T) mask. Options measured at SmolLM2-135M's shape
(9 query / 3 key-value heads, head dim 64; 4 HH-like pairs, T = 322; one layer's attention, forward +
backward, 1 thread; README "Attention without a dense mask"):

* transformers' SDPA with the float mask (the default): 345 ms. With a mask, transformers copies the key and
  value heads to the query heads (`repeat_kv`) before SDPA, since on CUDA masked grouped-query SDPA falls
  back to the math kernel.
* the same with a boolean mask: 367 ms; eager attention: 375 ms.
* FlexAttention with a block mask: not available for training on CPU (torch 2.13: "FlexAttention does not
  support backward on CPU"); varlen packing has no CPU kernel either.
* SDPA with `enable_gqa=True` (no copies; the CPU kernel takes the mask): 224 ms, identical outputs.

So on CPU the models that use transformers' "sdpa" attention are switched to `gqa_sdpa_forward`, which is
the last option for masked multi-token attention with grouped heads and transformers' own SDPA for
everything else (decoding steps, CUDA, paged caches, position biases). On a GPU the dense mask stays until
FlexAttention is measured there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "alignflow_sdpa"
_registered = False


def gqa_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (B, H, T, D), key/value (B, KV, S, D) ->
    ((B, T, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    special = any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap", "s_aux"))
    if query.device.type != "cpu" or groups <= 1 or query.shape[2] == 1 or special:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                         is_causal=bool(mask is None and query.shape[2] > 1 and causal),
                                         enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def use_gqa_attention(model: torch.nn.Module) -> None:
    """Switch a model (the module holding the config, see alignment.lm_head.unwrap) that runs transformers'
    "sdpa" attention on CPU to `gqa_sdpa_forward`; others are left alone. Not saved with the model."""
    global _registered
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return
    if getattr(config, "num_key_value_heads", None) in (None, getattr(config, "num_attention_heads", None)):
        return  # no grouped heads: nothing to gain
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu":
        return
    if not _registered:
        from transformers import AttentionInterface

        AttentionInterface.register(NAME, gqa_sdpa_forward)
        _registered = True
    model.set_attn_implementation(NAME)
