"""The memory-lean RMSNorm and SwiGLU MLP (alignment/kernels/fused_ops.py): the same outputs (bitwise for a module,
within 1e-5 through a model) and gradients (within 1e-5, relative to each tensor's largest entry) as
transformers' modules on SmolLM2-135M's shape (hidden 576, intermediate 1536, 9 heads / 3 KV heads), with
LoRA and gradient checkpointing, fewer saved tensors (counted by hand), and modules they do not know left alone."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from alignment.kernels.fused_ops import (
    RMSNormFunction,
    SiLUMul,
    SwiGLUDown,
    fused_mlp_forward,
    fused_rmsnorm_forward,
    use_fused_ops,
)
from alignment.kernels.runtime_plan import RuntimePlan, apply_plan
from alignment.training.logprobs import collate_shared_pairs, sequence_logps

LEAN = RuntimePlan(fused_ops=True)  # the lean modules only: torch's products, padded rows

HIDDEN, INTER = 576, 1536
TOL = {"rtol": 1e-5, "atol": 1e-5}


def llama(layers: int = 2, vocab: int = 1024, **extra) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=layers, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=INTER, max_position_embeddings=256, **extra)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # non-trivial norm weights, so a wrong weight gradient shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.train()
    return model


def batch(vocab: int = 1024) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=gen).tolist()

    rows = [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)}
            for p, c, r in ((40, 20, 30), (10, 50, 5), (70, 8, 25))]
    return collate_shared_pairs(rows, pad_id=0)


def logps_and_grads(model: torch.nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    out = sequence_logps(model, b)
    (out.sum * torch.linspace(0.5, 1.5, out.sum.shape[0])).sum().backward()
    return out.sum.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_grad_close(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    """Within 1e-5 relative to the tensor's largest entry (sums of thousands of products differ in rounding)."""
    assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()), msg=name)


def saved_bytes(fn, module: torch.nn.Module) -> int:
    """Bytes of the distinct storages autograd keeps for backward while `fn()` runs (`module`'s weights excluded)."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in weights:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def switched(model: torch.nn.Module) -> int:
    """Modules whose forward is one of the lean functions."""
    return sum(getattr(vars(m).get("forward"), "__func__", None) in (fused_rmsnorm_forward, fused_mlp_forward)
               for m in model.modules())


def test_rmsnorm_function_equals_llama_rmsnorm() -> None:
    """Forward: the same operations, so bitwise equal. Backward against autograd through LlamaRMSNorm."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(HIDDEN, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 17, HIDDEN, requires_grad=True)
    g = torch.randn(3, 17, HIDDEN)
    plain = norm(x)
    gx, gw = torch.autograd.grad(plain, (x, norm.weight), g)
    lean = RMSNormFunction.apply(x, norm.weight, norm.variance_epsilon)
    lx, lw = torch.autograd.grad(lean, (x, norm.weight), g)
    assert torch.equal(lean, plain)
    assert_close(lx, gx, **TOL)
    assert_close(lw, gw, **TOL)


def test_swiglu_functions_equal_llama_mlp() -> None:
    """The lean functions' own maths, bit for bit: SwiGLUDown's products through torch's op as the module's (its
    default; oneDNN's agree with MKL's to rounding only: tests/alignment/test_cpu_matmul.py)."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    mlp = LlamaMLP(LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER))
    x = torch.randn(2, 23, HIDDEN, requires_grad=True)
    g = torch.randn(2, 23, HIDDEN)
    params = (x, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)
    plain = mlp(x)
    want = torch.autograd.grad(plain, params, g)
    for lean in (lambda: SwiGLUDown.apply(mlp.gate_proj(x), mlp.up_proj(x), mlp.down_proj.weight, None),
                 lambda: mlp.down_proj(SiLUMul.apply(mlp.gate_proj(x), mlp.up_proj(x)))):
        out = lean()
        assert torch.equal(out, plain)
        for got, ref in zip(torch.autograd.grad(out, params, g), want, strict=True):
            assert_close(got, ref, **TOL)


def test_swiglu_down_with_bias_matches() -> None:
    gate, up = torch.randn(5, INTER, requires_grad=True), torch.randn(5, INTER, requires_grad=True)
    w, b = torch.randn(HIDDEN, INTER, requires_grad=True), torch.randn(HIDDEN, requires_grad=True)
    g = torch.randn(5, HIDDEN)
    want = torch.autograd.grad(torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w, b),
                               (gate, up, w, b), g)
    got = torch.autograd.grad(SwiGLUDown.apply(gate, up, w, b), (gate, up, w, b), g)
    for a, r in zip(got, want, strict=True):
        assert_close(a, r, **TOL)


def test_saved_tensors_counted_by_hand() -> None:
    """Per token, in fp32 values: LlamaMLP keeps x (576) for gate/up, gate, silu(gate), up and their product
    (4 x 1536) = 6,720; the lean MLP x, gate and up = 3,648. LlamaRMSNorm keeps its input and the normalised
    input (2 x 576) plus rstd (1) = 1,153; the lean one its input and rstd = 577."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

    n = 10  # tokens
    mlp = LlamaMLP(LlamaConfig(hidden_size=HIDDEN, intermediate_size=INTER))
    norm = LlamaRMSNorm(HIDDEN)
    x = torch.randn(1, n, HIDDEN, requires_grad=True)
    assert saved_bytes(lambda: mlp(x), mlp) == 4 * n * (HIDDEN + 4 * INTER)
    assert saved_bytes(lambda: norm(x), norm) == 4 * n * (2 * HIDDEN + 1)
    assert use_fused_ops(torch.nn.ModuleList([mlp, norm])) == 2
    assert saved_bytes(lambda: mlp(x), mlp) == 4 * n * (HIDDEN + 2 * INTER)
    assert saved_bytes(lambda: norm(x), norm) == 4 * n * (HIDDEN + 1)


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_model_logps_and_gradients_match_transformers_modules(checkpointing: bool) -> None:
    plain = llama()
    lean = copy.deepcopy(plain)
    if checkpointing:
        for m in (plain, lean):
            m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    b = batch()
    want, want_grads = logps_and_grads(plain, b)  # no plan: transformers' modules
    got, got_grads = logps_and_grads(apply_plan(lean, LEAN), b)
    assert switched(lean) == 2 * 3 + 1  # two norms and an MLP in each of 2 layers, the final norm
    assert switched(plain) == 0
    assert_close(got, want, **TOL)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        assert_grad_close(got_grads[name], grad, name)


def test_lora_adapters_get_the_same_gradients() -> None:
    """With LoRA on every linear layer down_proj is a peft layer: the MLP falls back to SiLUMul + down_proj."""
    from peft import LoraConfig, get_peft_model

    def adapted() -> torch.nn.Module:
        model = get_peft_model(llama(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                   init_lora_weights=False))
        model.train()
        return model

    b = batch()
    want, want_grads = logps_and_grads(adapted(), b)
    got, got_grads = logps_and_grads(apply_plan(adapted(), LEAN), b)
    assert want_grads and all("lora_" in n for n in want_grads)
    assert_close(got, want, **TOL)
    for name, grad in want_grads.items():
        assert_grad_close(got_grads[name], grad, name)


def test_unknown_modules_and_activations_are_left_alone() -> None:
    model = llama(hidden_act="gelu")  # a LlamaMLP whose activation is not SiLU
    assert use_fused_ops(model) == 2 * 2 + 1  # the norms only
    assert all("forward" not in vars(m) for m in model.modules() if type(m).__name__ == "LlamaMLP")

    class OtherNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4))
            self.variance_epsilon = 1e-6

    assert use_fused_ops(torch.nn.Sequential(OtherNorm())) == 0
    assert switched(apply_plan(llama(), RuntimePlan(fused_ops=False))) == 0


def test_autocast_runs_the_modules_own_forward() -> None:
    model = llama(layers=1)
    b = batch()
    lean = apply_plan(copy.deepcopy(model), LEAN)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = sequence_logps(model, b).sum
        got = sequence_logps(lean, b).sum
    assert_close(got, want, rtol=0, atol=0)


def test_lean_modules_off_gives_back_the_modules_own_forward() -> None:
    from alignment.config import TrainingConfig
    from alignment.kernels.runtime_plan import plan_for

    model = llama(layers=1)
    assert use_fused_ops(model) == 4  # two norms and the MLP of one layer, the final norm
    plan = plan_for(TrainingConfig(lean_modules=False, onednn_linear=False), "cpu")
    assert not plan.fused_ops and not plan.onednn_linear
    apply_plan(model, plan)
    assert not any("forward" in vars(m) for m in model.modules())
    sequence_logps(model, batch())  # the log-prob path switches nothing
    assert not any("forward" in vars(m) for m in model.modules())
    assert TrainingConfig().lean_modules and plan_for(TrainingConfig(), "cpu").fused_ops
