"""fp32 products through oneDNN on CPU (alignment/kernels/cpu_matmul.py): the same values and gradients as torch's
own linear up to float rounding (1e-5 relative to each tensor's largest entry), alone and through a Llama of
SmolLM2-135M's width (tied embeddings, LoRA, activation checkpointing); torch's path wherever oneDNN does not
apply; a model's linears switched and given back by its runtime plan (alignment/kernels/runtime_plan.py)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from alignment.config import TrainingConfig
from alignment.kernels import cpu_matmul
from alignment.kernels.runtime_plan import apply_plan, plan_for
from alignment.models.loading import prepare_for_training
from alignment.training.logprobs import collate_shared_pairs, sequence_logps

# These tests exercise oneDNN's path on any x86-64 CPU (training.onednn_linear unset, a plan has it off on Intel's
# and on AVX2-only CPUs: pays_here); `linear` and `mm_nt` take it wherever it applies.
pytestmark = pytest.mark.skipif(cpu_matmul._LINEAR is None, reason="torch without oneDNN")
HIDDEN, INTER = 576, 1536


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-5) -> None:
    scale = want.abs().max().clamp(min=1e-12)
    assert ((got - want).abs().max() / scale).item() <= rel, (got - want).abs().max()


@pytest.mark.parametrize("shape", [(7, 576), (2, 33, 576)], ids=["2d", "3d"])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_linear_matches_torch(shape: tuple[int, ...], with_bias: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=gen, requires_grad=True)
    w = torch.randn(INTER, HIDDEN, generator=gen, requires_grad=True)
    b = torch.randn(INTER, generator=gen, requires_grad=True) if with_bias else None
    g = torch.randn(*shape[:-1], INTER, generator=gen)
    inputs = [t for t in (x, w, b) if t is not None]
    got = cpu_matmul.linear(x, w, b)
    assert got.grad_fn is not None and type(got.grad_fn).__name__ == "OneDNNLinearBackward"
    want = F.linear(x, w, b)
    close(got, want)
    for a, r in zip(torch.autograd.grad(got, inputs, g), torch.autograd.grad(want, inputs, g), strict=True):
        assert a.shape == r.shape
        close(a, r)


@pytest.mark.parametrize("rows", [1, 7, 170])
@pytest.mark.parametrize("a_transposed", [False, True], ids=["a", "a.T"])
@pytest.mark.parametrize("b_transposed", [False, True], ids=["b", "b.T"])
def test_mm_nt_reads_plain_transposes_in_place(rows: int, a_transposed: bool, b_transposed: bool) -> None:
    """The backward products pass `W.t()`, `dy.t()`, `x.t()`: oneDNN takes their strides (no copy for the
    weight-side operand) with the same result as a contiguous copy; other layouts are copied first."""
    gen = torch.Generator().manual_seed(rows)
    a = torch.randn(HIDDEN, rows, generator=gen).t() if a_transposed else torch.randn(rows, HIDDEN, generator=gen)
    b = torch.randn(HIDDEN, 96, generator=gen).t() if b_transposed else torch.randn(96, HIDDEN, generator=gen)
    assert cpu_matmul._strided(b) is b  # contiguous or a plain transpose: passed as it is
    close(cpu_matmul.mm_nt(a, b), a.double().matmul(b.double().t()).float())
    close(cpu_matmul.mm_nt(a, b), cpu_matmul.mm_nt(a.contiguous(), b.contiguous()), rel=1e-6)
    every_other = torch.randn(96, 2 * HIDDEN, generator=gen)[:, ::2]  # neither layout: copied
    assert not every_other.is_contiguous() and cpu_matmul._strided(every_other).is_contiguous()
    close(cpu_matmul.mm_nt(a, every_other), a.double().matmul(every_other.double().t()).float())


def test_frozen_weight_and_input_without_grad() -> None:
    x, w = torch.randn(5, 16), torch.randn(8, 16)
    xg = x.clone().requires_grad_()
    (gx,) = torch.autograd.grad(cpu_matmul.linear(xg, w).sum(), [xg])  # the weight frozen (a LoRA base layer)
    close(gx, torch.ones(5, 8) @ w)
    wg = w.clone().requires_grad_()
    (gw,) = torch.autograd.grad(cpu_matmul.linear(x, wg).sum(), [wg])
    close(gw, torch.ones(5, 8).t() @ x)


def test_torchs_path_where_onednn_does_not_apply() -> None:
    x, w = torch.randn(5, 16, dtype=torch.float64), torch.randn(8, 16, dtype=torch.float64)
    assert torch.equal(cpu_matmul.mm_nt(x, w), F.linear(x, w))  # fp64
    assert cpu_matmul.linear(x.requires_grad_(), w).grad_fn.name() != "OneDNNLinearBackward"
    x32, w32 = x.detach().float(), w.float()
    assert cpu_matmul.applies(x32, w32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_matmul.applies(x32, w32)
    assert torch.equal(cpu_matmul.mm_nt(x32, w32, onednn=False), F.linear(x32, w32))  # a plan with it off


def llama(tie: bool) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=9,
                         num_key_value_heads=3, intermediate_size=INTER, max_position_embeddings=256,
                         tie_word_embeddings=tie)
    model = LlamaForCausalLM(config)
    model.train()
    return model


def pairs_batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(3, 2048, (n,), generator=gen).tolist()

    rows = [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)} for p, c, r in
            ((40, 17, 23), (25, 30, 9), (61, 12, 20))]
    return collate_shared_pairs(rows, pad_id=0)


def logps_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    logps = sequence_logps(model, batch)
    (logps.sum * torch.linspace(0.5, 1.5, logps.sum.shape[0])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.sum.detach(), grads


@pytest.mark.parametrize("setting", ["tied", "untied", "lora", "checkpointing"])
def test_model_logps_and_gradients_match_torchs_linears(setting: str) -> None:
    base = llama(tie=setting != "untied")
    training = TrainingConfig(**({"lora": {"r": 8, "alpha": 16.0}} if setting == "lora" else {}),
                              gradient_checkpointing=setting == "checkpointing", onednn_linear=True)
    torch_training = training.model_copy(update={"onednn_linear": False})
    torch.manual_seed(1)  # LoRA's initial A matrices: the same on both sides
    ours = apply_plan(prepare_for_training(copy.deepcopy(base), training), plan_for(training, "cpu"))
    torch.manual_seed(1)  # as a stage with training.onednn_linear=false: the head and MLP too
    theirs = apply_plan(prepare_for_training(copy.deepcopy(base), torch_training), plan_for(torch_training, "cpu"))
    batch = pairs_batch()
    got, got_grads = logps_and_grads(ours, batch)
    assert any(cpu_matmul.uses_onednn(m) for m in ours.modules())  # switched by the plan
    want, want_grads = logps_and_grads(theirs, batch)
    assert not any("forward" in vars(m) for m in theirs.modules() if type(m) is torch.nn.Linear)
    assert (got - want).abs().max().item() <= 1e-5 * want.abs().max().item()
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name, grad in want_grads.items():
        close(got_grads[name], grad)


def test_switching_is_idempotent_and_reversible() -> None:
    model = llama(tie=True)
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert cpu_matmul.use_onednn_linears(model) == linears == 2 * 7 + 1  # q k v o gate up down a layer, the head
    assert cpu_matmul.use_onednn_linears(model) == linears
    cpu_matmul.keep_torch_linears(model)
    assert not any("forward" in vars(m) for m in model.modules())
    assert TrainingConfig().onednn_linear is None  # unset: cpu_matmul.pays_here() decides
    training = TrainingConfig(compile=True, onednn_linear=True)
    compiled = apply_plan(prepare_for_training(llama(tie=True), training), plan_for(training, "cpu"))
    assert not any(cpu_matmul.uses_onednn(m) for m in compiled._orig_mod.modules())  # compile traces torch's


def saved_bytes(fn) -> int:
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_a_frozen_weight_keeps_no_input_and_no_double_backward() -> None:
    x, w = torch.randn(6, 16, requires_grad=True), torch.randn(8, 16)
    assert saved_bytes(lambda: cpu_matmul.linear(x, w)) == w.numel() * 4  # the weight only, as F.linear
    trained = w.clone().requires_grad_()
    assert saved_bytes(lambda: cpu_matmul.linear(x, trained)) == (w.numel() + x.numel()) * 4
    # once_differentiable: an error, not a silently wrong second derivative (without it, backward runs through
    # the oneDNN op, which has no autograd: no error and no gradient for the weight)
    (gx,) = torch.autograd.grad(cpu_matmul.linear(x, trained).sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="does not require grad"):  # the backward ran without a graph
        gx.sum().backward()
    upstream = torch.ones(6, 8, requires_grad=True)  # a gradient that itself needs one: double backward proper
    (gx,) = torch.autograd.grad(cpu_matmul.linear(x, trained), [x], grad_outputs=upstream, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice a function that was marked with @once_differentiable"):
        gx.sum().backward()


def test_mkldnn_switch_and_empty_inputs() -> None:
    x, w = torch.randn(4, 16), torch.randn(8, 16)
    assert cpu_matmul.applies(x, w)
    with torch.backends.mkldnn.flags(enabled=False):
        assert not cpu_matmul.applies(x, w)
    empty = torch.randn(0, 16, requires_grad=True)
    assert cpu_matmul.linear(empty, w).shape == (0, 8)
    assert torch.equal(cpu_matmul.mm_nt(torch.randn(3, 0), torch.randn(5, 0)), torch.zeros(3, 5))


TORCH_AVX512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")


@pytest.mark.parametrize(("vendor", "flags", "expected"), [
    ("AuthenticAMD", "fpu avx2 avx512f avx512bw", True), ("AuthenticAMD", "fpu avx2", False),
    ("GenuineIntel", "fpu avx2 avx512f", False), ("GenuineIntel", "fpu avx2", False), (None, None, TORCH_AVX512)])
def test_unset_onednn_linear_follows_the_cpu(tmp_path, monkeypatch, vendor: str | None, flags: str | None,
                                             expected: bool) -> None:
    """Unset, training.onednn_linear is on for x86-64 CPUs with AVX-512 other than Intel's (on Intel's MKL's own
    AVX-512 kernels were measured faster, on an AVX2-only AMD EPYC MKL's AVX2 ones); where /proc/cpuinfo says
    nothing, torch's CPU capability tells AVX-512; set, it is what it says."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\n" + (f"vendor_id\t: {vendor}\nflags\t\t: {flags}\n" if vendor else ""))
    assert cpu_matmul.cpu_vendor(cpuinfo) == vendor
    assert cpu_matmul.cpu_vendor(tmp_path / "missing") is None
    assert cpu_matmul.has_avx512(cpuinfo) is ("avx512f" in flags.split() if flags else TORCH_AVX512)
    real = cpu_matmul.cpu_vendor
    real_avx512 = cpu_matmul.has_avx512
    monkeypatch.setattr(cpu_matmul, "cpu_vendor", lambda: real(cpuinfo))
    monkeypatch.setattr(cpu_matmul, "has_avx512", lambda: real_avx512(cpuinfo))
    cpu_matmul.pays_here.cache_clear()
    try:
        assert cpu_matmul.wanted(None) is expected
        assert cpu_matmul.wanted(True) and not cpu_matmul.wanted(False)
        assert plan_for(TrainingConfig(), "cpu").onednn_linear is expected  # evaluation's passes too
        assert plan_for(TrainingConfig(onednn_linear=True), "cpu").onednn_linear  # on whatever the vendor
        assert not plan_for(TrainingConfig(onednn_linear=False), "cpu").onednn_linear
        assert not plan_for(TrainingConfig(onednn_linear=True), "meta").onednn_linear  # CPU products only
        model = apply_plan(prepare_for_training(llama(tie=True), TrainingConfig()), plan_for(TrainingConfig(), "cpu"))
        assert any(cpu_matmul.uses_onednn(m) for m in model.modules()) is expected
    finally:
        cpu_matmul.pays_here.cache_clear()
