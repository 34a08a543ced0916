"""Evaluation stages as plain functions: held-out preference metrics of policy vs reference, and the
generate-and-judge comparison with the reference model."""

from __future__ import annotations

import torch
from pydantic import BaseModel

from alignment.config import PipelineConfig
from alignment.logprobs import collate_pairs, sequence_logps
from alignment.models import load_causal_lm, load_tokenizer
from alignment.stages import ModelRef, PreparedData, read_jsonl, reference_annotated_pairs
from evaluation.generate import generate_responses
from evaluation.judges import make_judge
from evaluation.stats import win_rate


class Comparison(BaseModel):
    metrics: dict[str, float]
    table: list[dict[str, str]]  # prompt, reference, policy, verdict


@torch.no_grad()
def heldout_preference_metrics(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef,
                               reference: ModelRef, batch_size: int = 64) -> dict[str, float]:
    """Implicit-reward metrics on held-out pairs: r = beta * (log pi(y|x) - log ref(y|x)) (DPO Eq. 5).

    eval/rewards/accuracies is the share of pairs with r(chosen) > r(rejected); eval/policy_accuracy and
    eval/reference_accuracy are the shares where the model itself gives chosen the higher log-prob."""
    rows = reference_annotated_pairs(cfg, prepared, reference, "heldout")
    tok = load_tokenizer(policy.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(policy.path, trust_remote_code=cfg.model.trust_remote_code)
    model.eval()
    beta = cfg.dpo.beta
    chosen_r, rejected_r, pol_acc, ref_acc = [], [], [], []
    for start in range(0, len(rows), batch_size):
        batch = collate_pairs(rows[start:start + batch_size], tok.pad_token_id)
        c, r = sequence_logps(model, batch).split()
        chosen_r.append(beta * (c.sum - batch["ref_chosen_logps"]))
        rejected_r.append(beta * (r.sum - batch["ref_rejected_logps"]))
        pol_acc.append((c.sum > r.sum).float())
        ref_acc.append((batch["ref_chosen_logps"] > batch["ref_rejected_logps"]).float())
    cr, rr = torch.cat(chosen_r), torch.cat(rejected_r)
    return {
        "eval/rewards/chosen": cr.mean().item(),
        "eval/rewards/rejected": rr.mean().item(),
        "eval/rewards/margins": (cr - rr).mean().item(),
        "eval/rewards/accuracies": (cr > rr).float().mean().item(),
        "eval/policy_accuracy": torch.cat(pol_acc).mean().item(),
        "eval/reference_accuracy": torch.cat(ref_acc).mean().item(),
        "eval/pairs": float(len(rows)),
    }


def heldout_prompts(prepared: PreparedData, limit: int | None) -> list[list[dict[str, str]]]:
    """Distinct held-out prompts, in file order."""
    seen, prompts = set(), []
    for row in read_jsonl(prepared.path("heldout")):
        key = repr(row["prompt"])
        if key not in seen:
            seen.add(key)
            prompts.append(row["prompt"])
    return prompts[:limit] if limit else prompts


def compare_with_reference(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef,
                           reference: ModelRef) -> Comparison:
    """Greedy answers from policy and reference on held-out prompts (identical decoding), judged pairwise;
    win rate with ties counted half and a Wilson 95 % interval."""
    prompts = heldout_prompts(prepared, cfg.eval.max_prompts)
    answers = {}
    for role, ref in (("policy", policy), ("reference", reference)):
        tok = load_tokenizer(ref.path, trust_remote_code=cfg.model.trust_remote_code)
        model = load_causal_lm(ref.path, trust_remote_code=cfg.model.trust_remote_code)
        answers[role] = generate_responses(model, tok, prompts, max_new_tokens=cfg.eval.max_new_tokens,
                                           batch_size=cfg.eval.batch_size)
        del model
    judge = make_judge(cfg.eval.judge)
    table = []
    for prompt, pol, ref in zip(prompts, answers["policy"], answers["reference"], strict=True):
        table.append({"prompt": prompt[-1]["content"], "reference": ref, "policy": pol,
                      "verdict": judge.compare(prompt, pol, ref)})
    metrics = {f"compare/{k}": v for k, v in win_rate(row["verdict"] for row in table).items()}
    if hasattr(judge, "score"):
        for role in ("policy", "reference"):
            scores = [judge.score(p, a) for p, a in zip(prompts, answers[role], strict=True)]
            metrics[f"compare/{role}_mean_score"] = sum(scores) / len(scores)
    return Comparison(metrics=metrics, table=table)
