"""The chunked LM head (alignment/kernels/lm_head.py): the same log-probs and gradients as the full logits, on a real
Llama shape (SmolLM2-135M's hidden 576, vocabulary 49,152, 9 heads / 3 KV heads; 2 layers to stay fast), tied
and untied, with LoRA and gradient checkpointing, and the plain path where the head does not apply."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from alignment.kernels.lm_head import ChunkedTokenLogps, chunked_token_logps, head_checked, linear_head
from alignment.training.logprobs import collate_sft, collate_shared_pairs, sequence_logps

VOCAB = 49152


def smollm_shape(tie: bool = True, layers: int = 2, **extra) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=576, num_hidden_layers=layers, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=1536, max_position_embeddings=512,
                         tie_word_embeddings=tie, **extra)
    model = LlamaForCausalLM(config)
    model.train()
    return model


def pairs() -> list[dict]:
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(3, VOCAB, (n,), generator=gen).tolist()

    return [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)}
            for p, c, r in ((40, 20, 30), (10, 50, 5), (70, 8, 25))]


def batches() -> dict[str, dict[str, torch.Tensor]]:
    rows = pairs()
    sft = collate_sft([{"input_ids": r["prompt_ids"] + r["chosen_ids"],
                        "labels": [-100] * len(r["prompt_ids"]) + r["chosen_ids"]} for r in rows], pad_id=0)
    return {"shared": collate_shared_pairs(rows, pad_id=0), "scored_prompt": collate_shared_pairs(
        rows, pad_id=0, score_prompt=True), "sft": sft}


def logps_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                    full_logits: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = sequence_logps(model, batch, full_logits=full_logits)
    weights = torch.linspace(0.5, 1.5, out.sum.shape[0])  # unequal weights: a wrong row mapping shows
    total = (out.sum * weights).sum()
    if out.prompt is not None:
        total = total + out.prompt.sum.sum()
    total.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.sum.detach(), grads


def assert_same_as_full_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Log-prob sums within 1e-5 relative, every gradient within 1e-5 of its tensor's largest entry."""
    ref, ref_grads = logps_and_grads(model, batch, full_logits=True)
    ours, grads = logps_and_grads(model, batch, full_logits=False)
    assert head_checked(model) is True or hasattr(model, "base_model")
    assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert grads.keys() == ref_grads.keys() and grads
    for name, grad in ref_grads.items():
        scale = float(grad.abs().max())
        assert float((grads[name] - grad).abs().max()) <= 1e-5 * max(scale, 1e-12), name


def test_chunked_function_equals_log_softmax_in_value_and_gradient() -> None:
    """Any chunk size (1, uneven, all rows at once), with a bias, against log_softmax(h W^T + b)[target]."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 11, (7,), generator=gen)
    upstream = torch.randn(7, generator=gen, dtype=torch.float64)
    expected = F.log_softmax(hidden @ weight.T + bias, -1).gather(1, target[:, None]).squeeze(1)
    want = torch.autograd.grad((expected * upstream).sum(), (hidden, weight, bias))
    for chunk in (1, 3, 7, 100):
        out = ChunkedTokenLogps.apply(hidden, weight, bias, target, chunk)
        assert_close(out, expected, rtol=1e-10, atol=1e-10)
        got = torch.autograd.grad((out * upstream).sum(), (hidden, weight, bias))
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda h, w, b: ChunkedTokenLogps.apply(h, w, b, target, 3),
                                    (hidden, weight, bias))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_weight_gradient_in_fp32_and_bf16_over_several_chunks(dtype: torch.dtype) -> None:
    """The weight gradient is the first chunk's product plus the others added in place, in fp32 (oneDNN's
    product, then torch's addmm_) or for bf16 weights in fp32 then cast; no rows: zeros."""
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(10, 64, generator=gen).to(dtype).requires_grad_()
    weight = (torch.randn(96, 64, generator=gen) * 0.1).to(dtype).requires_grad_()
    target = torch.randint(0, 96, (10,), generator=gen)
    upstream = torch.randn(10, generator=gen)
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    expected = F.log_softmax(h64 @ w64.T, -1).gather(1, target[:, None]).squeeze(1)
    want = torch.autograd.grad((expected * upstream.double()).sum(), (h64, w64))
    out = chunked_token_logps(hidden, weight, None, target, chunk=3)  # 4 chunks: 3 + 3 + 3 + 1
    got = torch.autograd.grad((out * upstream).sum(), (hidden, weight))
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for g, w in zip(got, want, strict=True):
        assert g.dtype == dtype
        assert_close(g.double(), w, rtol=tol, atol=tol)
    empty = torch.zeros(0, 64, dtype=dtype, requires_grad=True)
    out = chunked_token_logps(empty, weight, None, torch.zeros(0, dtype=torch.long), chunk=3)
    (gw,) = torch.autograd.grad(out.sum(), (weight,), allow_unused=True)
    assert gw is None or (gw.shape == weight.shape and not gw.any())


def test_frozen_head_gets_no_gradient_computed() -> None:
    hidden = torch.randn(4, 3, requires_grad=True)
    weight = torch.randn(6, 3)  # frozen (LoRA): only the hidden states need a gradient
    out = chunked_token_logps(hidden, weight, None, torch.tensor([0, 1, 2, 5]), chunk=2)
    out.sum().backward()
    assert hidden.grad is not None and weight.grad is None


def test_small_llama_same_logps_and_gradients() -> None:
    """The fast version of the real-shape test below (vocabulary 512, hidden 64)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
                                         tie_word_embeddings=True))
    model.train()
    rows = [{k: [t % 509 + 3 for t in v] for k, v in r.items()} for r in pairs()]
    assert_same_as_full_logits(model, collate_shared_pairs(rows, pad_id=0, score_prompt=True))


@pytest.mark.slow
@pytest.mark.parametrize("tie", [True, False])
def test_real_llama_shape_same_logps_and_gradients(tie: bool) -> None:
    """Prefix-shared pairs (with and without the scored prompt) and SFT rows, tied and untied embeddings: the
    tied weight gets the head's gradient and the embedding's, summed, as with the full logits."""
    model = smollm_shape(tie=tie)
    assert linear_head(model) is model.lm_head
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    for batch in batches().values():
        assert_same_as_full_logits(model, batch)


@pytest.mark.slow
def test_with_gradient_checkpointing() -> None:
    from alignment.config import TrainingConfig
    from alignment.models.loading import prepare_for_training

    model = prepare_for_training(smollm_shape(), TrainingConfig(gradient_checkpointing=True))
    assert_same_as_full_logits(model, batches()["shared"])


@pytest.mark.slow
def test_with_lora_adapters() -> None:
    """peft's 'all-linear' leaves the head alone: the chunked head runs on the frozen (tied) weight and the
    adapters' gradients equal the full-logits path's."""
    from alignment.config import LoraSettings, TrainingConfig
    from alignment.models.loading import prepare_for_training

    model = prepare_for_training(smollm_shape(), TrainingConfig(lora=LoraSettings(r=4, alpha=8.0)))
    assert type(linear_head(model)) is torch.nn.Linear
    for p in model.parameters():  # LoRA's B starts at zero; move it so gradients reach A too
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.02)
    assert_same_as_full_logits(model, batches()["shared"])


@pytest.mark.slow
def test_reference_pass_without_gradients() -> None:
    model = smollm_shape()
    batch = batches()["shared"]
    with torch.no_grad():
        full = sequence_logps(model, batch, full_logits=True)
        ours = sequence_logps(model, batch)
    assert_close(ours.sum, full.sum, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_models_that_transform_logits_keep_the_full_logits() -> None:
    """A model whose config scales or caps logits after the head, or whose head is not a plain Linear, is scored
    through its own logits."""
    model = smollm_shape()
    model.config.final_logit_softcapping = 30.0
    assert linear_head(model) is None

    class Scaled(torch.nn.Module):  # the head check catches what no config field says
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            self.config = inner.config

        def get_output_embeddings(self) -> torch.nn.Module:
            return self.inner.lm_head

        def forward(self, **kwargs):
            out = self.inner(**kwargs)
            out.logits = out.logits * 0.5
            return out

    model = smollm_shape()
    wrapped = Scaled(model)
    batch = batches()["shared"]
    with torch.no_grad():
        first = sequence_logps(wrapped, batch)
        assert head_checked(wrapped) is False and linear_head(wrapped) is None
        again = sequence_logps(wrapped, batch)
        full = sequence_logps(wrapped, batch, full_logits=True)
    assert_close(first.sum, full.sum)
    assert_close(again.sum, full.sum)
