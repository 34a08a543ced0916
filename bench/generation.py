"""`alignflow bench --methods gen`: the project's batched generation against `model.generate`, same model,
same chat prompts, greedy, same maximum length, same threads.

Generators (each in its own process, like the training trials):

* ``alignflow``: `alignment.models.generation.generate` (what the on-policy stage and the evaluation use):
  length-sorted batches, one prefill per prompt, the LM head at the last position only, finished rows
  dropped from the batch and its KV cache.
* ``hf-sorted``: the same length-sorted batches through `model.generate` (generation.py before its own
  decode loop: finished rows ride along, padded, to the batch's longest answer).
* ``hf-padded-batch``: `model.generate` on batches in the prompts' order, left-padded (a plain batch).
* ``hf-one-at-a-time``: `model.generate` on one prompt at a time.

tokens/s counts the answers' tokens up to and including each one's EOS, the same count for every
generator when their answers agree (greedy: they should; ``answers_digest`` tells).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import torch

from bench.probe import MemoryProbe, load_model, pin_threads

GENERATORS = ("alignflow", "hf-sorted", "hf-padded-batch", "hf-one-at-a-time")
BASELINE = "hf-one-at-a-time"
SPEED_TARGET = 3.0  # alignflow tokens/s >= 3 x one prompt at a time


def chat_prompts(n: int, seed: int) -> list[list[dict[str, str]]]:
    """`n` chat prompts of the quickstart's task (short questions; answers of varied length)."""
    from alignment.instruct import quicktask

    rows = quicktask.generate(seed, heldout_fraction=0.2, good_fraction=0.35, refusal_fraction=0.6)["train"]
    seen, out = set(), []
    for row in rows:
        if row["prompt"] not in seen:
            seen.add(row["prompt"])
            out.append([{"role": "user", "content": row["prompt"]}])
    return [out[i % len(out)] for i in range(n)]


def run_generation_trial(spec: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from alignment.data.tokenization import encode_texts, prompt_for_generation
    from alignment.models.generation import GenerationStats, generate, generated_lengths, left_padded

    pin_threads(spec["threads"])
    device = spec["device"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = load_model(spec["model_dir"], device).eval()
    prompts = chat_prompts(spec["prompts"], spec["seed"])
    new, batch = spec["max_new_tokens"], spec["batch_size"]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = encode_texts(tokenizer, [prompt_for_generation(tokenizer, p) for p in prompts])
    probe = MemoryProbe(device)
    probe.start()
    started = time.perf_counter()
    tokens: list[list[int]] = []
    if spec["generator"] == "alignflow":
        stats = GenerationStats()
        answers = generate(model, tokenizer, prompts, max_new_tokens=new, batch_size=batch, device=device, stats=stats)
        seconds = time.perf_counter() - started
        texts = [a[0] for a in answers]
        new_tokens = stats.new_tokens
    else:
        if spec["generator"] == "hf-sorted":
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        else:
            order = list(range(len(ids)))
        size = 1 if spec["generator"] == BASELINE else batch
        by_prompt: dict[int, torch.Tensor] = {}
        with torch.no_grad():
            for start in range(0, len(order), size):
                chunk = order[start:start + size]
                input_ids, attention = left_padded([ids[i] for i in chunk], pad)
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                     max_new_tokens=new, do_sample=False, pad_token_id=pad, eos_token_id=eos)
                for row, i in enumerate(chunk):
                    by_prompt[i] = out[row, input_ids.shape[1]:].cpu()
        seconds = time.perf_counter() - started
        rows = [by_prompt[i] for i in range(len(ids))]
        new_tokens = sum(int(generated_lengths(r[None], eos, pad)[0]) for r in rows)
        texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in rows]
    tokens = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    digest = hashlib.sha256(json.dumps(tokens).encode()).hexdigest()[:16]
    return {"seconds": seconds, "new_tokens": new_tokens, "tokens_per_s": new_tokens / seconds,
            "prompts": len(prompts), "prompts_per_s": len(prompts) / seconds, "answers_digest": digest,
            "answers_sample": texts[:2], **probe.result()}


def summarise_generation(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import statistics

    rows = []
    for name in GENERATORS:
        done = [t["result"] for t in trials if t["generator"] == name and t["ok"]]
        row: dict[str, Any] = {"generator": name, "trials": len(done)}
        if done:
            seconds = statistics.median(r["seconds"] for r in done)
            row.update({"seconds": seconds, "new_tokens": done[0]["new_tokens"],
                        "tokens_per_s": done[0]["new_tokens"] / seconds, "prompts_per_s": done[0]["prompts"] / seconds,
                        "rss_growth_mib": statistics.median(r["rss_growth_mib"] for r in done),
                        "answers_digest": done[0]["answers_digest"]})
        rows.append(row)
    ours = next(r for r in rows if r["generator"] == "alignflow")
    if "seconds" in ours:
        ours["speedup"] = {r["generator"]: r["seconds"] / ours["seconds"] * ours["new_tokens"] / r["new_tokens"]
                           for r in rows if r["generator"] != "alignflow" and "seconds" in r and r["new_tokens"]}
    return rows


def judge_generation(rows: list[dict[str, Any]], smoke: bool) -> list[dict[str, Any]]:
    ours = next(r for r in rows if r["generator"] == "alignflow")
    value = ours.get("speedup", {}).get(BASELINE)
    verdicts = [{"target": f"generation tokens/s >= {SPEED_TARGET}x model.generate one prompt at a time",
                 "value": value, "passed": None if value is None or smoke else value >= SPEED_TARGET}]
    digests = {r["answers_digest"] for r in rows if "answers_digest" in r}
    verdicts.append({"target": "greedy answers identical to model.generate's (every generator)",
                     "value": float(len(digests) == 1) if digests else None,
                     "passed": len(digests) == 1 if digests else None})
    return verdicts


def format_generation(rows: list[dict[str, Any]], spec: dict[str, Any]) -> str:
    header = f"{'generator':18s} {'tokens/s':>9s} {'prompts/s':>9s} {'tokens':>7s} {'RSS +MiB':>8s} {'alignflow vs':>12s}"
    lines = [f"generation: {spec['prompts']} chat prompts, greedy, up to {spec['max_new_tokens']} new tokens, "
             f"batch {spec['batch_size']}", header, "-" * len(header)]
    ours = next(r for r in rows if r["generator"] == "alignflow")
    for row in rows:
        if "seconds" not in row:
            lines.append(f"{row['generator']:18s} (no successful trial)")
            continue
        vs = ours.get("speedup", {}).get(row["generator"])
        lines.append(f"{row['generator']:18s} {row['tokens_per_s']:9.1f} {row['prompts_per_s']:9.2f} "
                     f"{row['new_tokens']:7d} {row['rss_growth_mib']:8.1f} {'' if vs is None else f'{vs:.2f}x':>12s}")
    return "\n".join(lines)
