"""Benchmark data preparation: rows/s of canonicalisation and of tokenization, and peak memory.

Generates N HH-RLHF-style raw rows ("\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts, two earlier turns
in every prompt) with HH-like lengths in tokens of the quickstart tokenizer: prompts log-normal with
median ~200 and p90 ~460, responses median ~120. Then times

  1. write_canonical: parse, validate, de-duplicate, split by hash, write canonical JSON Lines;
  2. tokenize_prepared: chat template + batched fast tokenization with datasets.map (num_proc workers),
     save_to_disk;

and reports the token-length percentiles actually produced and the peak RSS (resource.getrusage).

    .venv/bin/python bench/data_prep.py [--rows 50000] [--num-proc 1] [--out /tmp/alignflow-bench]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--num-proc", type=int, default=1)
    parser.add_argument("--out", default="/tmp/alignflow-bench")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def lognormal_tokens(rng: random.Random, median: float, p90: float) -> int:
    sigma = math.log(p90 / median) / 1.2816
    return max(4, int(rng.lognormvariate(math.log(median), sigma)))


def generate(path: Path, rows: int, tokens_per_word: float, words: list[str], seed: int) -> None:
    rng = random.Random(seed)

    def text(tokens: int) -> str:
        return " ".join(rng.choice(words) for _ in range(max(1, round(tokens / tokens_per_word))))

    with path.open("w", encoding="utf-8") as handle:
        for i in range(rows):
            prompt_tokens = lognormal_tokens(rng, 200, 460)
            first, second = text(prompt_tokens * 0.5), text(prompt_tokens * 0.2)
            history = f"\n\nHuman: {i} {first}\n\nAssistant: {text(prompt_tokens * 0.3)}\n\nHuman: {second}"
            row = {"chosen": f"{history}\n\nAssistant: {text(lognormal_tokens(rng, 140, 290))}",
                   "rejected": f"{history}\n\nAssistant: {text(lognormal_tokens(rng, 140, 290))}"}
            handle.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from alignment.data.prepare import PrepareOptions, tokenize_prepared, write_canonical
    from alignment.instruct import quicktask
    from alignment.models.tiny import train_tokenizer

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    tokenizer = train_tokenizer(quicktask.corpus(), 1024)
    words = sorted({w for t in quicktask.corpus() for w in t.split()})
    sample = " ".join(random.Random(1).choice(words) for _ in range(2000))
    tokens_per_word = len(tokenizer(sample)["input_ids"]) / 2000

    raw = out / "raw.jsonl"
    start = time.perf_counter()
    generate(raw, args.rows, tokens_per_word, words, args.seed)
    generated_s = time.perf_counter() - start
    rss_before = peak_rss_mib()

    options = PrepareOptions(fmt="hh", heldout_fraction=0.05, max_prompt_tokens=512, max_response_tokens=256,
                             num_proc=args.num_proc)
    start = time.perf_counter()
    canonical = write_canonical({"train": str(raw)}, out / "prepared", options)
    canonical_s = time.perf_counter() - start
    rss_canonical = peak_rss_mib()

    start = time.perf_counter()
    tokenized = tokenize_prepared(out / "prepared", tokenizer, options)
    tokenize_s = time.perf_counter() - start
    from alignment.data.report import summarise

    lengths = {name: {k: v for k, v in summarise(values).items() if k in ("p50", "p90", "p99", "max")}
               for name, values in tokenized.lengths.items()}
    result = {
        "rows": args.rows, "num_proc": args.num_proc, "raw_mib": round(raw.stat().st_size / 2**20, 1),
        "generate_s": round(generated_s, 1),
        "canonical_s": round(canonical_s, 2), "canonical_rows_per_s": round(args.rows / canonical_s),
        "tokenize_s": round(tokenize_s, 2), "tokenize_rows_per_s": round(args.rows / tokenize_s),
        "rows_kept": canonical.counts, "token_lengths": lengths,
        "peak_rss_mib": {"after_generate": round(rss_before), "after_canonical": round(rss_canonical),
                         "after_tokenize": round(peak_rss_mib())},
        "tokenize_workers_peak_rss_mib": round(
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
