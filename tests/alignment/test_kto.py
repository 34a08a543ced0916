"""KTO: `kto_loss` / `kto_kl_reference` against TRL 1.16's own KTOTrainer loss code on identical log-probs, the
mismatched-pair collation, and the objective on the tiny model."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from alignment.data.tokenization import render
from alignment.models.tiny import build_model
from alignment.training.logprobs import collate_pairs, sequence_logps
from alignment.training.losses import kto_kl_reference, kto_loss
from alignment.training.objectives import collate_kto, kl_completions, kto_reference_logps, make_kto_objective

T = torch.tensor
BETA, DESIRABLE_WEIGHT, UNDESIRABLE_WEIGHT = 0.1, 2.0, 0.5


# ---- against TRL ----------------------------------------------------------------------------------------------


class LogpTableModel:
    """Stands for the policy's forward pass in TRL's KTOTrainer: TRL calls `model(input_ids=..., labels=...,
    fused_lm_head=True)` and sums `.log_probs[:, -(T - 1):]` over the completion. Each sequence here is two ids,
    [kind, row] (kind 0: the example's own completion, 1: its mismatched KL completion), so T - 1 = 1 and the
    one "token" log-prob is the whole completion's summed log-prob, read from the tables. `entropy` and
    `mean_logits` (TRL's logging only) are zeros."""

    def __init__(self, logps: torch.Tensor, kl_logps: torch.Tensor) -> None:
        self.tables = torch.stack([logps, kl_logps])  # (2, B)

    def __call__(self, *, input_ids: torch.Tensor, **_: object) -> SimpleNamespace:
        per_token = self.tables[input_ids[:, 0], input_ids[:, 1]][:, None]  # (B, 1)
        zeros = torch.zeros_like(per_token)
        return SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros)


def trl_kto(policy: torch.Tensor, reference: torch.Tensor, desirable: torch.Tensor, policy_kl: torch.Tensor,
            reference_kl: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """TRL 1.16's KTO loss and logged metrics for one batch, from `KTOTrainer._compute_loss` itself (TRL 1.16 has
    no separate `kto_loss` method: the loss maths sits inline there). `self` is a stub with what that code reads
    of a trainer built with `KTOConfig(loss_type="kto", beta, desirable_weight, undesirable_weight,
    precompute_ref_log_probs=True)` on one process: `calculate_KL` (True for "kto"), `precompute_ref_logps` (the
    reference log-probs come from the batch's `ref_logps` / `ref_KL_logps`), no MoE aux loss, a model in train
    mode, an accelerator on CPU whose `gather_for_metrics` returns its input (what it does with one process),
    the metric store, and TRL's own `_compute_kl_logps` bound to the stub."""
    kto_trainer = pytest.importorskip("trl.trainer.kto_trainer", reason="TRL (the bench extra) is not installed")
    trainer = kto_trainer.KTOTrainer
    stub = SimpleNamespace(
        beta=BETA, desirable_weight=DESIRABLE_WEIGHT, undesirable_weight=UNDESIRABLE_WEIGHT, loss_type="kto",
        calculate_KL=True, precompute_ref_logps=True, aux_loss_enabled=False,
        model=SimpleNamespace(training=True),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda value: value),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
    )
    stub._compute_kl_logps = partial(trainer._compute_kl_logps, stub)
    B = policy.shape[0]
    rows = torch.arange(B)
    ones, completion_mask = torch.ones((B, 2), dtype=torch.long), T([[0, 1]] * B)
    inputs = {
        "input_ids": torch.stack([torch.zeros_like(rows), rows], 1), "attention_mask": ones,
        "completion_mask": completion_mask,
        "KL_input_ids": torch.stack([torch.ones_like(rows), rows], 1), "KL_attention_mask": ones,
        "KL_completion_mask": completion_mask,
        "label": desirable, "ref_logps": reference, "ref_KL_logps": reference_kl,
    }
    loss = trainer._compute_loss(stub, LogpTableModel(policy, policy_kl), inputs, return_outputs=False)
    return loss, {name: values[-1] for name, values in stub._metrics["train"].items()}


def random_batch(seed: int, desirable: list[bool], kl_shift: float) -> tuple[torch.Tensor, ...]:
    """Summed log-probs of 6-40 token completions: policy, reference, and the mismatched pairs' policy and
    reference, whose log-ratios average about `kl_shift`."""
    g = torch.Generator().manual_seed(seed)
    B = len(desirable)
    reference = -torch.rand(B, generator=g) * 40 - 6
    policy = reference + torch.randn(B, generator=g) * 8
    reference_kl = -torch.rand(B, generator=g) * 60 - 10
    policy_kl = reference_kl + kl_shift + torch.randn(B, generator=g)
    return policy, reference, T(desirable), policy_kl, reference_kl


@pytest.mark.parametrize(("desirable", "kl_shift"), [
    ([True, False, True, True, False, False, True, False], 3.0),  # mixed, z0 > 0
    ([True, False, False, True, False, True], -2.0),  # mixed, the KL estimate < 0: z0 clamped to 0
    ([True, True, True, True], 1.5),  # only desirable examples
    ([False, False, False], 0.7),  # only undesirable examples
])
def test_kto_matches_trl(desirable: list[bool], kl_shift: float) -> None:
    """Same log-prob tensors through alignflow's `kto_kl_reference` + `kto_loss` and through TRL's
    `KTOTrainer._compute_loss` (beta 0.1, weights 2 / 0.5): loss, kl and every reward / log-prob metric TRL logs
    agree within 1e-6. TRL leaves out the metrics of a kind the batch lacks (and margins unless both are
    present); alignflow reports 0 for them."""
    policy, reference, labels, policy_kl, reference_kl = random_batch(len(desirable), desirable, kl_shift)
    trl_loss, trl_metrics = trl_kto(policy, reference, labels, policy_kl, reference_kl)
    z0 = kto_kl_reference(policy_kl, reference_kl)
    out = kto_loss(policy, reference, labels, z0, beta=BETA, desirable_weight=DESIRABLE_WEIGHT,
                   undesirable_weight=UNDESIRABLE_WEIGHT)
    assert_close(out.loss, trl_loss, atol=1e-6, rtol=0)
    if kl_shift < 0:
        assert out.metrics["kl"].item() == 0.0 == trl_metrics["kl"]
    compared = ["kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]
    for name in compared:
        if name in trl_metrics:
            assert_close(out.metrics[name].item(), trl_metrics[name], atol=1e-6, rtol=1e-6, msg=name)
        else:
            assert out.metrics[name].item() == 0.0, name
    present = {name for name in compared if name in trl_metrics}
    assert ("rewards/chosen" in present) == any(desirable)
    assert ("rewards/rejected" in present) == (not all(desirable))


# ---- collation and the objective -------------------------------------------------------------------------------


def unpaired_rows(tok) -> list[dict]:
    """Four unpaired examples of the quickstart's chat format: two desirable, two undesirable."""
    examples = [("What is 2 + 2?", "4", True), ("Name a colour.", "The sky is a colour.", False),
                ("Say hello.", "Hello!", True), ("What is 3 + 5?", "I cannot help with that.", False)]
    rows = []
    for prompt, answer, label in examples:
        prompt_ids = tok.encode(render(tok, [{"role": "user", "content": prompt}], generation_prompt=True))
        rows.append({"prompt_ids": prompt_ids, "completion_ids": tok.encode(answer + "<|im_end|>"), "label": label})
    return rows


@pytest.fixture(scope="module")
def tiny(quick_tokenizer) -> torch.nn.Module:
    return build_model(quick_tokenizer, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                       max_position_embeddings=256, seed=0)


def test_kl_completions_rotate_like_trl() -> None:
    """TRL's rotation by +1: (x_1, y_3), (x_2, y_1), (x_3, y_2); a batch of one has no mismatched pair."""
    rows = [{"prompt_ids": [1], "completion_ids": [10 + i], "label": True} for i in range(3)]
    assert kl_completions(rows) == [[12], [10], [11]]
    with pytest.raises(ValueError, match="at least 2"):
        collate_kto(rows[:1], pad_id=0)


def test_collate_kto_scores_the_same_sequences_as_concatenated_pairs(quick_tokenizer, tiny) -> None:
    """The prefix-shared KTO batch gives, per row, log pi(y_i|x_i) and log pi(y_{i-1}|x_i) equal to those of
    the plain sequences prompt_i + completion_i and prompt_i + completion_{i-1} (TRL's `KL_input_ids`)."""
    rows = unpaired_rows(quick_tokenizer)
    batch = collate_kto(rows, quick_tokenizer.pad_token_id)
    assert_close(batch["desirable"], T([True, False, True, False]))
    matched, mismatched = sequence_logps(tiny, batch).split()
    pairs = [{"prompt_ids": r["prompt_ids"], "chosen_ids": r["completion_ids"], "rejected_ids": kl}
             for r, kl in zip(rows, kl_completions(rows), strict=True)]
    plain_matched, plain_mismatched = sequence_logps(tiny, collate_pairs(pairs, quick_tokenizer.pad_token_id)).split()
    assert_close(matched.sum, plain_matched.sum, atol=1e-4, rtol=1e-5)
    assert_close(mismatched.sum, plain_mismatched.sum, atol=1e-4, rtol=1e-5)
    assert_close(matched.count, T([len(r["completion_ids"]) for r in rows]))


def test_kto_objective_at_the_reference(quick_tokenizer, tiny) -> None:
    """Policy == reference (reference log-probs precomputed from the same model): every log-ratio is 0, so
    rewards and z0 are 0 and each example's loss is lambda_y * (1 - sigma(0)) = lambda_y / 2; with two desirable
    (lambda_D = 2) and two undesirable (lambda_U = 0.5): (2 * 1 + 2 * 0.25) / 4 = 0.625. The loss is finite and
    a gradient reaches the weights."""
    rows = unpaired_rows(quick_tokenizer)
    matched, mismatched = kto_reference_logps(tiny, rows, quick_tokenizer.pad_token_id, batch_size=4)
    rows = [{**r, "ref_logps": m, "ref_kl_logps": k} for r, m, k in zip(rows, matched, mismatched, strict=True)]
    batch = collate_kto(rows, quick_tokenizer.pad_token_id)
    objective = make_kto_objective(beta=BETA, desirable_weight=DESIRABLE_WEIGHT, undesirable_weight=UNDESIRABLE_WEIGHT)
    tiny.train()
    tiny.zero_grad(set_to_none=True)
    out = objective(tiny, batch)
    assert torch.isfinite(out.loss)
    assert_close(out.loss, T(0.625), atol=1e-5, rtol=0)
    for name in ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl"):
        assert_close(out.metrics[name], T(0.0), atol=1e-5, rtol=0, msg=name)
    out.loss.backward()
    grads = [p.grad for p in tiny.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


# ---- KTO as a pipeline method: pairs unpaired, the mismatched completion fixed per example ----------------------


def test_unpair_makes_a_desirable_and_an_undesirable_example_per_pair() -> None:
    from alignment.training.objectives import unpair

    pairs = [{"prompt_ids": [1], "chosen_ids": [10], "rejected_ids": [20]},
             {"prompt_ids": [2], "chosen_ids": [11], "rejected_ids": [21]},
             {"prompt_ids": [3], "chosen_ids": [12], "rejected_ids": [22]}]
    rows = unpair(pairs)
    # own completion as chosen_ids; the KL completion: the next example's (wrapping) whose prompt differs
    assert [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"], r["label"]) for r in rows] == [
        ([1], [10], [11], True), ([1], [20], [11], False),
        ([2], [11], [12], True), ([2], [21], [12], False),
        ([3], [12], [10], True), ([3], [22], [10], False)]
    # unpaired examples (e.g. both answers of a "both bad" vote) follow the pairs' and take part in the rotation
    both_bad = [{"prompt_ids": [4], "completion_ids": [30], "label": False},
                {"prompt_ids": [4], "completion_ids": [31], "label": False}]
    rows = unpair(pairs[:1], both_bad)
    assert [(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"], r["label"]) for r in rows] == [
        ([1], [10], [30], True), ([1], [20], [30], False), ([4], [30], [10], False), ([4], [31], [10], False)]
    assert len(unpair([], both_bad)) == 2  # one prompt only: the next example's answer
    with pytest.raises(ValueError, match="KTO needs at least 2 examples"):
        unpair([], both_bad[:1])


def test_the_pipeline_kto_objective_is_eq8_on_the_unpaired_rows(quick_tokenizer, tiny) -> None:
    """The KTO method's plan (`method_plan("kto")`) on `unpair`'s rows with reference log-probs attached: the loss
    equals Eq. 8 computed by hand from the policy's and reference's summed log-probs of each example's own and
    mismatched completion, each scored as a plain concatenation."""
    from alignment.training.objectives import method_plan, unpair

    pad = quick_tokenizer.pad_token_id
    src = unpaired_rows(quick_tokenizer)
    pairs = [{"prompt_ids": src[i]["prompt_ids"], "chosen_ids": src[i]["completion_ids"],
              "rejected_ids": src[i + 1]["completion_ids"]} for i in (0, 2)]
    rows = unpair(pairs)
    ref_own, ref_kl = [-5.0, -7.5, -6.0, -9.0], [-8.0, -8.5, -7.0, -6.5]
    annotated = [dict(r, ref_chosen_logps=a, ref_rejected_logps=b) for r, a, b in zip(rows, ref_own, ref_kl, strict=True)]
    objective, collate = method_plan("kto", pad_id=pad, beta=BETA, desirable_weight=DESIRABLE_WEIGHT,
                                     undesirable_weight=UNDESIRABLE_WEIGHT)
    tiny.eval()
    with torch.no_grad():
        out = objective(tiny, collate(annotated))

        def summed(prompt: list[int], completion: list[int]) -> float:
            batch = collate_pairs([{"prompt_ids": prompt, "chosen_ids": completion, "rejected_ids": completion}], pad)
            return sequence_logps(tiny, batch).split()[0].sum.item()

        own = torch.tensor([summed(r["prompt_ids"], r["chosen_ids"]) for r in rows])
        kl = torch.tensor([summed(r["prompt_ids"], r["rejected_ids"]) for r in rows])
    z0 = max(0.0, (kl - torch.tensor(ref_kl)).mean().item())
    r = own - torch.tensor(ref_own)
    desirable = torch.tensor([True, False, True, False])
    by_hand = torch.where(desirable, DESIRABLE_WEIGHT * (1 - torch.sigmoid(BETA * (r - z0))),
                          UNDESIRABLE_WEIGHT * (1 - torch.sigmoid(BETA * (z0 - r)))).mean()
    assert_close(out.loss, by_hand, atol=1e-5, rtol=0)
    assert_close(out.metrics["kl"], torch.tensor(z0), atol=1e-5, rtol=0)


def test_kto_trains_on_the_pairs_and_the_unpaired_examples(tmp_path, caplog) -> None:
    """data.unpaired_path (e.g. the arena's "both bad" votes) goes through the data stage like any split
    (validated, counted, fingerprinted, tokenized); KTO's training rows are the pairs' examples followed by
    the unpaired ones, with reference log-probs for all; DPO leaves them out and says so."""
    import json
    import logging

    from alignment.config import load_config
    from alignment.stages import build_base_model, prepare_data, training_rows, write_quickstart_files

    tiny_model = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1",
                  "model.tiny.num_heads=2"]
    raw = write_quickstart_files(load_config(None, []), tmp_path / "raw")
    both_bad = [{"prompt": "What sound does a cow make?", "completion": answer, "label": False}
                for answer in ("Quack.", "I cannot say.")]
    unpaired = tmp_path / "unpaired.jsonl"
    unpaired.write_text("".join(json.dumps(r) + "\n" for r in both_bad))
    files = ["data.source=files", f"data.sft_path={raw['sft']}", f"data.train_path={raw['train']}",
             f"data.heldout_path={raw['heldout']}", f"data.unpaired_path={unpaired}", *tiny_model]
    cfg = load_config(None, [*files, "preference.method=kto"])
    prepared = prepare_data(cfg, tmp_path / "data")
    assert prepared.counts["unpaired"] == 2
    base = build_base_model(cfg, prepared, tmp_path / "base")
    rows = training_rows(cfg, prepared, base, "train")
    pairs = prepared.counts["train"]
    assert len(rows) == 2 * pairs + 2 and [r["label"] for r in rows[-2:]] == [False, False]
    assert all("ref_chosen_logps" in r and "ref_rejected_logps" in r for r in rows)
    assert len(training_rows(cfg, prepared, base, "heldout")) == 2 * prepared.counts["heldout"]  # training only
    dpo = load_config(None, files)
    with caplog.at_level(logging.WARNING, logger="alignflow.stages"):
        assert len(training_rows(dpo, prepared, base, "train")) == pairs
    assert "2 unpaired examples (data.unpaired_path) left out" in caplog.text
    with pytest.raises(Exception, match="data.unpaired_path is read with data.source=files"):
        load_config(None, [f"data.unpaired_path={unpaired}"])
