"""training.lora, training.gradient_checkpointing (alignment.models.loading.prepare_for_training / plain_model): LoRA
trains only its adapters, resumes after a kill like full training, and is saved merged as a plain model;
activation checkpointing changes memory, never the loss or the gradients."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from alignment.config import LoraSettings, TrainingConfig, load_config
from alignment.models.loading import load_causal_lm, plain_model, prepare_for_training
from alignment.stages import build_base_model, prepare_data, reference_annotated_pairs, run_sft
from alignment.training.logprobs import collate_sft
from alignment.training.objectives import method_plan, sft_objective
from alignment.training.tracking import InMemoryLogger
from alignment.training.trainer import train
from tests.alignment.test_trainer import OPTIM, FailingObjective, SimulatedKill, make_model

LORA = TrainingConfig(lora=LoraSettings(r=4, alpha=8.0))


def test_lora_trains_only_adapters_and_merges_exactly(quick_tokenizer) -> None:
    model = prepare_for_training(make_model(quick_tokenizer), LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} >= {"q_proj", "v_proj", "down_proj"}  # all-linear
    assert not any("lm_head" in n or "embed" in n for n in trainable)
    with torch.no_grad():  # B starts at zero (the adapted model is the base); give it a value
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    ids = torch.tensor([[5, 9, 13, 2, 7, 11]])
    model.eval()
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        merged = plain_model(model)
        assert type(merged).__name__ == "LlamaForCausalLM"
        assert_close(merged(input_ids=ids).logits, adapted, atol=1e-5, rtol=1e-5)


def test_lora_on_modules_the_model_lacks_is_a_clear_error(quick_tokenizer) -> None:
    bad = TrainingConfig(lora=LoraSettings(target_modules=["qkv"]))
    with pytest.raises(ValueError, match=r"training.lora.target_modules=\['qkv'\] does not fit.*q_proj"):
        prepare_for_training(make_model(quick_tokenizer), bad)


def lora_fit(tok, rows, optim, out: Path, objective=sft_objective):
    model = prepare_for_training(make_model(tok), LORA)
    result = train(model, rows, objective=objective, collate=functools.partial(collate_sft, pad_id=tok.pad_token_id),
                   optim=optim, output_dir=out, seed=0, logger=InMemoryLogger())
    return plain_model(model), result


def test_lora_resumes_after_a_kill_to_the_same_weights(quick_tokenizer, sft_rows, tmp_path: Path) -> None:
    optim = OPTIM.model_copy(update={"save_every": 4, "learning_rate": 1e-2})
    straight, _ = lora_fit(quick_tokenizer, sft_rows[:16], optim, tmp_path / "straight")
    with pytest.raises(SimulatedKill):
        lora_fit(quick_tokenizer, sft_rows[:16], optim, tmp_path / "killed", objective=FailingObjective(at=6))
    resumed, result = lora_fit(quick_tokenizer, sft_rows[:16], optim, tmp_path / "killed")
    assert result.resumed_from_step == 4
    base = make_model(quick_tokenizer).state_dict()
    for name, tensor in straight.state_dict().items():
        assert_close(resumed.state_dict()[name], tensor, atol=1e-6, rtol=0, msg=name)
    changed = [n for n, t in straight.state_dict().items() if not torch.equal(t, base[n])]
    assert changed and all(n.endswith("proj.weight") for n in changed)  # only adapted layers moved


def test_gradient_checkpointing_keeps_loss_and_gradients(quick_tokenizer, tmp_path: Path) -> None:
    """DPO's prefix-shared rows (4D mask, restarted positions) through checkpointed decoder layers."""
    cfg = load_config(None, ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                             "model.tiny.num_layers=2", "model.tiny.num_heads=2"])
    prepared = prepare_data(cfg, tmp_path / "data")
    base = build_base_model(cfg, prepared, tmp_path / "base")
    rows = reference_annotated_pairs(cfg, prepared, base, "train")[:6]
    objective, collate = method_plan("dpo", pad_id=quick_tokenizer.pad_token_id)
    batch = collate(rows)
    results = []
    for checkpointing in (False, True):
        model = prepare_for_training(load_causal_lm(base.path), TrainingConfig(gradient_checkpointing=checkpointing))
        model.train()
        with torch.no_grad():  # move away from the reference, so the loss is not log 2 with tiny gradients
            model.model.embed_tokens.weight.mul_(1.5)
        saved = [0]  # bytes autograd keeps for the backward pass: the activations

        def keep(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            loss = objective(model, batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, saved[0]))
    assert results[1][2] < 0.7 * results[0][2]  # the layers' activations are recomputed, not kept
    assert_close(results[1][0], results[0][0], atol=1e-6, rtol=1e-6)
    for name, grad in results[0][1].items():
        assert_close(results[1][1][name], grad, atol=1e-6, rtol=1e-5, msg=name)
    assert results[0][1]["model.layers.0.self_attn.q_proj.weight"].abs().sum() > 0


def test_lora_sft_stage_saves_a_plain_model(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64",
                             "model.tiny.num_layers=1", "model.tiny.num_heads=2", "sft.optim.max_steps=3",
                             "training.lora.r=4", "training.gradient_checkpointing=true"])
    prepared = prepare_data(cfg, tmp_path / "data")
    base = build_base_model(cfg, prepared, tmp_path / "base")
    out = run_sft(cfg, prepared, base, tmp_path / "sft", InMemoryLogger())
    saved = Path(out.model.path)
    assert not (saved / "adapter_config.json").exists() and (saved / "model.safetensors").is_file()
    model = load_causal_lm(str(saved))
    assert model.config.use_cache is not False  # checkpointing's setting is not saved into the model
    before = load_causal_lm(base.path).state_dict()
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"], before["model.embed_tokens.weight"])
    assert not torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.weight"],
                           before["model.layers.0.self_attn.q_proj.weight"])


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_a_plain_model(tmp_path: Path) -> None:
    """torch.compile (inductor on CPU: ~40 s to compile here, so off by default) trains to the same weights."""
    sets = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1",
            "model.tiny.num_heads=2", "sft.optim.max_steps=3"]
    cfg = load_config(None, sets)
    prepared = prepare_data(cfg, tmp_path / "data")
    base = build_base_model(cfg, prepared, tmp_path / "base")
    saved = {}
    for compiled in (False, True):
        run_cfg = load_config(None, [*sets, f"training.compile={str(compiled).lower()}"])
        out = run_sft(run_cfg, prepared, base, tmp_path / f"sft-{compiled}", InMemoryLogger())
        saved[compiled] = (out.final_metrics["loss"], load_causal_lm(out.model.path).state_dict())
    assert saved[True][0] == pytest.approx(saved[False][0], abs=1e-5)
    assert saved[True][1].keys() == saved[False][1].keys()  # no `_orig_mod.` prefixes
    for name, tensor in saved[False][1].items():
        assert_close(saved[True][1][name], tensor, atol=1e-5, rtol=1e-4, msg=name)
