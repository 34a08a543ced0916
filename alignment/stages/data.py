"""The data stages: the quickstart's or the user's data prepared, the instruction task's prompts, and the
on-policy pairs sampled from the model being aligned (alignment/training/onpolicy.py)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from alignment.config import PipelineConfig
from alignment.data import write_jsonl
from alignment.data.prepare import PrepareOptions, prepare
from alignment.instruct import instructions, quicktask
from alignment.models.generation import Answer, GenerationStats, sample_answers
from alignment.models.loading import load_causal_lm, load_tokenizer
from alignment.records import ModelRef, PreparedData
from alignment.stages.keys import stage_key
from alignment.training.onpolicy import (
    Scorer,
    case_repairs,
    distinct_prompts,
    last_user_text,
    make_pairs,
    score_answers,
)

log = logging.getLogger(__name__)


HELDOUT_PROMPTS = "heldout_prompts.jsonl"  # every held-out prompt, beside on-policy pairs (paired or not)


def write_quickstart_files(cfg: PipelineConfig, raw_dir: Path) -> dict[str, Path]:
    """Generate the quickstart task and write it as ordinary user files (strings or chat messages)."""
    q = cfg.data.quick
    rows = quicktask.generate(cfg.run.seed, q.heldout_fraction, q.good_fraction, q.refusal_fraction)
    if q.conversational:
        rows = {name: [as_conversational(r) for r in split] for name, split in rows.items()}
    paths = {}
    for name, split in rows.items():
        paths[name] = raw_dir / f"{name}.jsonl"
        write_jsonl(split, paths[name])
    return paths


def as_conversational(row: dict[str, str]) -> dict[str, Any]:
    prompt = [{"role": "user", "content": row["prompt"]}]
    if "completion" in row:
        return {"messages": prompt + [{"role": "assistant", "content": row["completion"]}]}
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}]}


def prepare_data(cfg: PipelineConfig, out_dir: Path) -> PreparedData:
    """Read, validate, de-duplicate and split the data; write canonical files, a report and length plots
    (alignment/data/prepare.py). The quickstart's generated files go through the same loader as users' data."""
    d = cfg.data
    if d.source == "instructions":
        return write_instruction_prompts(cfg, out_dir / "prepared")
    if d.source == "quickstart":
        raw = write_quickstart_files(cfg, out_dir / "raw")
        sources = {"sft": str(raw["sft"]), "train": str(raw["train"]), "heldout": str(raw["heldout"])}
    else:
        sources = {"sft": d.sft_path, "train": d.train_path, "heldout": d.heldout_path, "unpaired": d.unpaired_path}
    result = prepare(sources, out_dir / "prepared", PrepareOptions.from_config(d, cfg.run.seed))
    return PreparedData(dir=result.dir, fingerprint=stage_key(result.fingerprints), counts=result.counts,
                        report=result.report)


def write_instruction_prompts(cfg: PipelineConfig, out_dir: Path) -> PreparedData:
    """The verifiable-instruction task (alignment/instruct/instructions.py) as prompt-only rows: `train.jsonl` and
    `heldout.jsonl` hold {"prompt": [user message], "question_id", "instruction"}; the onpolicy stage samples
    the answers and turns them into pairs."""
    t = cfg.data.instructions
    kinds = t.kinds or list(instructions.KINDS)
    task = instructions.generate_task(cfg.run.seed, heldout_fraction=t.heldout_fraction,
                                      per_question=t.per_question, kinds=kinds,
                                      heldout_phrasings=t.heldout_phrasings)
    limits = {"train": t.max_train_prompts, "heldout": t.max_heldout_prompts}
    out_dir.mkdir(parents=True, exist_ok=True)
    counts, digests = {}, {}
    for split, items in task.items():
        rows = [item.to_row() for item in items[:limits[split]]]
        write_jsonl(rows, out_dir / f"{split}.jsonl")
        counts[split] = len(rows)
        digests[split] = hashlib.sha256((out_dir / f"{split}.jsonl").read_bytes()).hexdigest()
    report = {"source": "instructions", "kinds": kinds, "counts": counts, "prompts_only": True,
              "fingerprints": digests, "sources": {split: "generated instruction task" for split in counts},
              "drops": {split: {"rows_dropped": 0} for split in counts}}
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    return PreparedData(dir=str(out_dir), fingerprint=stage_key(digests), counts=counts, report=report)


def onpolicy_pairs(cfg: PipelineConfig, prepared: PreparedData, model: ModelRef, scorer: Scorer,
                   out_dir: Path) -> tuple[PreparedData, dict[str, float]]:
    """Sample `onpolicy.samples_per_prompt` answers per training and held-out prompt from `model`, score them,
    pair best over worst (alignment/training/onpolicy.py), and prepare the pairs like any user data. The held-out
    prompts are all kept (`heldout_prompts.jsonl`) so evaluation sees every one, paired or not."""
    o = cfg.onpolicy
    tok = load_tokenizer(model.path, trust_remote_code=cfg.model.trust_remote_code)
    lm = load_causal_lm(model.path, trust_remote_code=cfg.model.trust_remote_code)
    raw = out_dir / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, float] = {}
    stats = GenerationStats()
    reports = {}
    for offset, split in enumerate(("train", "heldout")):
        prompts = distinct_prompts(prepared.path(split))
        sampled_answers = sample_answers(
            lm, tok, prompts, max_new_tokens=o.max_new_tokens, batch_size=o.batch_size,
            num_samples=o.samples_per_prompt, do_sample=True, temperature=o.temperature, top_p=o.top_p,
            seed=cfg.run.seed * 1000 + offset, stats=stats)
        candidates = [list(row) for row in sampled_answers]
        sampled = [len(row) for row in candidates]
        if o.repair_case and split == "train":  # program-cased rewrites of the samples join the candidates
            for p, row in zip(prompts, candidates, strict=True):
                row.extend(Answer(text, a.finished) for a in list(row)
                           for text in case_repairs(last_user_text(p), [a.text]))
        answers = [[a.text for a in row] for row in candidates]
        finished = [[a.finished for a in row] for row in candidates]
        scores = score_answers(scorer, prompts, answers)
        rows, samples, report = make_pairs(prompts, answers, scores, min_gap=o.min_score_gap, sampled=sampled,
                                           require_correct_chosen=o.require_correct_chosen, finished=finished,
                                           choose_unfinished=o.choose_unfinished, match_lengths=o.match_lengths)
        log.info("onpolicy %s: %d prompts x %d samples (%d cut off at %d tokens) -> %d pairs (dropped: %d all "
                 "answers scored alike, %d only a cut-off answer to choose, %d chosen answer wrong); %.1f generated "
                 "tokens/s so far", split, report.prompts, o.samples_per_prompt, report.unfinished, o.max_new_tokens,
                 report.pairs, report.dropped_no_gap, report.dropped_unfinished, report.dropped_wrong_chosen,
                 stats.tokens_per_sec)
        if not rows:
            raise ValueError(
                f"onpolicy: no {split} prompt yielded a pair ({report.prompts} prompts, {report.samples} samples: "
                f"{report.dropped_no_gap} prompts' answers all scored alike by {scorer.name}, "
                f"{report.dropped_unfinished} had only answers cut off at onpolicy.max_new_tokens="
                f"{o.max_new_tokens} to choose, {report.dropped_wrong_chosen} only wrong answers); raise "
                f"onpolicy.samples_per_prompt, onpolicy.temperature or onpolicy.max_new_tokens")
        write_jsonl(rows, raw / f"{split}.jsonl")
        write_jsonl(samples, out_dir / f"samples-{split}.jsonl")
        metrics.update(report.metrics(split))
        reports[split] = report.to_dict()
        if split == "heldout":
            held = out_dir / "prepared"
            held.mkdir(parents=True, exist_ok=True)
            write_jsonl([{"prompt": p} for p in prompts], held / HELDOUT_PROMPTS)
    del lm
    metrics.update({"onpolicy/generated_tokens": float(stats.new_tokens), "onpolicy/seconds": stats.seconds,
                    "onpolicy/tokens_per_sec": stats.tokens_per_sec, "onpolicy/sequences": float(stats.sequences)})
    options = PrepareOptions.from_config(cfg.data, cfg.run.seed)
    result = prepare({"train": str(raw / "train.jsonl"), "heldout": str(raw / "heldout.jsonl")},
                     out_dir / "prepared", options)
    report = {**result.report, "onpolicy": {"scorer": scorer.name, "splits": reports,
                                            "generation": {"tokens": stats.new_tokens, "seconds": stats.seconds}}}
    (Path(result.dir) / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return PreparedData(dir=result.dir, fingerprint=stage_key(result.fingerprints), counts=result.counts,
                        report=report), metrics
