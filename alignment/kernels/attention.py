"""Attention on CPU: SDPA with grouped-query heads inside the kernel, and rows packed without padding.

The prefix-shared layout (alignment/training/logprobs.py) needs a mask that is not causal (rejected tokens never see
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

So on CPU the models that use transformers' "sdpa" attention are switched to `cpu_sdpa_forward` (by their runtime
plan, alignment/kernels/runtime_plan.py, where its cpu_attention is on), which is the last option for masked multi-token
attention with grouped heads and transformers' own SDPA for everything else (decoding steps, CUDA, paged caches,
position biases). On a GPU the dense mask stays until FlexAttention is measured there.

Padding-free rows (varlen by hand). Where the runtime plan's pack_rows is on, `alignment.training.logprobs` packs the rows
of a batch into one row without padding and passes their boundaries as `SEGMENTS` (offsets, and each row's own
mask or None for causal); this function then runs one SDPA call per row on its slice of the packed queries, keys
and values. Every row's attention is
exactly what it was in the padded batch, while the linear layers, most of the FLOPs, no longer run at padding
positions (docs/performance.md, "Padding-free rows").

The attention masks transformers builds for this function are those it builds for "sdpa" (`sdpa_mask`,
registered under the same name): a left-padded prompt keeps its padding mask (transformers hands a custom
attention function no mask at all unless one is registered for it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "alignflow_sdpa"
SEGMENTS = "alignflow_segments"  # model kwarg: (offsets, masks) of packed rows (module docstring)
_registered = False


def cpu_sdpa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                     is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query (B, H, T, D), key/value (B, KV, S, D) ->
    ((B, T, H, D), None). With `SEGMENTS` among the kwargs: packed rows (module docstring)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    segments = kwargs.pop(SEGMENTS, None)
    special = any(kwargs.get(k) is not None for k in ("position_bias", "cache", "softcap", "s_aux"))
    if segments is not None:
        if special or kwargs.get("sliding_window") is not None or query.shape[0] != 1 \
                or key.shape[-2] != query.shape[2]:
            raise ValueError("packed rows need one row of queries and keys, no cache and full attention")
        return packed_sdpa(query, key, value, segments, dropout, scaling, groups > 1), None
    if query.device.type != "cpu" or groups <= 1 or query.shape[2] == 1 or special:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                         is_causal=bool(mask is None and query.shape[2] > 1 and causal),
                                         enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def packed_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                segments: tuple[list[int], list[torch.Tensor | None]], dropout: float, scaling: float | None,
                gqa: bool) -> torch.Tensor:
    """Attention of packed rows, one SDPA call per row: query (1, H, N, D), key/value (1, KV, N, D), segments =
    (offsets [0, n_1, n_1 + n_2, ..., N], per row its (1, 1, n_i, n_i) mask or None for causal) -> (1, N, H, D)."""
    offsets, masks = segments
    outs = []
    for (start, end), mask in zip(zip(offsets[:-1], offsets[1:], strict=True), masks, strict=True):
        if end == start:  # an empty row
            continue
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]  # (1, H|KV, n_i, D)
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                                   is_causal=mask is None and end - start > 1, enable_gqa=gqa))
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous()


def use_cpu_attention(model: torch.nn.Module) -> bool:
    """Switch a model (the module holding the config, see alignment.kernels.lm_head.unwrap) that runs transformers'
    "sdpa" attention on CPU to `cpu_sdpa_forward`; others are left alone. Returns whether the model runs it.
    Not saved with the model."""
    global _registered
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) == NAME:
        return True
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu":
        return False
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(NAME, cpu_sdpa_forward)
        AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks "sdpa" gets: padding masks kept
        _registered = True
    model.set_attn_implementation(NAME)
    return True


def takes_packed_rows(model: torch.nn.Module) -> bool:
    """Whether a model switched by `use_cpu_attention` may take packed rows: on CPU, every layer attending to its
    whole row (no sliding window or chunked attention, which packed rows would lose: their masks are not built)."""
    config = getattr(model, "config", None)
    first = next(model.parameters(), None)
    if getattr(config, "_attn_implementation", None) != NAME or first is None or first.device.type != "cpu":
        return False  # not switched, or moved to an accelerator since
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(text, "sliding_window", None) is not None or getattr(text, "attention_chunk_size", None) is not None:
        return False
    return all(kind == "full_attention" for kind in (getattr(text, "layer_types", None) or ()))
