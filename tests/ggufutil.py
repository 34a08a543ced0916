"""Write small GGUF files for tests with the `gguf` package: a Llama model directory exported the way
llama.cpp's converter does (tensor names, Q/K row permutation, BPE tokenizer metadata), optionally with
tensors quantized, plus deliberately broken files."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file

LAYER_TENSORS = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's row order for Q/K (rotary halves interleaved); transformers undoes it when loading."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_llama_gguf(model_dir: Path, out: Path, *, quantize: gguf.GGMLQuantizationType | None = None,
                     architecture: str = "llama") -> Path:
    """Export a Hugging Face Llama folder (safetensors, tokenizer.json) to one GGUF file. With `quantize`,
    the 2-D projection weights are stored in that type (e.g. Q8_0)."""
    config = json.loads((model_dir / "config.json").read_text())
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    state = {k: v.to(torch.float32).numpy() for k, v in load_file(model_dir / "model.safetensors").items()}
    heads, kv_heads = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    writer = gguf.GGUFWriter(str(out), architecture)
    writer.add_name("alignflow-test-tiny")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(float((config.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    jinja = model_dir / "chat_template.jinja"
    template = tok_config.get("chat_template") or (jinja.read_text() if jinja.is_file() else None)
    add_tokenizer(writer, tokenizer, tok_config, config, template)
    add_tensor(writer, "token_embd.weight", state["model.embed_tokens.weight"], None)
    add_tensor(writer, "output_norm.weight", state["model.norm.weight"], None)
    if "lm_head.weight" in state and not config.get("tie_word_embeddings", False):
        add_tensor(writer, "output.weight", state["lm_head.weight"], quantize)
    for layer in range(config["num_hidden_layers"]):
        for hf_name, gguf_name in LAYER_TENSORS.items():
            weight = state[f"model.layers.{layer}.{hf_name}.weight"]
            if gguf_name == "attn_q":
                weight = permute(weight, heads)
            elif gguf_name == "attn_k":
                weight = permute(weight, kv_heads)
            add_tensor(writer, f"blk.{layer}.{gguf_name}.weight", weight, quantize if weight.ndim == 2 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def add_tensor(writer: gguf.GGUFWriter, name: str, weight: np.ndarray,
               quantize: gguf.GGMLQuantizationType | None) -> None:
    if quantize is None:
        writer.add_tensor(name, np.ascontiguousarray(weight, dtype=np.float32))
        return
    data = gguf.quants.quantize(np.ascontiguousarray(weight, dtype=np.float32), quantize)
    writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=quantize)


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer: dict, tok_config: dict, config: dict,
                  template: str | None) -> None:
    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    for added in tokenizer.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    tokens = [""] * config["vocab_size"]
    types = [gguf.TokenType.NORMAL] * config["vocab_size"]
    for token, index in vocab.items():
        tokens[index] = token
    for added in tokenizer.get("added_tokens", []):
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    for index, token in enumerate(tokens):  # unused ids past the trained vocabulary
        if not token:
            tokens[index], types[index] = f"[PAD{index}]", gguf.TokenType.UNUSED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    eos = vocab[tok_config["eos_token"]]
    writer.add_eos_token_id(eos)
    writer.add_bos_token_id(eos)
    if tok_config.get("pad_token"):
        writer.add_pad_token_id(vocab[tok_config["pad_token"]])
    if template:
        writer.add_chat_template(template)
