"""The runtime plan (alignment/kernels/runtime_plan.py): derived from the training config and the device, recorded on the
model when applied, read (never acted on) by the log-prob path; the default plan scores what a plain model scores."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch.testing import assert_close

from alignment.config import TrainingConfig
from alignment.kernels.cpu_matmul import pays_here, uses_onednn
from alignment.kernels.runtime_plan import PLAIN, RuntimePlan, apply_plan, plan_for, plan_of
from alignment.models.tiny import build_model
from alignment.training.logprobs import collate_sft, collate_shared_pairs, sequence_logps


def tiny(tokenizer, kv_heads: int | None = None) -> torch.nn.Module:
    model = build_model(tokenizer, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                        max_position_embeddings=256, seed=0)
    if kv_heads is not None:  # grouped-query heads, as SmolLM2's (the CPU attention's own kernel path)
        from transformers import LlamaForCausalLM

        config = copy.deepcopy(model.config)
        config.num_key_value_heads = kv_heads
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    return model.train()


def pair_batch(vocab: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    return collate_shared_pairs([{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)}
                                 for p, c, r in ((9, 4, 6), (3, 7, 2), (12, 5, 5))], pad_id=0)


def sft_batch(vocab: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    rows = []
    for p, a in ((6, 5), (3, 9), (10, 2)):
        prompt, answer = torch.randint(3, vocab, (p,), generator=gen).tolist(), \
            torch.randint(3, vocab, (a,), generator=gen).tolist()
        rows.append({"input_ids": prompt + answer, "labels": [-100] * p + answer})
    return collate_sft(rows, 0)


# transformers' own: set once it installs the hooks that capture hidden states (output_hidden_states, which the
# chunked head asks for), on any model
TRANSFORMERS_OWN = {"_output_capturing_hooks_installed"}


def module_state(model: torch.nn.Module) -> list[tuple]:
    """Every module's own attributes (a switched `forward` shows here) with the identity of its forward and of
    every non-container value, and the attention implementation."""
    return [(name, sorted(set(vars(m)) - TRANSFORMERS_OWN), vars(m).get("forward"),
             {k: id(v) for k, v in vars(m).items() if not isinstance(v, dict | set | list) and k not in TRANSFORMERS_OWN})
            for name, m in model.named_modules()] + [model.config._attn_implementation]


@pytest.mark.parametrize("plan", ["none", "default", "onednn"])
def test_logprobs_change_no_module(quick_tokenizer, plan: str) -> None:
    model = tiny(quick_tokenizer, kv_heads=2)
    if plan != "none":
        apply_plan(model, plan_for(TrainingConfig(onednn_linear=True if plan == "onednn" else None), "cpu"))
    before = module_state(model)
    recorded = plan_of(model)
    for batch in (pair_batch(len(quick_tokenizer)), sft_batch(len(quick_tokenizer))):
        out = sequence_logps(model, batch)
        out.sum.sum().backward()
        with torch.no_grad():
            sequence_logps(model, batch, full_logits=True)
    assert module_state(model) == before
    assert plan_of(model) is recorded
    if plan == "none":  # plain: transformers' own modules
        assert recorded == PLAIN and not any("forward" in vars(m) for m in model.modules())
        assert model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("kv_heads", [None, 2], ids=["tiny", "gqa"])
@pytest.mark.parametrize("onednn", [None, True], ids=["onednn-unset", "onednn-on"])
def test_default_plan_scores_what_a_plain_model_scores(quick_tokenizer, kv_heads: int | None,
                                                       onednn: bool | None) -> None:
    """Log-probs and gradients under the default plan (lean modules, CPU attention, packed rows, oneDNN where it
    pays or is asked for) equal those of the same model with no plan, to 1e-5."""
    plain = tiny(quick_tokenizer, kv_heads)
    planned = apply_plan(copy.deepcopy(plain), plan_for(TrainingConfig(onednn_linear=onednn), "cpu"))
    assert any("forward" in vars(m) for m in planned.modules())  # switched: the lean modules at least
    for batch in (pair_batch(len(quick_tokenizer)), sft_batch(len(quick_tokenizer))):
        results = []
        for model in (plain, planned):
            model.zero_grad(set_to_none=True)
            out = sequence_logps(model, batch)
            (out.sum * torch.linspace(0.5, 1.5, out.sum.shape[0])).sum().backward()
            results.append((out.sum.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        (want, want_grads), (got, got_grads) = results
        assert_close(got, want, rtol=1e-5, atol=1e-5)
        for name, grad in want_grads.items():
            scale = grad.abs().max().clamp(min=1e-12)
            assert ((got_grads[name] - grad).abs().max() / scale).item() <= 1e-4, name


def test_plan_for_derives_from_the_training_config_and_the_device() -> None:
    assert plan_for(TrainingConfig(), "cpu").onednn_linear is pays_here()  # unset: the CPU decides
    assert plan_for(TrainingConfig(onednn_linear=True), "cpu").onednn_linear
    assert not plan_for(TrainingConfig(onednn_linear=False), "cpu").onednn_linear
    default = plan_for(TrainingConfig(onednn_linear=True), "cpu", "preference")
    assert default == RuntimePlan(fused_ops=True, onednn_linear=True, cpu_attention=True, pack_rows=True,
                                  full_logits=False, mmap_threshold_mib=1)
    assert plan_for(TrainingConfig(), "cpu", "sft").mmap_threshold_mib is None  # "auto": preference only
    assert not plan_for(TrainingConfig(lean_modules=False), "cpu").fused_ops
    accelerator = plan_for(TrainingConfig(onednn_linear=True), torch.device("meta"))
    assert not (accelerator.onednn_linear or accelerator.cpu_attention or accelerator.pack_rows)
    assert accelerator.fused_ops and accelerator.mmap_threshold_mib is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.pack_rows = False  # type: ignore[misc]


def test_params_are_flat_strings() -> None:
    params = plan_for(TrainingConfig(onednn_linear=False), "cpu", "preference").params()
    assert params == {"runtime/fused_ops": "true", "runtime/onednn_linear": "false", "runtime/cpu_attention": "true",
                      "runtime/pack_rows": "true", "runtime/full_logits": "false", "runtime/mmap_threshold_mib": "1"}
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in PLAIN.params().items())
    assert PLAIN.params()["runtime/mmap_threshold_mib"] == "none"


def test_another_plan_switches_back(quick_tokenizer) -> None:
    """Applying a plan that says off gives transformers' modules, torch's linears and "sdpa" back; the plan is
    recorded on the unwrapped model, so wrappers read it too."""
    model = apply_plan(tiny(quick_tokenizer), plan_for(TrainingConfig(onednn_linear=True), "cpu"))
    assert any(uses_onednn(m) for m in model.modules()) == (plan_of(model).onednn_linear and True)
    wrapped = torch.nn.DataParallel(model)
    assert plan_of(wrapped) is plan_of(model)
    apply_plan(wrapped, PLAIN)
    assert plan_of(model) == PLAIN
    assert not any("forward" in vars(m) for m in model.modules())
    assert model.config._attn_implementation == "sdpa"


def test_the_recorded_plan_is_what_took_effect(quick_tokenizer) -> None:
    """A switch the model cannot take is recorded off (and so logged off by the stage): CPU attention on a model
    running transformers' eager attention; the stage's allocator setting is kept beside the model's plan."""
    from alignment.stages.training import applied_plan

    model = tiny(quick_tokenizer)
    model.set_attn_implementation("eager")
    planned = plan_for(TrainingConfig(), "cpu", "preference")
    assert planned.cpu_attention
    apply_plan(model, planned)
    assert not plan_of(model).cpu_attention and model.config._attn_implementation == "eager"
    logged = applied_plan(model, planned).params()
    assert logged["runtime/cpu_attention"] == "false" and logged["runtime/mmap_threshold_mib"] == "1"
    assert logged["runtime/fused_ops"] == "true"
    sdpa = apply_plan(tiny(quick_tokenizer), planned)
    assert plan_of(sdpa) == planned  # on a CPU "sdpa" model every switch takes
