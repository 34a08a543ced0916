"""Evaluation stages as plain functions: held-out preference metrics of policy vs reference, lm-eval
benchmarks of both, train/eval contamination, and the generate-and-judge comparison with the reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from alignment.config import PipelineConfig
from alignment.data import read_jsonl
from alignment.instruct.instructions import strip_instructions
from alignment.kernels.runtime_plan import apply_plan
from alignment.models.loading import load_causal_lm, load_tokenizer
from alignment.records import ModelRef, PreparedData
from alignment.stages import HELDOUT_PROMPTS, model_device, reference_annotated_pairs, stage_plan
from alignment.training.divergence import estimate_kl
from alignment.training.logprobs import collate_pairs, sequence_logps
from alignment.training.onpolicy import last_user_text
from evaluation.benchmarks import eval_set_texts, run_benchmarks
from evaluation.contamination import contamination
from evaluation.generate import generate_responses
from evaluation.judges import judge_pairs, make_judge
from evaluation.quality import answer_quality, compare_quality
from evaluation.stats import length_controlled, win_rate


class Comparison(BaseModel):
    metrics: dict[str, float]  # compare/...: win rate and its interval, counts, judge errors, length view
    table: list[dict[str, str]]  # prompt, reference, policy, verdict ("error" when the judge failed)


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def benchmark_model(cfg: PipelineConfig, ref: ModelRef) -> dict[str, Any]:
    """lm-eval results of one model (loaded in memory, handed to HFLM) on eval.benchmarks.tasks."""
    tok = load_tokenizer(ref.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(ref.path, trust_remote_code=cfg.model.trust_remote_code)
    try:
        return run_benchmarks(model, tok, cfg.eval.benchmarks, device=device(), seed=cfg.run.seed)
    finally:
        del model


def prompt_text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] != "assistant")


def question_text(messages: list[dict[str, str]]) -> str:
    """The prompt without instruction sentences of the instruction task (alignment/instruct/instructions.py): those few
    templates recur across splits by design, so contamination is measured on the questions."""
    return strip_instructions(prompt_text(messages))


def contamination_report(cfg: PipelineConfig, prepared: PreparedData) -> dict[str, float]:
    """Share of each eval set's items (held-out prompts, every local benchmark task) that share a word
    n-gram (eval.contamination_ngram) with a training prompt (preference train split and SFT data)."""
    train = [question_text(r["prompt"]) for r in read_jsonl(prepared.path("train"))]
    if prepared.path("sft").is_file():  # on-policy data has no SFT split
        train += [question_text(r["messages"]) for r in read_jsonl(prepared.path("sft"))]
    sets = {"heldout": [question_text(p) for p in heldout_prompts(prepared, None)]}
    if cfg.eval.benchmarks.enabled:
        sets.update(eval_set_texts(cfg.eval.benchmarks.tasks))
    return contamination(train, sets, cfg.eval.contamination_ngram)


@torch.no_grad()
def heldout_preference_metrics(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef,
                               reference: ModelRef, batch_size: int = 64) -> dict[str, float]:
    """Implicit-reward metrics on held-out pairs: r = beta * (log pi(y|x) - log ref(y|x)) (DPO Eq. 5).

    eval/rewards/accuracies is the share of pairs with r(chosen) > r(rejected); eval/policy_accuracy and
    eval/reference_accuracy are the shares where the model itself gives chosen the higher log-prob."""
    rows = reference_annotated_pairs(cfg, prepared, reference, "heldout")
    tok = load_tokenizer(policy.path, trust_remote_code=cfg.model.trust_remote_code)
    model = load_causal_lm(policy.path, trust_remote_code=cfg.model.trust_remote_code)
    apply_plan(model, stage_plan(cfg, "preference", model_device(model)))  # as the preference stage scores
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
    """Distinct held-out prompts, in file order (on-policy data: every held-out prompt, paired or not)."""
    every = Path(prepared.dir) / HELDOUT_PROMPTS
    seen, prompts = set(), []
    for row in read_jsonl(every if every.is_file() else prepared.path("heldout")):
        key = repr(row["prompt"])
        if key not in seen:
            seen.add(key)
            prompts.append(row["prompt"])
    return prompts[:limit] if limit else prompts


def compare_with_reference(cfg: PipelineConfig, prepared: PreparedData, policy: ModelRef,
                           reference: ModelRef) -> Comparison:
    """Greedy answers from policy and reference on held-out prompts (identical decoding), judged pairwise;
    win rate with ties counted half and a Wilson 95 % interval. Beside the judge, what the training reward did
    not write (evaluation/quality.py): degeneration, correctness, length of both models' answers, and an
    estimate of KL(policy || reference) from the policy's own samples."""
    prompts = heldout_prompts(prepared, cfg.eval.max_prompts)
    answers, models, tokenizers = {}, {}, {}
    for role, ref in (("policy", policy), ("reference", reference)):
        tokenizers[role] = load_tokenizer(ref.path, trust_remote_code=cfg.model.trust_remote_code)
        model = load_causal_lm(ref.path, trust_remote_code=cfg.model.trust_remote_code)
        torch.manual_seed(cfg.run.seed)  # identical, seeded decoding for both (greedy today)
        answers[role] = generate_responses(model, tokenizers[role], prompts, max_new_tokens=cfg.eval.max_new_tokens,
                                           batch_size=cfg.eval.batch_size)
        if cfg.eval.kl_prompts:  # both models stay loaded only for the KL estimate
            models[role] = model
        del model
    kl = None
    if cfg.eval.kl_prompts:
        kl = estimate_kl(models["policy"], models["reference"], tokenizers["policy"], prompts[:cfg.eval.kl_prompts],
                         max_new_tokens=cfg.eval.kl_max_new_tokens, seed=cfg.run.seed,
                         batch_size=cfg.eval.batch_size,
                         plan=stage_plan(cfg, "preference", model_device(models["policy"])))
    del models
    judge = make_judge(cfg.eval.judge, device=device())
    try:
        verdicts = judge_pairs(judge, prompts, answers["policy"], answers["reference"])
        scores = {}
        if hasattr(judge, "score_many") or hasattr(judge, "score"):
            for role in ("policy", "reference"):
                scores[role] = (judge.score_many(prompts, answers[role]) if hasattr(judge, "score_many")
                                else [judge.score(p, a) for p, a in zip(prompts, answers[role], strict=True)])
    finally:
        if hasattr(judge, "close"):
            judge.close()
    table = [{"prompt": prompt_text(prompt), "reference": ref, "policy": pol, "verdict": verdict}
             for prompt, pol, ref, verdict in zip(prompts, answers["policy"], answers["reference"], verdicts,
                                                  strict=True)]
    metrics = {f"compare/{k}": v for k, v in win_rate(verdicts).items()}
    metrics.update({f"compare/{k}": v for k, v in length_controlled(table).items()})
    metrics.update({f"compare/judge_{k}": float(v) for k, v in getattr(judge, "stats", {}).items()})
    for role, values in scores.items():
        metrics[f"compare/{role}_mean_score"] = sum(values) / len(values)
    if hasattr(judge, "pass_rates"):  # the instruction verifier: per prompt and per instruction kind
        for role in ("policy", "reference"):
            passed, rates = judge.pass_rates(prompts, answers[role])
            for row, ok in zip(table, passed, strict=True):
                row[f"{role}_pass"] = "yes" if ok else "no"
            metrics.update({f"compare/pass_rate{'' if k == 'all' else '/' + k}/{role}": v for k, v in rates.items()})
        metrics["compare/pass_rate_gain"] = metrics["compare/pass_rate/policy"] - metrics["compare/pass_rate/reference"]
    qualities = {role: [answer_quality(last_user_text(p), a) for p, a in zip(prompts, answers[role], strict=True)]
                 for role in ("policy", "reference")}
    for i, row in enumerate(table):
        for role in ("policy", "reference"):
            q = qualities[role][i]
            row[f"{role}_flags"] = ", ".join(q.assessment.flags())
            if q.correct is not None:
                row[f"{role}_correct"] = "yes" if q.correct else "no"
    metrics.update(compare_quality(qualities["policy"], qualities["reference"]))
    if kl is not None:
        metrics["compare/kl"] = kl.mean
        metrics["compare/kl_prompts"] = float(len(kl.per_prompt))
    return Comparison(metrics=metrics, table=table)
